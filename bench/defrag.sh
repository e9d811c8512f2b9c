#!/usr/bin/env bash
# bench/defrag.sh: what a defragment costs the writers, etcd 3.4 vs Skiff (outside CI).
#
# For each server in turn (one member on loopback, same flags): load --keys keys of 256 B
# with skiff-bench, overwrite them all once and compact, so that half of the file is free
# pages; then run a steady put load (--clients clients, --rate puts/s in all, --seconds
# long) and, --at seconds into it, `etcdctl defrag`; --repeat times, each after the same
# load without a defragment (a reference). Prints (and writes to --out) a table: how long
# the defragment took, the file size before and after the first, put p99 and the slowest
# put (the longest write stall) during the runs with a defragment and during the
# references, as the median of the repeats with each run's figure, and when the slowest
# put began, counted from the start of the defragment (to tell the copy, the swap and the
# release of the old file apart); and how many write stalls over 50 ms (puts over 50 ms,
# those that overlap in time counted as one stall) each run had, with and without a
# defragment: on a machine whose own disk or CPU stalls now and then, the reference
# runs show what the defragment did not cause. Then space: 90% of the keys are deleted (one
# DeleteRange through the JSON gateway), compacted and defragmented, and the table gives
# the file size and dbSizeInUse after the compaction and the size after the defragment,
# as a share of the size before the delete; then one more put, a compaction at its
# revision (below which the delete's tombstones are no longer needed: compacted at the
# delete's own revision, Skiff keeps them for watchers resuming there, etcd #19179, and
# etcd 3.4 drops them) and a second defragment, with the size and share again. No figure
# is invented: a side that fails says so.
#
# Usage: bench/defrag.sh [--skiff-bin PATH] [--etcd-bin PATH] [--bench-bin PATH]
#                        [--keys N] [--clients N] [--rate N] [--seconds N] [--at N]
#                        [--repeat N] [--out FILE] [--work-dir DIR]
# Defaults: target/release/skiff and target/release/skiff-bench, etcd on PATH, 1,000,000
# keys, 100 clients, 2000 puts/s, 15 s, defragment at 3 s, 3 repeats, out bench/DEFRAG.md,
# work dir bench/tmp-defrag (removed at start). Needs jq, etcd, etcdctl, curl, python3, bc.
# Ports: client 21201, peer 21211 (loopback only).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
skiff_bin="$repo/target/release/skiff"
bench_bin="$repo/target/release/skiff-bench"
etcd_bin=$(command -v etcd || true)
keys=1000000 clients=100 rate=2000 seconds=15 at=3 repeat=3
out="$repo/bench/DEFRAG.md"
work="$repo/bench/tmp-defrag"
# How a path appears in the report: relative to the repository when inside it, and
# otherwise only its file name, so the report never names one machine's directories.
shown() {
  case "$1" in
    "$repo"/*) echo "${1#"$repo"/}" ;;
    /*) echo "<elsewhere>/${1##*/}" ;;
    *) echo "$1" ;;
  esac
}
invocation="bench/defrag.sh"
for a in "$@"; do invocation+=" $(shown "$a")"; done
while [ $# -gt 0 ]; do
  case "$1" in
    --skiff-bin) skiff_bin=$2; shift 2 ;;
    --etcd-bin) etcd_bin=$2; shift 2 ;;
    --bench-bin) bench_bin=$2; shift 2 ;;
    --keys) keys=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --at) at=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --work-dir) work=$2; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "defrag.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
die() { echo "defrag.sh: $*" >&2; exit 1; }
for t in jq etcdctl curl python3 bc; do command -v $t >/dev/null || die "$t is needed"; done
[ -x "$bench_bin" ] || die "no skiff-bench at $bench_bin (cargo build --release -p skiff-bench)"
rm -rf "$work" && mkdir -p "$work"
ep=127.0.0.1:21201
pid=""
stop() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; fi
}
trap stop EXIT
trap 'stop; exit 130' INT TERM

start() { # side binary
  local side=$1 bin=$2
  "$bin" --name d1 --data-dir "$work/$side.data" \
    --listen-client-urls "http://$ep" --advertise-client-urls "http://$ep" \
    --listen-peer-urls http://127.0.0.1:21211 --initial-advertise-peer-urls http://127.0.0.1:21211 \
    --initial-cluster d1=http://127.0.0.1:21211 --quota-backend-bytes 8589934592 \
    >"$work/$side.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    etcdctl --endpoints=$ep endpoint health >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "$side did not start (log: $work/$side.log)"
}

