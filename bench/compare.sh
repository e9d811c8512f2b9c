#!/usr/bin/env bash
# bench/compare.sh: etcd 3.4 vs Skiff, same machine, same run, same load generator.
#
# Runs --rounds rounds; each round starts a 3-member etcd cluster on loopback, runs the
# standard and scaling workloads with skiff-bench, samples the members' RSS and CPU,
# stops it, and does exactly the same with a 3-member Skiff cluster (same ports, same
# data-dir filesystem, same flags: Skiff takes etcd's flag names). The order alternates:
# odd rounds etcd then Skiff, even rounds Skiff then etcd. After the rounds, one round of
# the key-count cost rows (load, RSS, crash/restart at two key counts) per side.
# Writes bench/RESULTS.md: date, machine, load, fdatasync latency, versions, every command
# and a table of etcd vs Skiff whose figures are the medians of the rounds (each round's
# value alongside), with ratios; and bench/scaling.png (requests/s vs clients). Without a
# Skiff binary the Skiff column says "not run (no skiff binary)": no figure is invented.
# A full run (--big, 3 rounds) takes roughly 50 minutes on 2 cores; --quick a few.
#
# Usage: bench/compare.sh [--skiff-bin PATH] [--etcd-bin PATH] [--bench-bin PATH]
#                         [--rounds N] [--big] [--quick] [--members N] [--aa]
#                         [--keys-only] [--no-defrag]
#                         [--out FILE] [--plot FILE] [--work-dir DIR]
#   --skiff-bin   Skiff server binary (default: target/release/skiff if it exists)
#   --etcd-bin    etcd binary (default: etcd on PATH; Debian's etcd-server is 3.4)
#   --bench-bin   skiff-bench binary (default: built with cargo build --release)
#   --rounds N    rounds of the per-round workloads (default 3); figures are medians
#   --big         key-count cost rows at 1,000,000 and 3,000,000 keys (default 100,000
#                 and 300,000); every other row is the same either way
#   --quick       every total, watcher, lease and key count cut by 10x or more: checks
#                 the script itself, not for RESULTS.md
#   --members N   members per cluster, 3 (default, the standard layout) or 1
#   --keys-only   only the key-count rows (no rounds, no plot): refreshes the load, RSS,
#                 snapshot and restart rows at those counts in about a third of the time
#   --no-defrag   skip the defragment rows (otherwise bench/defrag.sh runs once after
#                 the key-count rows, one member per side, on the first key count:
#                 100,000 keys, 1,000,000 with --big; its table goes into the report)
#   --aa          run etcd as the second side too ("etcd again"): an A/A run whose ratios
#                 show this machine's noise floor; never labelled Skiff
#   --out         report file (default bench/RESULTS.md)
#   --plot        PNG of requests/s vs clients (default: bench/scaling.png with the
#                 default --out, else the --out file's name with -scaling.png)
#   --work-dir    data dirs, logs and per-run JSON (default bench/tmp, removed at start)
# Needs: jq, etcd, etcdctl (etcdctl writes the keys the range workloads read, which also
# checks that etcdctl works against the server under test), GNU time (/usr/bin/time,
# for the load generator's own CPU).
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
invocation="bench/compare.sh" prev=""
# The work directory is <work-dir> here and in the commands the report lists.
for a in "$@"; do
  if [ "$prev" = --work-dir ]; then invocation+=" <work-dir>"; else invocation+=" $(shown "$a")"; fi
  prev=$a
done
skiff_bin="" etcd_bin="" bench_bin="" big=0 quick=0 aa=0 members=3 rounds=3 plot="" keys_only=0 defrag=1
out="$repo/bench/RESULTS.md"
work="$repo/bench/tmp"
while [ $# -gt 0 ]; do
  case "$1" in
    --skiff-bin) skiff_bin=$2; shift 2 ;;
    --etcd-bin) etcd_bin=$2; shift 2 ;;
    --bench-bin) bench_bin=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --big) big=1; shift ;;
    --quick) quick=1; shift ;;
    --aa) aa=1; shift ;;
    --keys-only) keys_only=1; shift ;;
    --no-defrag) defrag=0; shift ;;
    --members) members=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --plot) plot=$2; shift 2 ;;
    --work-dir) work=$2; shift 2 ;;
    -h|--help) sed -n '2,43p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "compare.sh: $*" >&2; exit 1; }
