#!/usr/bin/env bash
# bench/compare.sh: etcd 3.4 vs Skiff, same machine, same run, same load generator.
#
# Starts a 3-member etcd cluster on loopback, runs the standard workloads with skiff-bench,
# samples the members' RSS, stops it; then does exactly the same with a 3-member Skiff
# cluster (same ports, same data-dir filesystem, same flags: Skiff takes etcd's flag names).
# Writes bench/RESULTS.md: date, machine, load, fdatasync latency, versions, every command
# and a table of etcd vs Skiff with ratios. Without a Skiff binary the Skiff column says
# "not run (no skiff binary)": no figure is ever invented.
#
# Usage: bench/compare.sh [--skiff-bin PATH] [--etcd-bin PATH] [--bench-bin PATH]
#                         [--big] [--out FILE] [--work-dir DIR]
#   --skiff-bin   Skiff server binary (default: target/release/skiff if it exists)
#   --etcd-bin    etcd binary (default: etcd on PATH; Debian's etcd-server is 3.4)
#   --bench-bin   skiff-bench binary (default: built with cargo build --release)
#   --big         load 1,000,000 keys for the RSS/restart rows (default 100,000)
#   --quick       a tenth of every total: checks the script itself, not for RESULTS.md
#   --members N   members per cluster, 3 (default, the standard layout) or 1
#   --aa          run etcd as the second side too ("etcd again"): an A/A run whose ratios
#                 show this machine's noise floor; never labelled Skiff
#   --out         report file (default bench/RESULTS.md)
#   --work-dir    data dirs and logs (default bench/tmp, removed at start)
# Needs: jq, etcd, etcdctl (etcdctl writes the key the range workloads read, which also
# checks that etcdctl works against the server under test).
# Ports used: clients 21101-21103, peers 21111-21113 (loopback only).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# How a path appears in the committed report: relative to the repository when inside it,
# as is under /usr and /bin (where packages install, the same on every machine), and
# otherwise only its file name, so the report never names one machine's directories.
shown() {
  case "$1" in
    "$repo") echo . ;;
    "$repo"/*) echo "${1#"$repo"/}" ;;
    /usr/* | /bin/*) echo "$1" ;;
    /*) echo "<elsewhere>/${1##*/}" ;;
    *) echo "$1" ;;
  esac
}
invocation="bench/compare.sh"
for a in "$@"; do invocation+=" $(shown "$a")"; done
skiff_bin="" etcd_bin="" bench_bin="" big=0 quick=0 aa=0 members=3
out="$repo/bench/RESULTS.md"
work="$repo/bench/tmp"
while [ $# -gt 0 ]; do
  case "$1" in
    --skiff-bin) skiff_bin=$2; shift 2 ;;
    --etcd-bin) etcd_bin=$2; shift 2 ;;
    --bench-bin) bench_bin=$2; shift 2 ;;
    --big) big=1; shift ;;
    --quick) quick=1; shift ;;
    --aa) aa=1; shift ;;
    --members) members=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --work-dir) work=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "compare.sh: $*" >&2; exit 1; }
for t in jq etcdctl; do command -v "$t" >/dev/null || die "$t is required (apt-get install jq etcd-client)"; done
etcd_bin=${etcd_bin:-$(command -v etcd || true)}
[ -x "$etcd_bin" ] || die "no etcd binary (apt-get install etcd-server, or --etcd-bin PATH)"
target_dir=${CARGO_TARGET_DIR:-$repo/target}
if [ -z "$skiff_bin" ] && [ -x "$target_dir/release/skiff" ]; then skiff_bin=$target_dir/release/skiff; fi
second_label=Skiff
if [ "$aa" = 1 ]; then skiff_bin=$etcd_bin; second_label="etcd again (A/A)"; fi
if [ -n "$skiff_bin" ] && [ ! -x "$skiff_bin" ]; then die "--skiff-bin $skiff_bin is not an executable"; fi
if [ -z "$bench_bin" ]; then
  (cd "$repo" && cargo build --release -q -p skiff-bench) || die "building skiff-bench failed"
  bench_bin=$target_dir/release/skiff-bench