ctl() { etcdctl --endpoints=$ep --command-timeout=600s "$@"; }
db_size() { ctl endpoint status -w json | jq '.[0].Status.dbSize'; }
db_in_use() { ctl endpoint status -w json | jq '.[0].Status.dbSizeInUse'; }
revision() { ctl endpoint status -w json | jq '.[0].Status.header.revision'; }
# Key number n as skiff-bench writes it (16 bytes, big-endian, zero-padded), base64.
key_b64() { python3 -c "import base64,sys; print(base64.b64encode(int(sys.argv[1]).to_bytes(16, 'big')).decode())" "$1"; }
ms() { jq -r "$1 * 1000 | . * 10 | round / 10" "$2"; }

p99() { jq -r '.percentiles[] | select(.percent == 99) | .latency_s * 1000 | . * 10 | round / 10' "$1"; }
slowest() { ms .slowest_s "$1"; }
# Write stalls over 50 ms in a run: its puts over 50 ms (from the slowest listed), those
# whose spans overlap merged into one; "–" from a skiff-bench that does not list them.
stalls() {
  jq -r 'if .slowest_requests == null then "–" else
    [.slowest_requests[] | select(.latency_s > 0.05) | [.began_unix_s, .began_unix_s + .latency_s]]
    | sort
    | reduce .[] as $i ([]; if length > 0 and $i[0] <= .[-1][1]
        then .[-1][1] = ([.[-1][1], $i[1]] | max) else . + [$i] end)
    | length end' "$1"
}
# When the slowest put of a run with a defragment began, in seconds after the defragment
# started (negative: before it); "–" from a skiff-bench that does not report it.
began() {
  local t0
  t0=$(cat "${1%.json}.t0")
  jq -r --argjson t0 "$t0" 'if .slowest_began_unix_s == null then "–" else (.slowest_began_unix_s - $t0) * 100 | round / 100 end' "$1"
}
# "median (run 1, run 2, ...)" of one figure over the repeats: runs side kind figure, where
# kind is ref, defrag (a JSON per run, read with the function figure) or took (a file).
runs() {
  local side=$1 kind=$2 fig=$3 i vals=()
  for ((i = 1; i <= repeat; i++)); do
    if [ "$kind" = took ]; then vals+=("$(cat "$work/$side.took.$i")"); else vals+=("$("$fig" "$work/$side.$kind.$i.json")"); fi
  done
  if [ "$repeat" = 1 ]; then echo "${vals[0]}"; return; fi
  local med
  med=$(printf '%s\n' "${vals[@]}" | sort -g | awk '{v[NR]=$1} END{print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}')
  echo "$med ($(IFS=,; echo "${vals[*]}" | sed 's/,/, /g'))"
}