for t in jq etcdctl; do command -v "$t" >/dev/null || die "$t is required (apt-get install jq etcd-client)"; done
[ -x /usr/bin/time ] || die "GNU time is required at /usr/bin/time (apt-get install time)"
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
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive number"
if [ -z "$plot" ]; then
  if [ "$out" = "$repo/bench/RESULTS.md" ]; then plot=$repo/bench/scaling.png; else plot=${out%.md}-scaling.png; fi
fi

# --- sizes -----------------------------------------------------------------------------
# Request totals: each run lasts seconds, not a fraction of one. With 20,000 requests
# at 1000 clients (under a second for Skiff) one round's put ratio came out 1.35x and
# the next 2.00x (bench/RESULTS.md of 41557d4), and a single client's p99 was the 20th
# slowest of 2000 puts; a few seconds of a busy neighbour decided the row.
d=1; [ "$quick" = 1 ] && d=10
t_one=$((10000 / d)) t_ten=$((20000 / d)) t_many=$((100000 / d)) t_txn=$((20000 / d))
t_watch=$((2000 / d)) t_lease=$((50000 / d)) t_4k=$((20000 / d)) t_64k=$((4000 / d))
keys=$((100000 / d))                        # the standard load/snapshot/restart rows
watchers_a=$((10000 / d)) watchers_b=$((100000 / d))
leases_a=$((10000 / d)) leases_b=$((100000 / d))
cost_puts=$((200 / d))                      # puts delivered to the watchers, at 20/s
lease_secs=$((20 / d))                      # each lease kept alive once in this time
keys_a=$((100000 / d)) keys_b=$((300000 / d))
if [ "$big" = 1 ]; then keys_a=$((1000000 / d)) keys_b=$((3000000 / d)); fi

client_ports=(21101 21102 21103); client_ports=("${client_ports[@]:0:$members}")
peer_ports=(21111 21112 21113); peer_ports=("${peer_ports[@]:0:$members}")
eps=$(printf '127.0.0.1:%s,' "${client_ports[@]}"); eps=${eps%,}
cluster=""
for ((i = 0; i < members; i++)); do cluster+="m$((i + 1))=http://127.0.0.1:${peer_ports[$i]},"; done
cluster=${cluster%,}

rm -rf "$work"; mkdir -p "$work/logs" "$work/data"
# shellcheck source=bench/lib/cluster.sh
. "$repo/bench/lib/cluster.sh"
# How a side is named in the progress lines: the second side of an A/A run is etcd too,
# named as the report names it.
side_label() { if [ "$aa" = 1 ] && [ "$1" = skiff ]; then echo "$second_label"; else echo "$1"; fi; }
trap cleanup EXIT
commands_md="$work/commands.md"; : >"$commands_md"
first_pass=0

