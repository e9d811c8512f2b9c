#!/usr/bin/env bash
# bench/profile.sh: where a member's time goes, per workload (the method of bench/PROFILE.md).
#
# Starts a 3-member cluster of one binary (Skiff or etcd) on loopback, finds the leader,
# and while skiff-bench runs one workload records `perf record -g` of the leader and of one
# follower. Prints, per member: the split of samples by thread, by binary/library and the
# top symbols; plus the leader's backend-commit histogram (`etcd_disk_backend_commit_duration_seconds`)
# and the run's latency line, which show the off-CPU stalls a sampling profile cannot.
# Keeps the perf.data files in the work dir for `perf report -i`.
#
# Usage: bench/profile.sh [--bin PATH] [--bench-bin PATH] [--work-dir DIR] [--top N] [--owners] WORKLOAD
#   WORKLOAD   put-1 | put-1000 | range-l | range-s | watch   (the compare.sh workloads)
#   --bin      server binary (default target/release/skiff); etcd works too
#   --bench-bin  skiff-bench (default target/release/skiff-bench)
#   --work-dir data dirs, logs, perf data (default bench/tmp-profile, removed at start)
#   --top N    symbols shown per member (default 25)
#   --owners   record DWARF call chains (perf --call-graph dwarf, 299 Hz) and also print
#              which layer owns each member's samples (bench/perf_owners.py): an
#              allocation or a copy counts for the layer that asked for it
# Needs: perf, etcdctl. Ports: clients 22101-22103, peers 22111-22113 (loopback only).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=$repo/target/release/skiff bench_bin=$repo/target/release/skiff-bench
work=$repo/bench/tmp-profile top=25 workload="" owners=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --bench-bin) bench_bin=$2; shift 2 ;;
    --work-dir) work=$2; shift 2 ;;
    --top) top=$2; shift 2 ;;
    --owners) owners=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "profile.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) workload=$1; shift ;;
  esac
done
die() { echo "profile.sh: $*" >&2; exit 1; }
for t in perf etcdctl; do command -v "$t" >/dev/null || die "$t is required"; done
[ -x "$bin" ] || die "no server binary at $bin (cargo build --release --bin skiff)"
[ -x "$bench_bin" ] || die "no skiff-bench at $bench_bin (cargo build --release -p skiff-bench)"

eps=127.0.0.1:22101,127.0.0.1:22102,127.0.0.1:22103
case "$workload" in
  put-1) args=(--conns 1 --clients 1 --total 4000 --target-leader put --key-size 8 --val-size 256 --sequential-keys --key-space-size 100000) ;;
  put-1000) args=(--conns 100 --clients 1000 --total 60000 --target-leader put --key-size 8 --val-size 256 --sequential-keys --key-space-size 100000) ;;
  range-l) args=(--conns 100 --clients 1000 --total 60000 range benchkey --consistency l) ;;
  range-s) args=(--conns 100 --clients 1000 --total 60000 range benchkey --consistency s) ;;
  watch) args=(--conns 10 watch-latency --put-total 500 --put-rate 100 --streams 10 --watchers-per-stream 10 --val-size 256) ;;
  *) die "unknown workload '$workload' (put-1 | put-1000 | range-l | range-s | watch)" ;;
esac

rm -rf "$work"; mkdir -p "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
cluster="m1=http://127.0.0.1:22111,m2=http://127.0.0.1:22112,m3=http://127.0.0.1:22113"
for i in 1 2 3; do
  c=http://127.0.0.1:2210$i p=http://127.0.0.1:2211$i
  "$bin" --name "m$i" --data-dir "$work/m$i" --listen-client-urls "$c" --advertise-client-urls "$c" \
    --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" --initial-cluster "$cluster" \
    --initial-cluster-state new --initial-cluster-token profile >"$work/m$i.log" 2>&1 &
  pids+=($!)
done
export ETCDCTL_API=3
leader=""
for _ in $(seq 100); do
  leader=$(etcdctl --endpoints "$eps" endpoint status 2>/dev/null | awk -F', ' '$5=="true"{print $1}') || true
  [ -n "$leader" ] && break
  sleep 0.2
done
[ -n "$leader" ] || die "no leader within 20 s (logs in $work)"
etcdctl --endpoints "$eps" put benchkey "$(head -c 256 /dev/zero | tr '\0' v)" >/dev/null
li=${leader: -1}
fi=$((li % 3 + 1))
leader_pid=${pids[$((li - 1))]} follower_pid=${pids[$((fi - 1))]}

callgraph=(-F 499 -g)
[ -z "$owners" ] || callgraph=(-F 299 --call-graph dwarf,16384)
perf record "${callgraph[@]}" -p "$leader_pid" -o "$work/leader.data" -- sleep 3600 >/dev/null 2>&1 &
perf_l=$!
perf record "${callgraph[@]}" -p "$follower_pid" -o "$work/follower.data" -- sleep 3600 >/dev/null 2>&1 &
perf_f=$!
sleep 0.5
"$bench_bin" --endpoints "$eps" "${args[@]}" >"$work/bench.txt" 2>&1 || echo "profile.sh: skiff-bench exited non-zero (see $work/bench.txt)" >&2
kill -INT "$perf_l" "$perf_f" 2>/dev/null || true
wait "$perf_l" "$perf_f" 2>/dev/null || true

echo "# $workload on $(basename "$bin"): leader m$li, follower m$fi"
grep -E "Requests/sec|50% in|99% in" "$work/bench.txt" || true
echo "## leader backend commits (le seconds: count)"
curl -s "$leader/metrics" | awk '/^etcd_disk_backend_commit_duration_seconds_bucket/{sub(/.*le="/,""); sub(/"}/,":"); printf "%s ", $0} END{print ""}' || true
# The first N lines of a perf report (head closes the pipe early: not a failure).
report() { # data sort lines
  { perf report -i "$1" --no-children --sort "$2" -q -g none 2>/dev/null || true; } |
    grep -v '^$' | head -"$3" | cut -c1-160 || true
}
for who in leader follower; do
  echo "## $who: samples by thread"
  report "$work/$who.data" comm 8
  echo "## $who: by binary"
  report "$work/$who.data" dso 5
  echo "## $who: top $top symbols (self)"
  report "$work/$who.data" sym "$top"
done
if [ -n "$owners" ]; then
  for who in leader follower; do
    echo "## $who: samples by owning layer"
    perf script -i "$work/$who.data" -F comm,ip,sym 2>/dev/null | python3 "$repo/bench/perf_owners.py" 3
  done
fi
