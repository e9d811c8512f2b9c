#!/usr/bin/env bash
# bench/ab_cpu.sh: A/B of server binaries on rows of compare.sh (1000 clients, and puts
# at 10 and 100), with each member's CPU per 1000 requests (leader first), so a change to
# the request path shows where its cost moved. Binaries alternate round by round on a fresh 3-member cluster each.
#
# Usage: bench/ab_cpu.sh [--rounds N] [--total N] [--bench-bin PATH] [--work-dir DIR]
#                        [--workloads "put-1000 range-l"] LABEL=BIN [LABEL=BIN ...]
#   --rounds     rounds per binary (default 3)
#   --total      requests per workload (default 40000)
#   --bench-bin  skiff-bench (default target/release/skiff-bench)
#   --work-dir   data dirs and logs (default bench/tmp-ab, removed at start)
#   --workloads  among put-1000 (1000 clients over 100 conns, to the leader), range-l and
#                range-s (the same clients, all members), put-100 (100 clients, 10 conns)
#                and put-10 (10 clients, 1 conn), both all members as compare.sh's
#                scaling rows; put-1 (1 client to the leader, back to back), put-1-paced
#                (the same at 100 puts/s) and watch (compare.sh's watch row: puts at
#                100/s, 10 streams x 10 watchers; its requests/s, p50 and p99 are the
#                events', its CPU per 1000 puts)
#                (default "put-1000 range-l")
#   --syscalls   also count each member's syscalls with `perf stat` (needs perf and access
#                to the syscalls tracepoints) and print the leader's per request: socket
#                writes (write, writev, sendto, sendmsg), socket reads (read, recvfrom,
#                recvmsg), futex calls and context switches
# Prints one line per round and workload: requests/s, the members' CPU per 1000 requests
# (sum, then leader and followers), the load generator's, and the p50 and p99.
# Needs: etcdctl, jq. Ports: clients 22201-22203, peers 22211-22213 (loopback only).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bench_bin=$repo/target/release/skiff-bench work=$repo/bench/tmp-ab
rounds=3 total=40000 workloads="put-1000 range-l" syscalls=0 bins=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --total) total=$2; shift 2 ;;
    --bench-bin) bench_bin=$2; shift 2 ;;
    --work-dir) work=$2; shift 2 ;;
    --workloads) workloads=$2; shift 2 ;;
    --syscalls) syscalls=1; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    -*) echo "ab_cpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *=*) bins+=("$1"); shift ;;
    *) echo "ab_cpu.sh: expected LABEL=BIN, got $1" >&2; exit 2 ;;
  esac
