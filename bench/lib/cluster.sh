# bench/lib/cluster.sh: cluster control and measurement for bench/compare.sh (sourced).
#
# Uses the caller's globals: members, work, eps, cluster, client_ports, peer_ports,
# bench_bin, and its function side_label (a side's name in progress lines); keeps the running members' PIDs in `pids` and background samplers in
# `samplers`. Every process it starts it stops by PID (cleanup on exit).
# The globals above are set by compare.sh, which sources this file:
# shellcheck shell=bash disable=SC2154

pids=()
samplers=()
cleanup() {
  for p in "${samplers[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}

start_cluster() { # datadir-name bin state
  local side=$1 bin=$2 state=$3
  pids=()
  for ((i = 0; i < members; i++)); do
    local n=m$((i + 1)) c=http://127.0.0.1:${client_ports[$i]} p=http://127.0.0.1:${peer_ports[$i]}
    "$bin" --name "$n" --data-dir "$work/data/$side/$n" \
      --listen-client-urls "$c" --advertise-client-urls "$c" \
      --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" \
      --initial-cluster "$cluster" --initial-cluster-state "$state" \
      --initial-cluster-token "bench-$side" >>"$work/logs/$side-$n.log" 2>&1 &
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
# Starts a fresh cluster (new data dirs) and waits for it; on failure writes
# $dir/$side.start_failed(+_logs) and returns 1.
start_fresh() { # dir side datadir-name bin
  local dir=$1 side=$2 name=$3 bin=$4
  rm -rf "$work/data/$name"; mkdir -p "$work/data/$name"
  echo "== $(side_label "$side"): starting $members member(s) ($(shown "$bin"), data $name)" >&2
  start_cluster "$name" "$bin" new
  if wait_serving 60; then return 0; fi
  echo "== $(side_label "$side"): cluster did not start serving within 60 s (logs in $work/logs)" >&2
  echo "did not start serving within 60 s" >"$dir/$side.start_failed"
  for ((i = 1; i <= members; i++)); do
    echo "  - m$i log, last lines: \`$(tail -n 2 "$work/logs/$name-m$i.log" | cut -c1-200 | tr '\n\`' " '")\`"
  done >"$dir/$side.start_failed_logs"
  stop_cluster
  return 1
}
# Crash (SIGKILL all members at once) and restart on the same data dirs; writes the
# seconds from start to serving, or "fail", to $dir/$side.$what.
# A clean stop would let the last members campaign without quorum while shutting down,
# inflating their terms and adding an election round; a crash measures recovery itself.
crash_restart() { # dir side datadir-name bin what
  local dir=$1 side=$2 name=$3 bin=$4 what=$5 t0 t1
  echo "== $(side_label "$side"): crash (SIGKILL all members) and restart" >&2
  stop_cluster KILL
  t0=$(date +%s.%N)
  start_cluster "$name" "$bin" new
  if wait_serving 600; then
    t1=$(date +%s.%N); awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}' >"$dir/$side.$what"
  else echo fail >"$dir/$side.$what"; fi
}

sum_members() { # proc-file awk-program: one figure of each running member, summed
  local sum=0 v
  for p in "${pids[@]}"; do
    v=$(awk "$2" "/proc/$p/$1" 2>/dev/null || echo 0)
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}
# shellcheck disable=SC2016 # an awk program, not shell
rss_kb() { sum_members status '/^VmRSS:/{print $2}'; } # VmRSS summed
start_sampler() { # file [interval_s]: keeps the peak of the members' summed RSS in file
  local f=$1 every=${2:-0.5}
  echo 0 >"$f"
  ( peak=0; while :; do s=$(rss_kb); if [ "$s" -gt "$peak" ]; then peak=$s; echo "$peak" >"$f"; fi; sleep "$every"; done ) &
  samplers+=($!)
}
stop_sampler() { # stops the most recently started sampler
  local p=${samplers[-1]}
  kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
  unset 'samplers[-1]'
}

clk_tck=$(getconf CLK_TCK)
# shellcheck disable=SC2016 # an awk program, not shell
members_cpu_ticks() { sum_members stat '{print $14 + $15}'; } # utime+stime summed
# One load generator run: $dir/$side.$id.{json,err,rc,cpu_s,gen_cpu_s}; with rss=1 also
# .rss_before (members' summed RSS just before) and .rss_peak (sampled every 0.2 s).
run_bench() { # dir side id globals sub [rss]
  local dir=$1 side=$2 id=$3 g=$4 s=$5 rss=${6:-0} rc=0 c0 c1 f="$1/$2.$3"
  if [ "$rss" = 1 ]; then rss_kb >"$f.rss_before"; start_sampler "$f.rss_peak" 0.2; fi
  c0=$(members_cpu_ticks)
  # The load generator's own CPU (user + system s) comes from GNU time, which reads the
  # child's rusage when it exits.
  # shellcheck disable=SC2086 # flags are word lists by design
  /usr/bin/time -f '%U %S' -o "$f.time" "$bench_bin" --endpoints "$eps" $g -w json $s >"$f.json" 2>"$f.err" || rc=$?
  c1=$(members_cpu_ticks)
  if [ "$rss" = 1 ]; then stop_sampler; fi
  echo "$rc" >"$f.rc"
  # CPU the members spent during this run (s): less noisy than wall time on a
  # shared machine, and the load generator's own CPU is not in it.
  awk -v a="$c0" -v b="$c1" -v t="$clk_tck" 'BEGIN{printf "%.2f", (b - a) / t}' >"$f.cpu_s"
  awk '/^[0-9.]+ [0-9.]+$/{printf "%.2f", $1 + $2; ok=1} END{if (!ok) print "missing"}' "$f.time" >"$f.gen_cpu_s"
  if [ "$first_pass" = 1 ]; then echo "- \`$id\`: \`skiff-bench --endpoints $eps $g ${s//"$work"/<work-dir>}\`" >>"$commands_md"; fi
  return 0
}
