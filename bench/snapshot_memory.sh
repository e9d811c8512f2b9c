#!/usr/bin/env bash
# bench/snapshot_memory.sh: the member's memory while `etcdctl snapshot save` streams a
# large database, etcd 3.4 vs Skiff (outside CI; issue 12 asks Skiff's RSS to grow by
# less than 64 MiB while streaming a database of 1 GiB or more).
#
# For each server in turn: start one member on loopback (same flags for both, quota
# raised to 8 GiB), fill it with values of --value-kib KiB (etcdctl put, --jobs in
# parallel) until its db is at least --size-mib MiB, let it settle, then run
# `etcdctl snapshot save` while sampling the member's VmRSS (/proc/PID/status) every
# 100 ms. Prints a table: db size, snapshot file size, snapshot time, RSS before, peak
# RSS while streaming, growth; plus the command. The member is stopped and its data and
# snapshot deleted before the next side starts, and everything is deleted at the end.
#
# Usage: bench/snapshot_memory.sh [--skiff-bin PATH] [--etcd-bin PATH] [--size-mib N]
#                                 [--value-kib N] [--jobs N] [--only etcd|skiff]
# Defaults: target/release/skiff (cargo build --release --bin skiff), etcd on PATH,
# 1100 MiB, 256 KiB values, 8 jobs, both sides. Work dir: mktemp -d under --tmp-dir
# (default the repository's bench/, same filesystem as the other benchmarks).
# Needs jq, etcd, etcdctl; about 2.5 x --size-mib of free disk per side (data dir, WAL,
# snapshot; Skiff also builds the snapshot in a temporary file beside its backend).
# Ports: client 21301, peer 21311 (loopback only).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
skiff_bin="$repo/target/release/skiff"
etcd_bin=$(command -v etcd || true)
size_mib=1100 value_kib=256 jobs=8 only="" tmp_dir="$repo/bench"
invocation="bench/snapshot_memory.sh${*:+ $*}"
while [ $# -gt 0 ]; do
  case "$1" in
    --skiff-bin) skiff_bin=$2; shift 2 ;;
    --etcd-bin) etcd_bin=$2; shift 2 ;;
    --size-mib) size_mib=$2; shift 2 ;;
    --value-kib) value_kib=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --tmp-dir) tmp_dir=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "snapshot_memory.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
die() { echo "snapshot_memory.sh: $*" >&2; exit 1; }
for t in jq etcdctl; do command -v "$t" >/dev/null || die "$t is needed"; done
[ "$only" = skiff ] || [ -x "$etcd_bin" ] || die "no etcd binary (--etcd-bin PATH)"
[ "$only" = etcd ] || [ -x "$skiff_bin" ] || die "no skiff binary at $skiff_bin (cargo build --release --bin skiff)"
export ETCDCTL_API=3

work=$(mktemp -d "$tmp_dir/tmp-snapmem.XXXXXX")
ep=127.0.0.1:21301
pid="" sampler=""
stop() {
  if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true; sampler=""; fi
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; fi
}
cleanup() { stop; rm -rf "$work"; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

ctl() { etcdctl --endpoints "$ep" --command-timeout=600s "$@"; }
rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0; }
db_bytes() { ctl endpoint status -w json | jq '.[0].Status.dbSize'; }
mib() { awk -v b="$1" 'BEGIN{printf "%.1f", b / 1048576}'; }

start() { # side binary
  local side=$1 bin=$2
  "$bin" --name s1 --data-dir "$work/$side.data" \
    --listen-client-urls "http://$ep" --advertise-client-urls "http://$ep" \
    --listen-peer-urls http://127.0.0.1:21311 --initial-advertise-peer-urls http://127.0.0.1:21311 \
    --initial-cluster s1=http://127.0.0.1:21311 --quota-backend-bytes 8589934592 \
    >"$work/$side.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do
    ctl endpoint health >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "$side did not start (log: $work/$side.log)"
}

# Values of random bytes (nothing on either side compresses them), one file reused.
head -c $((value_kib * 1024)) /dev/urandom >"$work/value"