# One side: sets the row values in global variables prefixed with the side.
run_side() {
  local side=$1 bin=$2
  start "$side" "$bin"
  local b="$bench_bin --endpoints $ep --conns 10 --clients $clients -w json"
  # Enough of the slowest puts listed to see every stall over 50 ms (one of 100 ms holds
  # up about 200 puts at 2000/s).
  local timed="$b --slowest-listed 5000"
  # Load, overwrite, compact: half of the rows (and their pages) become free.
  $b put --total "$keys" --key-space-size "$keys" --sequential-keys --key-size 16 --val-size 256 >/dev/null
  $b put --total "$keys" --key-space-size "$keys" --sequential-keys --key-size 16 --val-size 256 >/dev/null
  ctl compact "$(revision)" --physical >/dev/null
  # --repeat times: the same load without a defragment (reference), then with one. Every
  # defragment copies every live row, so a repeat costs the writers what the first did;
  # only the first returns space.
  local before after t0 t1 i
  for ((i = 1; i <= repeat; i++)); do
    $timed --total $((rate * seconds)) --rate "$rate" put --key-space-size "$keys" --key-size 16 --val-size 256 \
      >"$work/$side.ref.$i.json"
    [ "$i" = 1 ] && before=$(db_size)
    $timed --total $((rate * seconds)) --rate "$rate" put --key-space-size "$keys" --key-size 16 --val-size 256 \
      >"$work/$side.defrag.$i.json" &
    local load=$!
    sleep "$at"
    t0=$(date +%s.%N)
    echo "$t0" >"$work/$side.defrag.$i.t0"
    ctl defrag >"$work/$side.defrag.$i.out" 2>&1 || true
    t1=$(date +%s.%N)
    wait $load || true
    [ "$i" = 1 ] && after=$(db_size)
    echo "$t1 - $t0" | bc -l | xargs printf '%.2f\n' >"$work/$side.took.$i"
  done
  # Space returned: delete 90% of the keys (numbers below 90% of the key space, one
  # DeleteRange through the JSON gateway, as the keys are binary), compact, defragment.
  local full deleted gone gone_in_use gone_after past_after
  full=$(db_size)
  deleted=$(curl -sS --max-time 600 "http://$ep/v3/kv/deleterange" -d "{\"key\":\"$(key_b64 0)\",\"range_end\":\"$(key_b64 $((keys * 9 / 10)))\"}" | jq -r '.deleted // 0')
  ctl compact "$(revision)" --physical >/dev/null
  gone=$(db_size)
  gone_in_use=$(db_in_use)
  ctl defrag >/dev/null
  gone_after=$(db_size)
  ctl put skiff-bench-defrag-last x >/dev/null
  ctl compact "$(revision)" --physical >/dev/null
  ctl defrag >/dev/null
  past_after=$(db_size)
  stop
  eval "${side}_took=\"$(runs "$side" took cat)\""
  eval "${side}_before=$((before / 1048576))"
  eval "${side}_after=$((after / 1048576))"
  eval "${side}_p99=\"$(runs "$side" defrag p99)\""
  eval "${side}_slow=\"$(runs "$side" defrag slowest)\""
  eval "${side}_slow_at=\"$(runs "$side" defrag began)\""
  eval "${side}_ref_p99=\"$(runs "$side" ref p99)\""
  eval "${side}_ref_slow=\"$(runs "$side" ref slowest)\""
  eval "${side}_stalls=\"$(runs "$side" defrag stalls)\""
  eval "${side}_ref_stalls=\"$(runs "$side" ref stalls)\""
  eval "${side}_msg=\"$(head -1 "$work/$side.defrag.1.out")\""
  eval "${side}_full=$((full / 1048576))"
  eval "${side}_deleted=$deleted"
  eval "${side}_gone=$((gone / 1048576))"
  eval "${side}_gone_in_use=$((gone_in_use / 1048576))"
  eval "${side}_gone_after=$((gone_after / 1048576))"
  eval "${side}_gone_pct=$(echo "100 * $gone_after / $full" | bc -l | xargs printf '%.1f')"
  eval "${side}_past_after=$((past_after / 1048576))"
  eval "${side}_past_pct=$(echo "100 * $past_after / $full" | bc -l | xargs printf '%.1f')"
}

run_side etcd "$etcd_bin"
run_side skiff "$skiff_bin"

{
  echo "# Defragment under load: etcd 3.4 vs Skiff"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ); $(nproc) cores; one member each on loopback; $keys keys of"
  echo "256 B loaded, overwritten once and compacted; then $clients clients putting $rate/s for"
  echo "${seconds} s, \`etcdctl defrag\` at ${at} s; $repeat times, each after the same load without it (figures: median (each run)). Command: \`$invocation\`."
  echo
  echo "| | etcd | Skiff |"
  echo "|---|---|---|"
  echo "| defragment took (s) | $etcd_took | $skiff_took |"
  echo "| db size before / after (MiB) | $etcd_before / $etcd_after | $skiff_before / $skiff_after |"
  echo "| put p99 during defragment (ms) | $etcd_p99 | $skiff_p99 |"
  echo "| longest write stall during defragment (ms) | $etcd_slow | $skiff_slow |"
  echo "| the slowest put began, s after the defragment started | $etcd_slow_at | $skiff_slow_at |"
  echo "| put p99, same load without defragment (ms) | $etcd_ref_p99 | $skiff_ref_p99 |"
  echo "| slowest put, same load without defragment (ms) | $etcd_ref_slow | $skiff_ref_slow |"
  echo "| write stalls over 50 ms during the run with a defragment | $etcd_stalls | $skiff_stalls |"
  echo "| write stalls over 50 ms, same load without defragment | $etcd_ref_stalls | $skiff_ref_stalls |"
  echo "| after the load, before the delete: db size (MiB) | $etcd_full | $skiff_full |"
  echo "| 90% of the keys deleted ($etcd_deleted / $skiff_deleted), compacted: db size / in use (MiB) | $etcd_gone / $etcd_gone_in_use | $skiff_gone / $skiff_gone_in_use |"
  echo "| then defragmented: db size (MiB) | $etcd_gone_after | $skiff_gone_after |"
  echo "| db size after, as a share of before the delete (%) | $etcd_gone_pct | $skiff_gone_pct |"
  echo "| one put later, compacted at its revision and defragmented again: db size (MiB) | $etcd_past_after | $skiff_past_after |"
  echo "| the same, as a share of before the delete (%) | $etcd_past_pct | $skiff_past_pct |"
  echo
  echo "etcdctl said: etcd \`$etcd_msg\`; Skiff \`$skiff_msg\`."
} | tee "$out"
