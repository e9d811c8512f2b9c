#!/usr/bin/env bash
# The write stall of a rolling restart of 3 members, etcd 3.4 vs Skiff (issue 11).
#
# For each server: a fresh 3-member cluster on loopback; one writer puts keys in a loop
# (etcdctl, all three endpoints) while every member in turn is stopped with SIGTERM and
# started again (waiting until it is healthy, then 5 s, before the next). Printed: the
# longest gap between two acknowledged writes during the whole restart, and during the
# leader's restart. etcd 3.4's leader just stops, so the others wait an election
# timeout (1 s) before electing; Skiff's leader first hands leadership to a caught-up
# voter.
#
# Usage: bench/rolling_restart.sh   (SKIFF_BIN defaults to target/release/skiff, or
# target/debug/skiff when there is no release build; ETCD_BIN to etcd on the PATH).
# Uses ports 24600-24611 and a temporary directory; stops only the processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."

SKIFF_BIN=${SKIFF_BIN:-$PWD/target/release/skiff}
[ -x "$SKIFF_BIN" ] || SKIFF_BIN=$PWD/target/debug/skiff
ETCD_BIN=${ETCD_BIN:-$(command -v etcd || true)}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }

# run_one NAME BIN BASE_PORT: prints "NAME: longest stall X ms (leader restart: Y ms)".
run_one() {
  local name=$1 bin=$2 base=$3 dir=$WORK/$1
  mkdir -p "$dir"
  local initial="" eps="" i
  for i in 0 1 2; do
    initial+="${initial:+,}m$i=http://127.0.0.1:$((base + 2 * i + 1))"
    eps+="${eps:+,}127.0.0.1:$((base + 2 * i))"
  done
  local -a pid
  start() {
    local i=$1 state=$2
    "$bin" --name "m$i" --data-dir "$dir/m$i" \
      --listen-client-urls "http://127.0.0.1:$((base + 2 * i))" \
      --advertise-client-urls "http://127.0.0.1:$((base + 2 * i))" \
      --listen-peer-urls "http://127.0.0.1:$((base + 2 * i + 1))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((base + 2 * i + 1))" \
      --initial-cluster "$initial" --initial-cluster-state "$state" \
      --initial-cluster-token "rolling-$name" >>"$dir/m$i.log" 2>&1 &
    pid[$i]=$!
    PIDS+=("$!")
  }
  healthy() {
    local i=$1 n
    for n in $(seq 1 300); do
      if curl -fs "http://127.0.0.1:$((base + 2 * i))/health" | grep -q true; then return 0; fi
      sleep 0.1
    done
    echo "m$i of $name never became healthy" >&2
    return 1
  }
  leader_index() {
    local i
    for i in 0 1 2; do
      if etcdctl --endpoints="127.0.0.1:$((base + 2 * i))" endpoint status -w json 2>/dev/null |
        grep -Eq '"member_id":([0-9]+).*"leader":\1[,}]'; then
        echo "$i"
        return
      fi
    done
    echo -1
  }
  for i in 0 1 2; do start "$i" new; done
  for i in 0 1 2; do healthy "$i"; done
  sleep 6
  local leader
  leader=$(leader_index)
  # The writer: one acknowledged put per line, with its time in ms.
  (
    n=0
    while [ ! -e "$dir/stop" ]; do
      n=$((n + 1))
      if ETCDCTL_API=3 etcdctl --endpoints="$eps" --command-timeout=10s put "k$n" v >/dev/null 2>&1; then
        now_ms
      fi
    done
  ) >"$dir/acks" &
  local writer=$!
  PIDS+=("$writer")
  sleep 2
  local lstart=0 lend=0
  for i in 0 1 2; do
    [ "$i" = "$leader" ] && lstart=$(now_ms)
    kill -TERM "${pid[$i]}"
    wait "${pid[$i]}" 2>/dev/null || true
    start "$i" existing
    healthy "$i"
    [ "$i" = "$leader" ] && lend=$(now_ms)
    sleep 5
  done
  touch "$dir/stop"
  wait "$writer" 2>/dev/null || true
  local all lead
  all=$(awk 'NR > 1 { g = $1 - p; if (g > m) m = g } { p = $1 } END { print m + 0 }' "$dir/acks")
  lead=$(awk -v s="$lstart" -v e="$lend" '$1 >= s && $1 <= e + 2000 && NR > 1 && p >= s - 2000 { g = $1 - p; if (g > m) m = g } { p = $1 } END { print m + 0 }' "$dir/acks")
  echo "$name: $(wc -l <"$dir/acks") writes; longest stall ${all} ms (around the leader's restart: ${lead} ms)"
  for i in 0 1 2; do kill -TERM "${pid[$i]}" 2>/dev/null || true; done
  for i in 0 1 2; do wait "${pid[$i]}" 2>/dev/null || true; done
}

echo "rolling restart of 3 members, SIGTERM then start, one etcdctl writer (election timeout 1 s)"
if [ -n "$ETCD_BIN" ]; then run_one etcd "$ETCD_BIN" 24600; else echo "etcd: not installed"; fi
run_one skiff "$SKIFF_BIN" 24606