done
die() { echo "ab_cpu.sh: $*" >&2; exit 1; }
[ ${#bins[@]} -gt 0 ] || die "no LABEL=BIN given (see --help)"
for t in etcdctl jq; do command -v "$t" >/dev/null || die "$t is required"; done
[ "$syscalls" = 0 ] || command -v perf >/dev/null || die "perf is required for --syscalls"
[ -x "$bench_bin" ] || die "no skiff-bench at $bench_bin"
for lb in "${bins[@]}"; do [ -x "${lb#*=}" ] || die "no binary at ${lb#*=}"; done

eps=127.0.0.1:22201,127.0.0.1:22202,127.0.0.1:22203
cluster="m1=http://127.0.0.1:22211,m2=http://127.0.0.1:22212,m3=http://127.0.0.1:22213"
export ETCDCTL_API=3
pids=()
stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap stop EXIT
cpu_ticks() { local f; read -r -a f < "/proc/$1/stat"; echo $((f[13] + f[14])); }
events=context-switches
for e in write writev sendto sendmsg read recvfrom recvmsg futex; do events+=",syscalls:sys_enter_$e"; done
# Per request, from the `perf stat -x,` output of one member: writes, reads, futex, switches.
per_request() {
  awk -F, -v t="$2" '/^[0-9]/ { n[$3] = $1 }
    END { w = r = 0
      for (k in n) { if (k ~ /enter_(write|writev|sendto|sendmsg)$/) w += n[k]; if (k ~ /enter_(read|recvfrom|recvmsg)$/) r += n[k] }
      printf "writes %.2f, reads %.2f, futex %.2f, switches %.2f", w / t, r / t, n["syscalls:sys_enter_futex"] / t, n["context-switches"] / t }' "$1"
}
tick_ms=$((1000 / $(getconf CLK_TCK)))

one_round() { # label bin
  local label=$1 bin=$2 dir=$work/$1 i leader li
  rm -rf "$dir"; mkdir -p "$dir"
  for i in 1 2 3; do
    "$bin" --name "m$i" --data-dir "$dir/m$i" \
      --listen-client-urls "http://127.0.0.1:2220$i" --advertise-client-urls "http://127.0.0.1:2220$i" \
      --listen-peer-urls "http://127.0.0.1:2221$i" --initial-advertise-peer-urls "http://127.0.0.1:2221$i" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token ab \
      >"$dir/m$i.log" 2>&1 &
    pids+=($!)
  done
  leader=""
  for _ in $(seq 100); do
    leader=$(etcdctl --endpoints "$eps" endpoint status -w json 2>/dev/null |
      jq -r '.[] | select(.Status.leader == .Status.header.member_id) | .Endpoint' 2>/dev/null) || true
    [ -n "$leader" ] && break
    sleep 0.2
  done
  [ -n "$leader" ] || die "$label: no leader within 20 s (logs in $dir)"
  li=${leader: -1}
  etcdctl --endpoints "$eps" put benchkey "$(head -c 256 /dev/zero | tr '\0' v)" >/dev/null
  local order=($((li - 1)) $((li % 3)) $(((li + 1) % 3)))
  for wl in $workloads; do
    local args put=(put --key-size 8 --val-size 256 --sequential-keys --key-space-size 100000)
    case "$wl" in
      put-1000) args=(--conns 100 --clients 1000 --target-leader "${put[@]}") ;;
      put-100) args=(--conns 10 --clients 100 "${put[@]}") ;;
      put-10) args=(--conns 1 --clients 10 "${put[@]}") ;;
      put-1) args=(--conns 1 --clients 1 --target-leader "${put[@]}") ;;
      put-1-paced) args=(--conns 1 --clients 1 --target-leader --rate 100 "${put[@]}") ;;
      watch) args=(--conns 10 watch-latency --put-total "$total" --put-rate 100 --streams 10
        --watchers-per-stream 10 --val-size 256) ;;
      range-l) args=(--conns 100 --clients 1000 range benchkey --consistency l) ;;
      range-s) args=(--conns 100 --clients 1000 range benchkey --consistency s) ;;
      *) die "unknown workload $wl" ;;
    esac
    local before=() after=() p perf_pid=""
    for p in "${order[@]}"; do before+=("$(cpu_ticks "${pids[$p]}")"); done
    if [ "$syscalls" = 1 ]; then
      perf stat -x, -e "$events" -p "${pids[${order[0]}]}" -o "$dir/$wl.perf" & perf_pid=$!
      sleep 0.3 # perf attaches
    fi
    /usr/bin/time -f '%U %S' -o "$dir/gen.txt" "$bench_bin" --endpoints "$eps" --total "$total" \
      "${args[@]}" >"$dir/$wl.txt" 2>&1 || die "$label: skiff-bench failed (see $dir/$wl.txt)"
    for p in "${order[@]}"; do after+=("$(cpu_ticks "${pids[$p]}")"); done
    local sys=""
    if [ -n "$perf_pid" ]; then
      kill -INT "$perf_pid"; wait "$perf_pid" || true
      sys="; leader's syscalls per request: $(per_request "$dir/$wl.perf" "$total")"
    fi
    local per=() sum=0 d k
    for k in 0 1 2; do
      d=$(( (after[k] - before[k]) * tick_ms * 1000 / total )); per+=("$d"); sum=$((sum + d))
    done
    local gen rps p50 p99
    gen=$(awk -v t="$total" '{printf "%d", ($1 + $2) * 1000 * 1000 / t}' "$dir/gen.txt")
    rps=$(awk '/Requests\/sec/{printf "%d", $2; exit}' "$dir/$wl.txt")
    p50=$(awk '/ 50% in/{printf "%.2f", $3 * 1000; exit}' "$dir/$wl.txt")
    p99=$(awk '/ 99% in/{printf "%.2f", $3 * 1000; exit}' "$dir/$wl.txt")
    echo "$label $wl: $rps requests/s; members' CPU per 1000: $sum ms (leader ${per[0]}, followers ${per[1]} ${per[2]}); generator $gen ms; p50 $p50 ms, p99 $p99 ms$sys"
  done
  stop
}

rm -rf "$work"; mkdir -p "$work"
echo "# bench/ab_cpu.sh --rounds $rounds --total $total --workloads \"$workloads\" (members' CPU from /proc, ms per 1000 requests)"
for r in $(seq "$rounds"); do
  for lb in "${bins[@]}"; do one_round "${lb%%=*}" "${lb#*=}"; done
done
