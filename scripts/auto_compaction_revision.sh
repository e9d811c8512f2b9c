#!/usr/bin/env bash
# `--auto-compaction-mode revision` compared with etcd 3.4, outside CI (it takes
# DURATION seconds, 11 minutes by default: etcd 3.4's revision compactor looks every
# 5 minutes, so two of its compactions need more than 10).
#
# Starts one etcd 3.4 member and one Skiff member together, both with
# `--auto-compaction-mode revision --auto-compaction-retention $RETENTION`, writes the
# same 3 keys to both every 10 s (at 5 s past each 10 s mark, away from the compactors'
# 5-minute ticks), and every 10 s prints each server's revision and compaction revision
# (`endpoint hashkv -w json`'s `compact_revision`). At the end it prints the compaction
# revisions each server went through and whether they are the same.
#
# Usage: scripts/auto_compaction_revision.sh [skiff binary]   (default: target/release/skiff,
# else target/debug/skiff). Env: DURATION (s, default 660), RETENTION (default 20).
# Ports 46379-46380 (etcd) and 46389-46390 (Skiff). Stops only the processes it started.
set -euo pipefail

cd "$(dirname "$0")/.."
SKIFF=${1:-}
if [ -z "$SKIFF" ]; then
  if [ -x target/release/skiff ]; then SKIFF=target/release/skiff; else SKIFF=target/debug/skiff; fi
fi
DURATION=${DURATION:-660}
RETENTION=${RETENTION:-20}
export ETCDCTL_API=3
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

start() { # name bin client-port
  local name=$1 bin=$2 port=$3 peer=$(($3 + 1))
  "$bin" --name "$name" --data-dir "$work/$name" \
    --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "$name=http://127.0.0.1:$peer" \
    --auto-compaction-mode revision --auto-compaction-retention "$RETENTION" \
    >"$work/$name.log" 2>&1 &
  pids+=($!)
}

start etcd etcd 46379
start skiff "$SKIFF" 46389
E=(etcdctl --endpoints=127.0.0.1:46379)
S=(etcdctl --endpoints=127.0.0.1:46389)
for i in $(seq 1 100); do
  if "${E[@]}" endpoint health >/dev/null 2>&1 && "${S[@]}" endpoint health >/dev/null 2>&1; then break; fi
  sleep 0.1
done
t0=$(date +%s)

# revision and compaction revision of one server, as "rev compact"
state() {
  "$@" endpoint hashkv -w json 2>/dev/null |
    sed -E 's/.*"revision":([0-9]+).*"compact_revision":(-?[0-9]+).*/\1 \2/'
}

echo "retention $RETENTION revisions; etcd $(etcd --version | head -1); skiff $SKIFF"
printf '%6s  %10s %10s  %10s %10s\n' t etcd-rev etcd-compact skiff-rev skiff-compact
seen_e=() seen_s=()
n=0
while [ $(($(date +%s) - t0)) -lt "$DURATION" ]; do
  # Writes at 5 s past each 10 s mark, samples on the mark.
  sleep $((t0 + 10 * n + 5 - $(date +%s) > 0 ? t0 + 10 * n + 5 - $(date +%s) : 0))
  for k in a b c; do
    "${E[@]}" put "$k" "$n" >/dev/null
    "${S[@]}" put "$k" "$n" >/dev/null
  done
  n=$((n + 1))
  sleep $((t0 + 10 * n - $(date +%s) > 0 ? t0 + 10 * n - $(date +%s) : 0))
  read -r er ec <<<"$(state "${E[@]}")"
  read -r sr sc <<<"$(state "${S[@]}")"
  printf '%6s  %10s %10s  %10s %10s\n' "$(($(date +%s) - t0))" "$er" "$ec" "$sr" "$sc"
  if [ "${#seen_e[@]}" -eq 0 ] || [ "${seen_e[-1]}" != "$ec" ]; then seen_e+=("$ec"); fi
  if [ "${#seen_s[@]}" -eq 0 ] || [ "${seen_s[-1]}" != "$sc" ]; then seen_s+=("$sc"); fi
done
echo "etcd compaction revisions:  ${seen_e[*]}"
echo "skiff compaction revisions: ${seen_s[*]}"
if [ "${seen_e[*]}" = "${seen_s[*]}" ]; then echo "same: yes"; else echo "same: no"; fi
echo "etcd log:";  grep -i "auto-compaction\|compacted" "$work/etcd.log" | tail -5 || true
echo "skiff log:"; grep -i "auto-compaction" "$work/skiff.log" | tail -5 || true