# --- workloads: id | description | global flags | subcommand ----------------------
conns_for() { local c=$(($1 / 10)); echo $((c < 1 ? 1 : c)); }
plural() { if [ "$1" = 1 ]; then echo "$1 $2"; else echo "$1 $2s"; fi; } # n noun
put_sub() { echo "put --key-size 8 --val-size $1 --sequential-keys --key-space-size $2"; }
workloads=(
  "put-1|put, 1 client, 1 conn, leader|--conns 1 --clients 1 --total $t_one --target-leader|$(put_sub 256 100000)"
  "put-1000-leader|put, 1000 clients, 100 conns, leader|--conns 100 --clients 1000 --total $t_many --target-leader|$(put_sub 256 100000)"
  "put-1000-all|put, 1000 clients, 100 conns, all members|--conns 100 --clients 1000 --total $t_many|$(put_sub 256 100000)"
  "range-l|range linearizable, 1000 clients, 100 conns, all members|--conns 100 --clients 1000 --total $t_many|range benchkey --consistency l"
  "range-s|range serializable, 1000 clients, 100 conns, all members|--conns 100 --clients 1000 --total $t_many|range benchkey --consistency s"
  "txn-put|txn-put (4 puts/txn), 100 clients, 10 conns, all members|--conns 10 --clients 100 --total $t_txn|txn-put --txn-ops 4 --key-size 8 --val-size 256 --key-space-size 100000"
  "watch|watch latency, $t_watch puts at 100/s, 10 streams x 10 watchers|--conns 10|watch-latency --put-total $t_watch --put-rate 100 --streams 10 --watchers-per-stream 10 --val-size 256"
  "lease|lease keep-alive, 100 clients, 10 conns, all members|--conns 10 --clients 100 --total $t_lease|lease-keepalive"
)
# Scaling: put and linearizable range by clients (256 B values; 1000 clients are the
# put-1000-all and range-l rows above), then by value size at 100 clients.
# Lines: workload | clients | id, for the plot.
scaling=()
for c in 1 10 100; do
  total=$t_many; [ "$c" = 1 ] && total=$t_one; [ "$c" = 10 ] && total=$t_ten
  workloads+=("put-c$c|put, $(plural "$c" client), $(plural "$(conns_for "$c")" conn), all members|--conns $(conns_for "$c") --clients $c --total $total|$(put_sub 256 100000)")
  workloads+=("range-l-c$c|range linearizable, $(plural "$c" client), $(plural "$(conns_for "$c")" conn), all members|--conns $(conns_for "$c") --clients $c --total $total|range benchkey --consistency l")
  scaling+=("put|$c|put-c$c" "range-l|$c|range-l-c$c")
done
scaling+=("put|1000|put-1000-all" "range-l|1000|range-l")
workloads+=(
  "put-4k|put 4 KiB values, 100 clients, 10 conns, all members|--conns 10 --clients 100 --total $t_4k|$(put_sub 4096 10000)"
  "range-l-4k|range linearizable of a 4 KiB value, 100 clients, 10 conns, all members|--conns 10 --clients 100 --total $t_many|range benchkey4k --consistency l"
  "put-64k|put 64 KiB values, 100 clients, 10 conns, all members|--conns 10 --clients 100 --total $t_64k|$(put_sub 65536 1000)"
  "range-l-64k|range linearizable of a 64 KiB value, 100 clients, 10 conns, all members|--conns 10 --clients 100 --total $t_64k|range benchkey64k --consistency l"
)
load_cmd="--conns 100 --clients 1000 --total $keys|$(put_sub 256 "$keys")"

# --- one side of one round ---------------------------------------------------------------
run_standard() { # dir side bin: standard + scaling workloads, then 100k-key load, snapshot, restart
  local dir=$1 side=$2 bin=$3 w id desc g s
  start_fresh "$dir" "$side" "$side" "$bin" || return 0
  local v key size
  for v in "benchkey 256" "benchkey4k 4096" "benchkey64k 65536"; do
    read -r key size <<<"$v"
    ETCDCTL_API=3 etcdctl --endpoints "$eps" put "$key" "$(head -c "$size" /dev/zero | tr '\0' v)" >/dev/null ||
      die "$side: etcdctl put $key failed"
  done
  start_sampler "$dir/$side.rss_peak"
  for w in "${workloads[@]}"; do
    IFS='|' read -r id desc g s <<<"$w"
    echo "== $(side_label "$side"): $desc" >&2
    run_bench "$dir" "$side" "$id" "$g" "$s"
  done
  stop_sampler
  echo "== $(side_label "$side"): loading $keys keys" >&2
  IFS='|' read -r g s <<<"$load_cmd"
  run_bench "$dir" "$side" load "$g" "$s"
  sleep 2
  rss_kb >"$dir/$side.rss_loaded"
  echo "== $(side_label "$side"): snapshot save with $keys keys" >&2
  snapshot_save "$dir" "$side" ""
  crash_restart "$dir" "$side" "$side" "$bin" restart_s
  stop_cluster
}

