#!/usr/bin/env bash
# A local 3-member cluster on loopback, as etcd's Procfile lays it out:
#   m1: clients 127.0.0.1:2379,  peers 127.0.0.1:2380
#   m2: clients 127.0.0.1:22379, peers 127.0.0.1:22380
#   m3: clients 127.0.0.1:32379, peers 127.0.0.1:32380
#
# Usage: scripts/cluster.sh start|stop|status|kill N|restart N
# Environment: SERVER_BIN (default: target/release/skiff, built if missing; any
# etcd-flag-compatible binary works, e.g. SERVER_BIN=/usr/bin/etcd), DATA_DIR
# (default: ./cluster-data), TOKEN (default: skiff-local).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR=${DATA_DIR:-$PWD/cluster-data}
TOKEN=${TOKEN:-skiff-local}
SERVER_BIN=${SERVER_BIN:-$PWD/target/release/skiff}
CLIENT_PORTS=(2379 22379 32379)
PEER_PORTS=(2380 22380 32380)
INITIAL=""
for i in 0 1 2; do
  INITIAL+="${INITIAL:+,}m$((i + 1))=http://127.0.0.1:${PEER_PORTS[$i]}"
done

start_member() {
  local i=$1 n=$(( $1 + 1 ))
  local state=new
  [ -d "$DATA_DIR/m$n" ] && state=existing
  mkdir -p "$DATA_DIR"
  "$SERVER_BIN" \
    --name "m$n" \
    --data-dir "$DATA_DIR/m$n" \
    --listen-client-urls "http://127.0.0.1:${CLIENT_PORTS[$i]}" \
    --advertise-client-urls "http://127.0.0.1:${CLIENT_PORTS[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${PEER_PORTS[$i]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${PEER_PORTS[$i]}" \
    --initial-cluster "$INITIAL" \
    --initial-cluster-token "$TOKEN" \
    --initial-cluster-state "$state" \
    >>"$DATA_DIR/m$n.log" 2>&1 &
  echo $! >"$DATA_DIR/m$n.pid"
  echo "m$n started (pid $(cat "$DATA_DIR/m$n.pid"), log $DATA_DIR/m$n.log)"
}

stop_member() {
  local n=$1 sig=${2:-TERM}
  local pidfile="$DATA_DIR/m$n.pid"
  [ -f "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  echo "m$n stopped"
}

endpoints() {
  local e=""
  for p in "${CLIENT_PORTS[@]}"; do e+="${e:+,}127.0.0.1:$p"; done
  echo "$e"
}

case "${1:-}" in
  start)
    if [ ! -x "$SERVER_BIN" ]; then cargo build --release --bin skiff; fi
    for i in 0 1 2; do start_member "$i"; done
    echo "endpoints: $(endpoints)"
    ;;
  stop)
    for n in 1 2 3; do stop_member "$n"; done
    ;;
  kill)
    stop_member "${2:?member number 1-3}" KILL
    ;;
  restart)
    n=${2:?member number 1-3}
    stop_member "$n"
    start_member $(( n - 1 ))
    ;;
  status)
    ETCDCTL_API=3 etcdctl --endpoints "$(endpoints)" endpoint status -w table
    ;;
  *)
    echo "usage: $0 start|stop|status|kill N|restart N" >&2
    exit 1
    ;;
esac