fill() { # until the db holds size_mib MiB
  local next=0 want batch
  want=$((size_mib * 1048576))
  batch=$(((size_mib * 1024 / value_kib) / 4 + 1))
  # Both: the values put (what the snapshot holds; Skiff's backend file is larger than
  # its data for values this size) and the db size endpoint status reports.
  while [ $((next * value_kib * 1024)) -lt "$want" ] || [ "$(db_bytes)" -lt "$want" ]; do
    seq "$next" $((next + batch - 1)) |
      xargs -P "$jobs" -I{} sh -c "etcdctl --endpoints $ep put big-{} <'$work/value' >/dev/null" ||
      die "etcdctl put failed"
    next=$((next + batch))
  done
  echo "$next"
}

run_side() { # side binary
  local side=$1 bin=$2 keys t0 t1 before peak
  echo "== $side: starting one member ($bin)" >&2
  start "$side" "$bin"
  t0=$(date +%s.%N)
  keys=$(fill) || die "$side: filling failed"
  t1=$(date +%s.%N)
  echo "== $side: $keys values of $value_kib KiB in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", b-a}') s" >&2
  sleep 3
  eval "${side}_db=$(db_bytes)"
  eval "${side}_keys=$keys"
  before=$(rss_kib)
  ( while :; do awk '/^VmRSS:/{print $2}' "/proc/$pid/status" 2>/dev/null || exit 0; sleep 0.1; done ) \
    >"$work/$side.rss" &
  sampler=$!
  t0=$(date +%s.%N)
  if ctl snapshot save "$work/$side.snapshot.db" >"$work/$side.save.log" 2>&1; then
    t1=$(date +%s.%N)
    eval "${side}_took=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')"
  else
    eval "${side}_took=\"failed: $(tail -1 "$work/$side.save.log" | tr -d '\"')\""
  fi
  kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true; sampler=""
  peak=$(sort -n "$work/$side.rss" | tail -1)
  peak=${peak:-0}
  [ "$peak" -lt "$before" ] && peak=$before
  eval "${side}_file=$(stat -c %s "$work/$side.snapshot.db" 2>/dev/null || echo 0)"
  eval "${side}_before=$((before * 1024))"
  eval "${side}_peak=$((peak * 1024))"
  eval "${side}_growth=$(((peak - before) * 1024))"
  eval "${side}_samples=$(wc -l <"$work/$side.rss")"
  stop
  rm -rf "$work/$side.data" "$work/$side.snapshot.db"
}

for side in etcd skiff; do
  eval "${side}_db=0 ${side}_keys=0 ${side}_file=0 ${side}_took='not run' ${side}_before=0 ${side}_peak=0 ${side}_growth=0 ${side}_samples=0"
done
if [ "$only" != skiff ]; then run_side etcd "$etcd_bin"; fi
if [ "$only" != etcd ]; then run_side skiff "$skiff_bin"; fi

verdict="not run"
if [ "$only" != etcd ]; then
  if [ "$skiff_growth" -lt $((64 * 1048576)) ] && [ "$skiff_file" -ge $((1024 * 1048576)) ]; then
    verdict="yes"
  else
    verdict="NO"
  fi
fi
cat <<MD
$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, one member each on loopback, quota 8 GiB,
values of $value_kib KiB (random bytes) put with etcdctl ($jobs in parallel) until they
and the db held $size_mib MiB; then \`etcdctl snapshot save\` while the member's VmRSS was sampled
every 100 ms. Command: \`$invocation\`.

| | etcd 3.4 | Skiff |
|---|---|---|
| values of $value_kib KiB | $etcd_keys | $skiff_keys |
| db size, endpoint status (MiB) | $(mib "$etcd_db") | $(mib "$skiff_db") |
| snapshot file (MiB) | $(mib "$etcd_file") | $(mib "$skiff_file") |
| snapshot save time (s) | $etcd_took | $skiff_took |
| member RSS before (MiB) | $(mib "$etcd_before") | $(mib "$skiff_before") |
| member peak RSS while streaming (MiB) | $(mib "$etcd_peak") | $(mib "$skiff_peak") |
| growth (MiB) | $(mib "$etcd_growth") | $(mib "$skiff_growth") |
| RSS samples | $etcd_samples | $skiff_samples |

Skiff grew by less than 64 MiB while streaming a snapshot of at least 1 GiB: $verdict.
MD