# etcdctl snapshot save from the first member; the members' RSS is sampled every 0.1 s
# while it streams, and the row shows the peak's growth over the RSS before.
snapshot_save() { # dir side suffix: writes $side.snapshot_s$suffix, rss_snap_growth, snapshot_bytes
  local dir=$1 side=$2 sfx=$3 rss0 ts0 ts1
  rss0=$(rss_kb)
  start_sampler "$dir/$side.rss_snap$sfx" 0.1
  ts0=$(date +%s.%N)
  if ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:${client_ports[0]}" --command-timeout=1200s \
      snapshot save "$work/snapshot.db" >"$dir/$side.snapshot$sfx.log" 2>&1; then
    ts1=$(date +%s.%N); awk -v a="$ts0" -v b="$ts1" 'BEGIN{printf "%.3f", b-a}' >"$dir/$side.snapshot_s$sfx"
  else
    echo fail >"$dir/$side.snapshot_s$sfx"
  fi
  stop_sampler
  awk -v p="$(cat "$dir/$side.rss_snap$sfx")" -v b="$rss0" 'BEGIN{d=p-b; if (d<0) d=0; print d}' >"$dir/$side.rss_snap_growth$sfx"
  stat -c %s "$work/snapshot.db" >"$dir/$side.snapshot_bytes$sfx" 2>/dev/null || echo 0 >"$dir/$side.snapshot_bytes$sfx"
  rm -f "$work/snapshot.db"
}

# Watchers and leases, each count on a fresh cluster so that RSS growth is theirs alone.
# Watchers: 100 streams; 1000 watchers per key (watcher j watches key j mod keys), so
# each put reaches 1000 watchers whatever the total; $cost_puts puts at 20/s.
# Leases: granted up front (TTL 600 s, its own row), then each kept alive once by 100
# streams over 10 conns within $lease_secs s (20 s: the cadence of clients that renew
# TTL-60 leases every TTL/3), at a fixed rate whatever the count.
cost_watch_cmd() { # watchers
  local n=$1 k=$(($1 / 1000)); [ "$k" -lt 1 ] && k=1
  echo "--conns 10|watch-latency --put-total $cost_puts --put-rate 20 --streams 100 --watchers-per-stream $((n / 100)) --keys $k --val-size 256"
}
run_cost() { # dir side bin: each count on its own fresh cluster
  local dir=$1 side=$2 bin=$3 n g s
  for n in "$watchers_a" "$watchers_b"; do
    start_fresh "$dir" "$side" "$side-cost" "$bin" || return 0
    echo "== $(side_label "$side"): $n watchers" >&2
    IFS='|' read -r g s <<<"$(cost_watch_cmd "$n")"
    run_bench "$dir" "$side" "watchers-$n" "$g" "$s" 1
    stop_cluster
  done
  for n in "$leases_a" "$leases_b"; do
    start_fresh "$dir" "$side" "$side-cost" "$bin" || return 0
    echo "== $(side_label "$side"): $n leases" >&2
    run_bench "$dir" "$side" "grant-$n" "--conns 10 --clients 100 --total $n" "lease-grant --ttl 600 --ids-file $work/leases.ids"
    run_bench "$dir" "$side" "leases-$n" "--conns 10 --clients 100 --total $n --rate $((n / lease_secs))" "lease-keepalive --ids-file $work/leases.ids" 1
    stop_cluster
  done
}