fi
[ -x "$bench_bin" ] || die "no skiff-bench binary at $bench_bin"

[[ $members =~ ^[13]$ ]] || die "--members must be 1 or 3"
keys=100000; [ "$big" = 1 ] && keys=1000000
# Request totals: modest, so that a whole run takes a few minutes on 2 cores.
t_one=2000 t_many=20000 t_txn=5000 t_watch=500 t_lease=20000
if [ "$quick" = 1 ]; then
  t_one=200 t_many=2000 t_txn=500 t_watch=50 t_lease=2000 keys=$((keys / 10))
fi
client_ports=(21101 21102 21103); client_ports=("${client_ports[@]:0:$members}")
peer_ports=(21111 21112 21113); peer_ports=("${peer_ports[@]:0:$members}")
eps=$(printf '127.0.0.1:%s,' "${client_ports[@]}"); eps=${eps%,}
cluster=""
for ((i = 0; i < members; i++)); do cluster+="m$((i + 1))=http://127.0.0.1:${peer_ports[$i]},"; done
cluster=${cluster%,}
value256=$(head -c 256 /dev/zero | tr '\0' v)

rm -rf "$work"; mkdir -p "$work"
pids=()
sampler_pid=""
cleanup() {
  [ -n "$sampler_pid" ] && kill "$sampler_pid" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# --- cluster control ---------------------------------------------------------------
start_cluster() { # side bin state
  local side=$1 bin=$2 state=$3
  pids=()
  for ((i = 0; i < members; i++)); do
    local n=m$((i + 1)) c=http://127.0.0.1:${client_ports[$i]} p=http://127.0.0.1:${peer_ports[$i]}
    "$bin" --name "$n" --data-dir "$work/$side/$n" \
      --listen-client-urls "$c" --advertise-client-urls "$c" \
      --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" \
      --initial-cluster "$cluster" --initial-cluster-state "$state" \
      --initial-cluster-token "bench-$side" >>"$work/$side-$n.log" 2>&1 &
    pids+=($!)
  done
}
stop_cluster() { # [signal]: TERM by default; KILL = a crash of every member at once
  for p in "${pids[@]}"; do kill "-${1:-TERM}" "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
# Serving = a linearizable read succeeds through every member (needs a leader and quorum).
wait_serving() { # timeout_s
  local deadline=$((SECONDS + $1))
  while [ $SECONDS -lt $deadline ]; do
    if "$bench_bin" --endpoints "$eps" --conns "$members" --clients "$members" --total "$members" --request-timeout 0.25 \
      range serving-probe >/dev/null 2>&1; then return 0; fi
    sleep 0.05
  done
  return 1
}
rss_kb() { # sum of VmRSS over the running members
  local sum=0 kb
  for p in "${pids[@]}"; do
    kb=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    sum=$((sum + ${kb:-0}))
  done
  echo "$sum"
}
start_sampler() { # file [interval_s]: keeps the peak of the members' summed RSS
  local f=$1 every=${2:-0.5}
  echo 0 >"$f"
  ( peak=0; while :; do s=$(rss_kb); if [ "$s" -gt "$peak" ]; then peak=$s; echo "$peak" >"$f"; fi; sleep "$every"; done ) &
  sampler_pid=$!
}
stop_sampler() { kill "$sampler_pid" 2>/dev/null || true; wait "$sampler_pid" 2>/dev/null || true; sampler_pid=""; }

# --- workloads: id | description | global flags | subcommand ----------------------
workloads=(
  "put-1|put, 1 client, 1 conn, leader|--conns 1 --clients 1 --total $t_one --target-leader|put --key-size 8 --val-size 256 --sequential-keys --key-space-size 100000"
  "put-1000-leader|put, 1000 clients, 100 conns, leader|--conns 100 --clients 1000 --total $t_many --target-leader|put --key-size 8 --val-size 256 --sequential-keys --key-space-size 100000"
  "put-1000-all|put, 1000 clients, 100 conns, all members|--conns 100 --clients 1000 --total $t_many|put --key-size 8 --val-size 256 --sequential-keys --key-space-size 100000"
  "range-l|range linearizable, 1000 clients, 100 conns, all members|--conns 100 --clients 1000 --total $t_many|range benchkey --consistency l"
  "range-s|range serializable, 1000 clients, 100 conns, all members|--conns 100 --clients 1000 --total $t_many|range benchkey --consistency s"
  "txn-put|txn-put (4 puts/txn), 100 clients, 10 conns, all members|--conns 10 --clients 100 --total $t_txn|txn-put --txn-ops 4 --key-size 8 --val-size 256 --key-space-size 100000"
  "watch|watch latency, $t_watch puts at 100/s, 10 streams x 10 watchers|--conns 10|watch-latency --put-total $t_watch --put-rate 100 --streams 10 --watchers-per-stream 10 --val-size 256"
  "lease|lease keep-alive, 100 clients, 10 conns, all members|--conns 10 --clients 100 --total $t_lease|lease-keepalive"
)
load_cmd="--conns 100 --clients 1000 --total $keys|put --key-size 8 --val-size 256 --sequential-keys --key-space-size $keys"

commands_md="$work/commands.md"; : >"$commands_md"
clk_tck=$(getconf CLK_TCK)
members_cpu_ticks() { # utime+stime of the running members, summed
  local sum=0 t
  for p in "${pids[@]}"; do
    t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
    sum=$((sum + ${t:-0}))
  done
  echo "$sum"
}
run_bench() { # side id globals sub -> $work/$side.$id.{json,err,rc,cpu_s}
  local side=$1 id=$2 g=$3 s=$4 rc=0 c0 c1
  c0=$(members_cpu_ticks)
  # shellcheck disable=SC2086 # flags are word lists by design
  "$bench_bin" --endpoints "$eps" $g -w json $s >"$work/$side.$id.json" 2>"$work/$side.$id.err" || rc=$?
  c1=$(members_cpu_ticks)
  echo "$rc" >"$work/$side.$id.rc"
  # CPU the members spent during this run (s): less noisy than wall time on a
  # shared machine, and the load generator's own CPU is not in it.
  awk -v a="$c0" -v b="$c1" -v t="$clk_tck" 'BEGIN{printf "%.2f", (b - a) / t}' >"$work/$side.$id.cpu_s"
  if [ "$side" = etcd ]; then echo "- \`$id\`: \`skiff-bench --endpoints $eps $g $s\`" >>"$commands_md"; fi
  return 0
}

run_side() { # side bin
  local side=$1 bin=$2
  echo "== $side: starting $members member(s) ($bin)" >&2
  mkdir -p "$work/$side"
  start_cluster "$side" "$bin" new
  if ! wait_serving 60; then
    echo "== $side: cluster did not start serving within 60 s (logs in $work)" >&2
    echo "did not start serving within 60 s" >"$work/$side.start_failed"
    for ((i = 1; i <= members; i++)); do
      echo "  - m$i log, last lines: \`$(tail -n 2 "$work/$side-m$i.log" | cut -c1-200 | tr '\n\`' " '")\`"
    done >"$work/$side.start_failed_logs"
    stop_cluster
    return 0
  fi
  ETCDCTL_API=3 etcdctl --endpoints "$eps" put benchkey "$value256" >/dev/null || die "$side: etcdctl put benchkey failed"
  start_sampler "$work/$side.rss_peak"
  local w id desc g s
  for w in "${workloads[@]}"; do
    IFS='|' read -r id desc g s <<<"$w"
    echo "== $side: $desc" >&2
    run_bench "$side" "$id" "$g" "$s"
  done
  stop_sampler
  echo "== $side: loading $keys keys" >&2
  IFS='|' read -r g s <<<"$load_cmd"
  run_bench "$side" load "$g" "$s"
  sleep 2
  rss_kb >"$work/$side.rss_loaded"
  echo "== $side: snapshot save with $keys keys" >&2
  # etcdctl snapshot save from the first member; the members' RSS is sampled every
  # 0.1 s while it streams, and the row shows the peak's growth over the RSS before.
  local rss0 ts0 ts1
  rss0=$(rss_kb)
  start_sampler "$work/$side.rss_snap" 0.1
  ts0=$(date +%s.%N)
  if ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:${client_ports[0]}" --command-timeout=600s \
      snapshot save "$work/$side.snapshot.db" >"$work/$side.snapshot.log" 2>&1; then
    ts1=$(date +%s.%N); awk -v a="$ts0" -v b="$ts1" 'BEGIN{printf "%.3f", b-a}' >"$work/$side.snapshot_s"
  else
    echo fail >"$work/$side.snapshot_s"
  fi
  stop_sampler
  awk -v p="$(cat "$work/$side.rss_snap")" -v b="$rss0" 'BEGIN{d=p-b; if (d<0) d=0; print d}' >"$work/$side.rss_snap_growth"
  stat -c %s "$work/$side.snapshot.db" >"$work/$side.snapshot_bytes" 2>/dev/null || echo 0 >"$work/$side.snapshot_bytes"
  rm -f "$work/$side.snapshot.db"
  echo "== $side: crash (SIGKILL all members) and restart with $keys keys" >&2
  # All members killed at the same instant: a clean stop would let the last members
  # campaign without quorum while shutting down, inflating their terms and adding an
  # election round to the restart; a crash measures recovery itself.
  stop_cluster KILL
  local t0 t1
  t0=$(date +%s.%N)
  start_cluster "$side" "$bin" new
  if wait_serving 300; then t1=$(date +%s.%N); awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}' >"$work/$side.restart_s"; else echo fail >"$work/$side.restart_s"; fi
  stop_cluster
}

# --- machine facts -------------------------------------------------------------------
date_utc=$(date -u '+%Y-%m-%d %H:%M UTC')
cores=$(nproc)
mem_gib=$(awk '/^MemTotal:/{printf "%.1f", $2/1048576}' /proc/meminfo)
cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
kernel=$(uname -r)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
fs=$(df -PT "$work" | awk 'NR==2{print $2" ("$7")"}')
"$bench_bin" -w json fdatasync --dir "$work" --count 300 >"$work/fdatasync.json"
fsync_line=$(jq -r '"avg \(.average_s*1000|.*1000|round/1000) ms, p50 \(.percentiles[]|select(.percent==50).latency_s*1000|.*1000|round/1000) ms, p99 \(.percentiles[]|select(.percent==99).latency_s*1000|.*1000|round/1000) ms (\(.requests) rounds of 2300 B write + fdatasync)"' "$work/fdatasync.json")
etcd_version=$("$etcd_bin" --version | sed -n 1p)
bench_version=$("$bench_bin" --version)
rustc_version=$(rustc --version 2>/dev/null || echo "rustc unknown")

run_side etcd "$etcd_bin"
if [ -n "$skiff_bin" ]; then
  skiff_version="$("$skiff_bin" --version 2>&1 | sed -n 1p || true) ($(shown "$skiff_bin"))"
  run_side skiff "$skiff_bin"
else
  skiff_version="none (no skiff binary given or found at $(shown "$target_dir/release/skiff"))"
fi
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the table -------------------------------------------------------------------------
fmt() { # number digits
  awk -v x="$1" -v d="$2" 'BEGIN{printf "%.*f", d, x}'
}
metric() { # side id jq-expr -> value or a failure note
  local side=$1 id=$2 expr=$3 f="$work/$1.$2.json"
  if [ "$side" = skiff ] && [ -z "$skiff_bin" ]; then echo "not run (no skiff binary)"; return; fi
  if [ -e "$work/$side.start_failed" ]; then echo "failed (cluster $(cat "$work/$side.start_failed"))"; return; fi
  local rc; rc=$(cat "$work/$side.$id.rc" 2>/dev/null || echo missing)
  if [ "$rc" != 0 ]; then
    local why; why=$(jq -r '[.errors_by_code|to_entries[]|"\(.value.count) \(.key)"]|join(", ")' "$f" 2>/dev/null || head -c 120 "$work/$side.$id.err")
    echo "failed (exit $rc${why:+: $why})"; return
  fi
  jq -r "$expr" "$f"
}
ratio() { # etcd skiff
  if [[ $1 =~ ^[0-9.]+$ && $2 =~ ^[0-9.]+$ ]] && [ "$(awk -v a="$1" 'BEGIN{print (a>0)}')" = 1 ]; then
    fmt "$(awk -v a="$1" -v b="$2" 'BEGIN{print b/a}')" 2
  else echo "–"; fi
}
cpu_per_k() { # side id -> members' CPU ms per 1000 successful requests
  local m; m=$(metric "$1" "$2" '.requests')
  [[ $m =~ ^[0-9]+$ ]] || { echo "$m"; return; }
  fmt "$(awk -v c="$(cat "$work/$1.$2.cpu_s")" -v n="$m" 'BEGIN{print (n > 0 ? c * 1e6 / n : 0)}')" 1
}
rows=""
row() { # label better etcd skiff
  rows+="| $1 | $2 | $3 | $4 | $(ratio "$3" "$4") |"$'\n'
}
q_rps='.requests_per_s|.*10|round/10'
q_p50='.percentiles[]|select(.percent==50)|.latency_s*1000|.*1000|round/1000'
q_p99='.percentiles[]|select(.percent==99)|.latency_s*1000|.*1000|round/1000'
for w in "${workloads[@]}"; do
  IFS='|' read -r id desc g s <<<"$w"
  if [ "$id" = watch ]; then
    row "$desc: event latency p50 (ms)" lower "$(metric etcd "$id" "$q_p50")" "$(metric skiff "$id" "$q_p50")"
    row "$desc: event latency p99 (ms)" lower "$(metric etcd "$id" "$q_p99")" "$(metric skiff "$id" "$q_p99")"
    continue
  fi
  row "$desc: requests/s" higher "$(metric etcd "$id" "$q_rps")" "$(metric skiff "$id" "$q_rps")"
  row "$desc: p50 (ms)" lower "$(metric etcd "$id" "$q_p50")" "$(metric skiff "$id" "$q_p50")"
  row "$desc: p99 (ms)" lower "$(metric etcd "$id" "$q_p99")" "$(metric skiff "$id" "$q_p99")"
  row "$desc: members' CPU per 1000 requests (ms)" lower "$(cpu_per_k etcd "$id")" "$(cpu_per_k skiff "$id")"
done
side_value() { # side file digits-transform
  if [ "$1" = skiff ] && [ -z "$skiff_bin" ]; then echo "not run (no skiff binary)"; return; fi
  if [ -e "$work/$1.start_failed" ]; then echo "failed (cluster $(cat "$work/$1.start_failed"))"; return; fi
  local v; v=$(cat "$work/$1.$2" 2>/dev/null || echo missing)
  if [[ $v =~ ^[0-9.]+$ ]]; then fmt "$(awk -v v="$v" -v k="$3" 'BEGIN{print v*k}')" "$4"; else echo "failed ($v)"; fi
}
row "peak RSS during the workloads, $members member(s) summed (MiB)" lower "$(side_value etcd rss_peak 0.0009765625 1)" "$(side_value skiff rss_peak 0.0009765625 1)"
row "load $keys keys (1000 clients, 100 conns): requests/s" higher "$(metric etcd load "$q_rps")" "$(metric skiff load "$q_rps")"
row "RSS after loading $keys keys, $members member(s) summed (MiB)" lower "$(side_value etcd rss_loaded 0.0009765625 1)" "$(side_value skiff rss_loaded 0.0009765625 1)"
row "snapshot save with $keys keys (etcdctl, from one member): time (s)" lower "$(side_value etcd snapshot_s 1 2)" "$(side_value skiff snapshot_s 1 2)"
row "snapshot save with $keys keys: members' peak RSS growth while streaming (MiB)" lower "$(side_value etcd rss_snap_growth 0.0009765625 1)" "$(side_value skiff rss_snap_growth 0.0009765625 1)"
row "snapshot save with $keys keys: file size (MiB)" lower "$(side_value etcd snapshot_bytes 0.00000095367431640625 1)" "$(side_value skiff snapshot_bytes 0.00000095367431640625 1)"
row "restart after a crash with $keys keys: start to serving (s)" lower "$(side_value etcd restart_s 1 2)" "$(side_value skiff restart_s 1 2)"

errors_note=""
for side in etcd skiff; do
  if [ -e "$work/$side.start_failed" ]; then
    errors_note+="- $([ "$side" = etcd ] && echo etcd || echo "$second_label"): the cluster $(cat "$work/$side.start_failed")"$'\n'
    errors_note+="$(cat "$work/$side.start_failed_logs")"$'\n'
  fi
  for f in "$work/$side".*.rc; do
    [ -e "$f" ] || continue
    [ "$(cat "$f")" = 0 ] || errors_note+="- $([ "$side" = etcd ] && echo etcd || echo "$second_label") $(basename "$f" .rc | cut -d. -f2-): exit $(cat "$f"): $(head -c 300 "${f%.rc}.err" | tr '\n' ' ')"$'\n'
  done
done

mkdir -p "$(dirname "$out")"
cat >"$out" <<MD
# etcd vs $second_label: benchmark results

Written by \`$invocation\` on $date_utc. Every figure below comes from that one
run; rerun the script to refresh it.

## Machine

| | |
|---|---|
| CPU | $cpu, $cores cores |
| memory | $mem_gib GiB |
| kernel | $kernel |
| data-dir filesystem | $fs |
| fdatasync latency (measured at start) | $fsync_line |
| load average (1/5/15 min) | start $load_start, end $load_end |

The machine is shared: other agents' builds were running during the run (see the load
average), so absolute figures are noisy; compare the ratios, measured back to back. The
load generator runs on the same cores as the members and takes a share of them: with
1000 clients it is part of what limits throughput, equally for both sides.

## Versions

- etcd: $etcd_version ($(shown "$etcd_bin"))
- $second_label: $skiff_version
- load generator: $bench_version, built with $rustc_version

## Results

$members member(s) on loopback each side (clients 127.0.0.1:${client_ports[0]}.., peers :${peer_ports[0]}..),
started with the same etcd flags, data dirs on the same filesystem, one cluster after the
other. Key 8 B, value 256 B. Ratio = $second_label ÷ etcd (above 1 is better for the
second column where higher is better, below 1 where lower is better).

| workload and metric | better | etcd 3.4 | $second_label | ratio |
|---|---|---|---|---|
$rows
${errors_note:+### Failures (a cluster that did not start, or a run that exited non-zero: errors above --max-error-rate 0, or no connection)

$errors_note}
## Commands

Each member: \`BIN --name mN --data-dir DIR --listen-client-urls http://127.0.0.1:PORT
--advertise-client-urls http://127.0.0.1:PORT --listen-peer-urls http://127.0.0.1:PEER
--initial-advertise-peer-urls http://127.0.0.1:PEER --initial-cluster $cluster
--initial-cluster-state new --initial-cluster-token bench-SIDE\` (a restart reuses the
same command on the existing data dirs).

Range key: \`etcdctl --endpoints $eps put benchkey <256 B value>\`.
Snapshot: after loading the keys, \`etcdctl snapshot save\` from the first member; its RSS
growth is the peak of the members' summed VmRSS (sampled every 0.1 s while it streams)
minus the sum just before.
Restart: after loading the keys, all members are killed at once (SIGKILL) and
started again with the same command. Serving = first moment a linearizable range through
all members succeeds (probe: \`skiff-bench --conns $members --total $members --request-timeout
0.25 range serving-probe\`, repeated every 50 ms), so the figure includes a new process
of the probe each time (a few ms) and an election.
Members' CPU: utime + stime of the member processes (from /proc) over each run,
per 1000 successful requests; it excludes the load generator, which shares the same cores.
RSS: VmRSS of the member processes summed, sampled every 0.5 s during the workloads
(peak) and once 2 s after loading the keys.
fdatasync: \`skiff-bench fdatasync --dir $(shown "$work") --count 300\`.

Load generator runs (each with \`-w json\`, the same for both sides):

$(cat "$commands_md")
MD
echo "compare.sh: wrote $out" >&2
