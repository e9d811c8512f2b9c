#!/usr/bin/env bash
# bench/host_stalls.sh: does this machine stop its vCPUs now and then, and does disk I/O
# count towards what stops them? (outside CI; a check to run before reading a tail
# latency off this machine).
#
# Three phases of --seconds each, every one reported with the guest's steal time
# (/proc/stat) over the phase:
#   1. two CPU spinners, one per core, alone: each records the gaps over 2 ms in its
#      own progress (time it was not running);
#   2. the same two spinners while `skiff-bench fdatasync` syncs 2300 B appends in
#      a loop (what a WAL does), 5000 syncs per second of the phase;
#   3. three `skiff-bench fdatasync` probes at once (3000 syncs per second of the phase
#      each), no spinner: their p99.9 and how many syncs took over 3 ms, with the time
#      between those.
# (The probes' sync counts are fixed, so on a slow disk they outlast the spinners.)
# On a machine whose host caps the VM's CPU per period and counts its own I/O work
# (virtio emulation) against that cap, phase 1 shows no gaps, phase 2 shows gaps of
# milliseconds once per period, and phase 3 shows syncs that stall once per period;
# then every latency measured here has a floor of stalls at that period that neither
# etcd nor Skiff causes (bench/PROFILE.md, "the machine stops every 100 ms").
#
# Usage: bench/host_stalls.sh [--bench-bin PATH] [--seconds N] [--dir DIR]
# Defaults: target/release/skiff-bench, 4 s, bench/tmp-host (removed at the end).
# Needs python3, jq.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bench_bin=$repo/target/release/skiff-bench secs=4 dir=$repo/bench/tmp-host
while [ $# -gt 0 ]; do
  case "$1" in
    --bench-bin) bench_bin=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "host_stalls.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
die() { echo "host_stalls.sh: $*" >&2; exit 1; }
for t in python3 jq; do command -v "$t" >/dev/null || die "$t is needed"; done
[ -x "$bench_bin" ] || die "no skiff-bench at $bench_bin (cargo build --release -p skiff-bench)"
[[ $secs =~ ^[1-9][0-9]*$ ]] || die "--seconds must be a positive number"
mkdir -p "$dir"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

steal() { awk '/^cpu /{print $9}' /proc/stat; }
hz=$(getconf CLK_TCK)

# One spinner: reads the clock in a loop for $1 s; prints its gaps over 2 ms.
spin() {
  python3 - "$1" <<'EOF'
import sys, time
end = time.perf_counter() + float(sys.argv[1])
first = last = time.perf_counter()
gaps = []
while last < end:
    t = time.perf_counter()
    if t - last > 0.002:
        gaps.append((t - first, t - last))
    last = t
lost = sum(g for _, g in gaps) * 1000
periods = [round((b[0] - a[0]) * 1000) for a, b in zip(gaps, gaps[1:])]
med = sorted(periods)[len(periods) // 2] if periods else "-"
print(f"{len(gaps)} gaps over 2 ms, {lost:.0f} ms lost of {float(sys.argv[1]) * 1000:.0f}; "
      f"longest {max((g for _, g in gaps), default=0) * 1000:.1f} ms; median time between gaps {med} ms")
EOF
}

# One fdatasync probe of $1 syncs in directory $2, JSON on stdout.
probe() {
  "$bench_bin" fdatasync --dir "$2" --count "$1" --slowest-listed 2000 -w json
}

# Summary of a probe's JSON: syncs/s, p99.9, syncs over 3 ms and the median time between them.
probe_line() {
  jq -r '
    ([.slowest_requests[] | select(.latency_s > 0.003) | .began_unix_s] | sort) as $t
    | ([range(1; $t | length) | ($t[.] - $t[. - 1]) * 1000 | round] | sort) as $gaps
    | "\(.requests_per_s | round) syncs/s, p99.9 \(.percentiles[] | select(.percent == 99.9) | .latency_s * 1000 | . * 100 | round / 100) ms, \($t | length) over 3 ms, median time between them \(if ($gaps | length) > 0 then $gaps[($gaps | length) / 2 | floor] else "-" end) ms"' "$1"
}

echo "== 1. two CPU spinners alone, ${secs} s"
s0=$(steal)
spin "$secs" >"$dir/s1a" & pids+=($!)
spin "$secs" >"$dir/s1b"
wait; pids=()
echo "   spinner A: $(cat "$dir/s1a")"
echo "   spinner B: $(cat "$dir/s1b")"
echo "   steal: $(( ($(steal) - s0) * 1000 / hz )) ms"

echo "== 2. two CPU spinners while one fdatasync probe runs, ${secs} s"
mkdir -p "$dir/p0"
s0=$(steal)
spin "$secs" >"$dir/s2a" & pids+=($!)
spin "$secs" >"$dir/s2b" & pids+=($!)
probe $((secs * 5000)) "$dir/p0" >"$dir/p0.json"
wait; pids=()
echo "   spinner A: $(cat "$dir/s2a")"
echo "   spinner B: $(cat "$dir/s2b")"
echo "   probe: $(probe_line "$dir/p0.json")"
echo "   steal: $(( ($(steal) - s0) * 1000 / hz )) ms"

echo "== 3. three fdatasync probes at once, ${secs} s"
s0=$(steal)
for i in 1 2 3; do
  mkdir -p "$dir/p$i"
  probe $((secs * 3000)) "$dir/p$i" >"$dir/p$i.json" & pids+=($!)
done
wait; pids=()
for i in 1 2 3; do echo "   probe $i: $(probe_line "$dir/p$i.json")"; done
echo "   steal: $(( ($(steal) - s0) * 1000 / hz )) ms"