# Key-count cost, one round: load keys_a, RSS, snapshot save, crash/restart; load up to
# keys_b, RSS, crash/restart.
run_keys() { # dir side bin
  local dir=$1 side=$2 bin=$3
  start_fresh "$dir" "$side" "$side-keys" "$bin" || return 0
  echo "== $(side_label "$side"): loading $keys_a keys" >&2
  run_bench "$dir" "$side" "keys-a" "--conns 100 --clients 1000 --total $keys_a" "$(put_sub 256 "$keys_b")"
  sleep 2; rss_kb >"$dir/$side.rss_keys_a"
  echo "== $(side_label "$side"): snapshot save with $keys_a keys" >&2
  snapshot_save "$dir" "$side" _keys_a
  crash_restart "$dir" "$side" "$side-keys" "$bin" restart_keys_a
  echo "== $(side_label "$side"): loading $((keys_b - keys_a)) more keys" >&2
  run_bench "$dir" "$side" "keys-b" "--conns 100 --clients 1000 --total $((keys_b - keys_a))" "$(put_sub 256 "$keys_b") --key-start $keys_a"
  sleep 2; rss_kb >"$dir/$side.rss_keys_b"
  crash_restart "$dir" "$side" "$side-keys" "$bin" restart_keys_b
  stop_cluster
  rm -rf "$work/data/$side-keys" # gigabytes with --big; the other side needs the disk
}

side_bin() { if [ "$1" = etcd ]; then echo "$etcd_bin"; else echo "$skiff_bin"; fi; }
sides_of_round() { # k: odd rounds etcd first, even rounds the second side first
  local s=(etcd); [ -n "$skiff_bin" ] && { if (($1 % 2)); then s+=(skiff); else s=(skiff etcd); fi; }
  echo "${s[@]}"
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
if [ -n "$skiff_bin" ]; then
  skiff_version="$("$skiff_bin" --version 2>&1 | sed -n 1p || true) ($(shown "$skiff_bin"))"
else
  skiff_version="none (no skiff binary given or found at $(shown "$target_dir/release/skiff"))"
fi

# --- the runs ----------------------------------------------------------------------------
[ "$keys_only" = 1 ] && rounds=0
for ((k = 1; k <= rounds; k++)); do
  mkdir -p "$work/r$k"
  for side in $(sides_of_round "$k"); do
    echo "== round $k of $rounds: $(side_label "$side")" >&2
    first_pass=0; [ "$k" = 1 ] && [ "$side" = etcd ] && first_pass=1
    run_standard "$work/r$k" "$side" "$(side_bin "$side")"
    run_cost "$work/r$k" "$side" "$(side_bin "$side")"
  done
done
mkdir -p "$work/keys"
for side in $(sides_of_round 1); do
  echo "== key-count cost rows (one round): $(side_label "$side")" >&2
  first_pass=0; [ "$side" = etcd ] && first_pass=1
  run_keys "$work/keys" "$side" "$(side_bin "$side")"
done
# Defragment under load, one run per side (bench/defrag.sh, which alternates nothing: etcd
# first, then the second side, each on its own member).
defrag_md="$work/defrag.md"
rm -f "$defrag_md"
if [ "$defrag" = 1 ] && [ -n "$skiff_bin" ]; then
  defrag_keys=$keys_a
  echo "== defragment under load ($defrag_keys keys)" >&2
  "$repo/bench/defrag.sh" --etcd-bin "$etcd_bin" --skiff-bin "$skiff_bin" --bench-bin "$bench_bin" \
    --keys "$defrag_keys" --out "$defrag_md" --work-dir "$work/defrag" >&2 ||
    echo "defrag.sh failed (exit $?); its rows are missing from the report" >"$defrag_md"
  rm -rf "$work/defrag" # gigabytes with --big
fi
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# shellcheck source=bench/lib/report.sh
. "$repo/bench/lib/report.sh"
write_report
if [ "$rounds" -gt 0 ]; then echo "compare.sh: wrote $out and $plot" >&2; else echo "compare.sh: wrote $out" >&2; fi
