# bench/lib/report.sh: the results table and RESULTS.md for bench/compare.sh (sourced
# after the runs).
#
# Reads only the per-run files under $work (r1..rN for the per-round rows, keys/ for the
# one-round key-count rows). Each figure is the median over the rounds whose run
# succeeded; the "per round" columns list every round's value ("–" = failed, see
# Failures), so the spread is visible. A figure that could not be measured is printed as
# the reason, never as a number.
# The globals (work, rounds, workloads, sizes, ...) are set by compare.sh, which sources
# this file:
# shellcheck shell=bash disable=SC2154

fmt() { # number digits
  awk -v x="$1" -v d="$2" 'BEGIN{printf "%.*f", d, x}'
}
median() { # numbers... -> the median (the mean of the two middle ones for an even count)
  printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1; s[NR] = $0}
    END { if (NR % 2) print s[(NR + 1) / 2];
          else { m = (v[NR / 2] + v[NR / 2 + 1]) / 2; x = sprintf("%.3f", m); sub(/\.?0+$/, "", x); print x } }'
}

# --- value getters: dir side args... -> a number, or the reason there is none ---------
no_side() { # dir side: prints the reason and succeeds when the side has no figures
  if [ "$2" = skiff ] && [ -z "$skiff_bin" ]; then echo "not run (no skiff binary)"; return 0; fi
  if [ -e "$1/$2.start_failed" ]; then echo "failed (cluster $(cat "$1/$2.start_failed"))"; return 0; fi
  return 1
}
v_json() { # dir side id jq-expr
  local dir=$1 side=$2 id=$3 expr=$4 f="$1/$2.$3.json" rc why
  no_side "$dir" "$side" && return
  rc=$(cat "$dir/$side.$id.rc" 2>/dev/null || echo missing)
  if [ "$rc" != 0 ]; then
    why=$(jq -r '[.errors_by_code|to_entries[]|"\(.value.count) \(.key)"]|join(", ")' "$f" 2>/dev/null || head -c 120 "$dir/$side.$id.err")
    echo "failed (exit $rc${why:+: $why})"; return
  fi
  jq -r "$expr" "$f"
}
per_k() { # dir side id cpu-file-suffix -> CPU ms per 1000 successful requests
  local n c; n=$(v_json "$1" "$2" "$3" '.requests')
  [[ $n =~ ^[0-9]+$ ]] || { echo "$n"; return; }
  c=$(cat "$1/$2.$3.$4" 2>/dev/null || echo missing)
  [[ $c =~ ^[0-9.]+$ ]] || { echo "not measured ($c)"; return; }
  fmt "$(awk -v c="$c" -v n="$n" 'BEGIN{print (n > 0 ? c * 1e6 / n : 0)}')" 1
}
v_cpuk() { per_k "$1" "$2" "$3" cpu_s; }      # members' CPU
v_gencpuk() { per_k "$1" "$2" "$3" gen_cpu_s; } # the load generator's own CPU
v_cpu_per_s() { # dir side id -> members' CPU ms per second of the run
  local t; t=$(v_json "$1" "$2" "$3" '.total_s')
  [[ $t =~ ^[0-9.]+$ ]] || { echo "$t"; return; }
  fmt "$(awk -v c="$(cat "$1/$2.$3.cpu_s")" -v t="$t" 'BEGIN{print (t > 0 ? c * 1000 / t : 0)}')" 0
}
v_file() { # dir side file factor digits -> the file's number x factor
  no_side "$1" "$2" && return
  local v; v=$(cat "$1/$2.$3" 2>/dev/null || echo missing)
  if [[ $v =~ ^[0-9.]+$ ]]; then fmt "$(awk -v v="$v" -v k="$4" 'BEGIN{print v*k}')" "$5"; else echo "failed ($v)"; fi
}
v_run_file() { # dir side id file factor digits: v_file, but only when run id succeeded
  local ok; ok=$(v_json "$1" "$2" "$3" '.requests')
  [[ $ok =~ ^[0-9]+$ ]] || { echo "$ok"; return; }
  v_file "$1" "$2" "$3.$4" "$5" "$6"
}
v_growth() { # dir side id -> (peak RSS during the run - RSS before it), MiB
  local ok; ok=$(v_json "$1" "$2" "$3" '.requests')
  [[ $ok =~ ^[0-9]+$ ]] || { echo "$ok"; return; }
  awk -v p="$(cat "$1/$2.$3.rss_peak")" -v b="$(cat "$1/$2.$3.rss_before")" 'BEGIN{d=p-b; if (d<0) d=0; printf "%.1f", d/1024}'
}

# --- rows ---------------------------------------------------------------------------------
mib=0.0009765625
row_dirs=()
collect() { # side getter args... -> _med (median, or the first reason) and _all (per round)
  local side=$1 d v first="" nums=() vals=()
  shift
  for d in "${row_dirs[@]}"; do
    v=$("$1" "$work/$d" "$side" "${@:2}")
    if [[ $v =~ ^-?[0-9]+(\.[0-9]+)?$ ]]; then nums+=("$v"); vals+=("$v")
    else vals+=("–"); [ -n "$first" ] || first=$v; fi
  done
  if [ ${#nums[@]} -gt 0 ]; then _med=$(median "${nums[@]}"); else _med=$first; fi
  _all=$(printf ' / %s' "${vals[@]}"); _all=${_all# / }
}
ratio() { # etcd second
  if [[ $1 =~ ^[0-9.]+$ && $2 =~ ^[0-9.]+$ ]] && [ "$(awk -v a="$1" 'BEGIN{print (a>0)}')" = 1 ]; then
    fmt "$(awk -v a="$1" -v b="$2" 'BEGIN{print b/a}')" 2
  else echo "–"; fi
}
rows=""
row() { # label better getter args...
  local label=$1 better=$2 e ea s sa; shift 2
  collect etcd "$@"; e=$_med ea=$_all
  collect skiff "$@"; s=$_med sa=$_all
  rows+="| $label | $better | $e | $s | $(ratio "$e" "$s") | $ea | $sa |"$'\n'
}
q_rps='.requests_per_s|.*10|round/10'
q_p50='.percentiles[]|select(.percent==50)|.latency_s*1000|.*1000|round/1000'
q_p99='.percentiles[]|select(.percent==99)|.latency_s*1000|.*1000|round/1000'

make_rows() {
  local w id desc n
  row_dirs=(); for ((k = 1; k <= rounds; k++)); do row_dirs+=("r$k"); done
  [ "$rounds" -gt 0 ] && make_round_rows
  row_dirs=(keys)
  row "one round: load $keys_a keys (1000 clients, 100 conns): requests/s" higher v_json keys-a "$q_rps"
  row "one round: RSS after loading $keys_a keys, summed (MiB)" lower v_file rss_keys_a "$mib" 1
  row "one round: snapshot save with $keys_a keys (etcdctl, from one member): time (s)" lower v_file snapshot_s_keys_a 1 2
  row "one round: snapshot save with $keys_a keys: members' peak RSS growth while streaming (MiB)" lower v_file rss_snap_growth_keys_a "$mib" 1
  row "one round: snapshot save with $keys_a keys: file size (MiB)" lower v_file snapshot_bytes_keys_a 0.00000095367431640625 1
  row "one round: restart after a crash with $keys_a keys: start to serving (s)" lower v_file restart_keys_a 1 2
  row "one round: load $((keys_b - keys_a)) more keys (to $keys_b): requests/s" higher v_json keys-b "$q_rps"
  row "one round: RSS after loading $keys_b keys, summed (MiB)" lower v_file rss_keys_b "$mib" 1
  row "one round: restart after a crash with $keys_b keys: start to serving (s)" lower v_file restart_keys_b 1 2
}

make_round_rows() {
  local w id desc n
  for w in "${workloads[@]}"; do
    IFS='|' read -r id desc _ <<<"$w"
    if [ "$id" = watch ]; then
      row "$desc: event latency p50 (ms)" lower v_json "$id" "$q_p50"
      row "$desc: event latency p99 (ms)" lower v_json "$id" "$q_p99"
      row "$desc: load generator's CPU per 1000 events (ms)" lower v_gencpuk "$id"
      continue
    fi
    row "$desc: requests/s" higher v_json "$id" "$q_rps"
    row "$desc: p50 (ms)" lower v_json "$id" "$q_p50"
    row "$desc: p99 (ms)" lower v_json "$id" "$q_p99"
    row "$desc: members' CPU per 1000 requests (ms)" lower v_cpuk "$id"
    row "$desc: load generator's CPU per 1000 requests (ms)" lower v_gencpuk "$id"
  done
  row "peak RSS during the workloads, $members member(s) summed (MiB)" lower v_file rss_peak "$mib" 1
  row "load $keys keys (1000 clients, 100 conns): requests/s" higher v_json load "$q_rps"
  row "RSS after loading $keys keys, $members member(s) summed (MiB)" lower v_file rss_loaded "$mib" 1
  row "snapshot save with $keys keys (etcdctl, from one member): time (s)" lower v_file snapshot_s 1 2
  row "snapshot save with $keys keys: members' peak RSS growth while streaming (MiB)" lower v_file rss_snap_growth "$mib" 1
  row "snapshot save with $keys keys: file size (MiB)" lower v_file snapshot_bytes 0.00000095367431640625 1
  row "restart after a crash with $keys keys: start to serving (s)" lower v_file restart_s 1 2
  for n in "$watchers_a" "$watchers_b"; do
    local wd="$n watchers (100 streams, 1000 per key), $cost_puts puts at 20/s"
    row "$wd: members' peak RSS with the watchers, summed (MiB)" lower v_run_file "watchers-$n" rss_peak "$mib" 1
    row "$wd: members' RSS growth over the fresh cluster (MiB)" lower v_growth "watchers-$n"
    row "$wd: event latency p99 (ms)" lower v_json "watchers-$n" "$q_p99"
  done
  for n in "$leases_a" "$leases_b"; do
    row "$n leases granted (lease-grant, 100 clients, 10 conns): grants/s" higher v_json "grant-$n" "$q_rps"
    local ld="$n leases, each kept alive once at $((n / lease_secs))/s (100 streams, 10 conns)"
    row "$ld: keep-alives/s" higher v_json "leases-$n" "$q_rps"
    row "$ld: members' CPU per second (ms)" lower v_cpu_per_s "leases-$n"
    row "$ld: members' CPU per 1000 keep-alives (ms)" lower v_cpuk "leases-$n"
    row "$ld: load generator's CPU per 1000 keep-alives (ms)" lower v_gencpuk "leases-$n"
    row "$ld: members' peak RSS with the leases, summed (MiB)" lower v_run_file "leases-$n" rss_peak "$mib" 1
  done
}

# The scaling plot: medians of requests/s by clients, both sides.
make_plot() {
  local csv="$work/scaling.csv" e side label wl c id
  echo "system,workload,clients,requests_per_s" >"$csv"
  row_dirs=(); for ((k = 1; k <= rounds; k++)); do row_dirs+=("r$k"); done
  for side in etcd skiff; do
    label="etcd 3.4"; [ "$side" = skiff ] && label=$second_label
    for e in "${scaling[@]}"; do
      IFS='|' read -r wl c id <<<"$e"
      collect "$side" v_json "$id" "$q_rps"
      echo "$label,$wl,$c,$_med" >>"$csv"
    done
  done
  plot_md=""
  if "$bench_bin" plot --input "$csv" --out "$plot" --title "requests/s vs clients (median of $(plural "$rounds" round), 256 B values)" 2>"$work/plot.err"; then
    local link; link=$(shown "$plot"); [ "$(dirname "$plot")" = "$(dirname "$out")" ] && link=$(basename "$plot")
    plot_md="![requests/s vs clients, etcd 3.4 and $second_label, put and linearizable range]($link)"
  else
    plot_md="(no plot: skiff-bench plot failed: $(head -c 200 "$work/plot.err" | tr '\n' ' '))"
  fi
}

failures() {
  local d side f name
  for d in $(cd "$work" && ls -d r* keys 2>/dev/null); do
    for side in etcd skiff; do
      name=etcd; [ "$side" = skiff ] && name=$second_label
      if [ -e "$work/$d/$side.start_failed" ]; then
        echo "- $name ($d): the cluster $(cat "$work/$d/$side.start_failed")"
        cat "$work/$d/$side.start_failed_logs"
      fi
      for f in "$work/$d/$side".*.rc; do
        [ -e "$f" ] || continue
        [ "$(cat "$f")" = 0 ] || echo "- $name ($d) $(basename "$f" .rc | cut -d. -f2-): exit $(cat "$f"): $(head -c 300 "${f%.rc}.err" | tr '\n' ' ')"
      done
    done
  done
}

write_report() {
  make_rows
  if [ "$rounds" -gt 0 ]; then
    make_plot
  else
    plot_md="(--keys-only: only the key-count rows were run; no rounds, no plot.)"
  fi
  local errors_note order=""
  errors_note=$(failures)
  for ((k = 1; k <= rounds; k++)); do order+="${order:+; }round $k: $(sides_of_round "$k" | sed 's/ /, then /; s/skiff/second side/')"; done
  mkdir -p "$(dirname "$out")"
  cat >"$out" <<MD
# etcd vs $second_label: benchmark results

Written by \`$invocation\` on $date_utc. Every figure below comes from that one
run; rerun the script to refresh it.

## Machine

| | |
|---|---|
| CPU | $cpu, $cores cores |
| memory | $mem_gib GiB |
| kernel | $kernel |
| data-dir filesystem | $fs |
| fdatasync latency (measured at start) | $fsync_line |
| load average (1/5/15 min) | start $load_start, end $load_end |

The machine is shared: other agents' builds were running during the run (see the load
average), so absolute figures are noisy; compare the ratios, measured back to back. The
load generator runs on the same cores as the members and takes a share of them: with
1000 clients it is part of what limits throughput, equally for both sides.

## Versions

- etcd: $etcd_version ($(shown "$etcd_bin"))
- $second_label: $skiff_version
- load generator: $bench_version, built with $rustc_version

## Results

$members member(s) on loopback each side (clients 127.0.0.1:${client_ports[0]}.., peers :${peer_ports[0]}..),
started with the same etcd flags, data dirs on the same filesystem, one cluster after the
other. Key 8 B, value 256 B unless a row says otherwise. $(plural "$rounds" round), the order
alternating ($order). Each figure is the **median** of the rounds; the last two columns
give every round's value (– = that run failed, see Failures). Rows starting "one round"
were run once per side, after the rounds. Ratio = $second_label ÷ etcd of the medians
(above 1 is better for the second column where higher is better, below 1 where lower is
better).

$plot_md

| workload and metric | better | etcd 3.4 | $second_label | ratio | etcd per round | $second_label per round |
|---|---|---|---|---|---|---|
$rows
${errors_note:+### Failures (a cluster that did not start, or a run that exited non-zero: errors above --max-error-rate 0, or no connection)

$errors_note
}
## Commands

Each member: \`BIN --name mN --data-dir DIR --listen-client-urls http://127.0.0.1:PORT
--advertise-client-urls http://127.0.0.1:PORT --listen-peer-urls http://127.0.0.1:PEER
--initial-advertise-peer-urls http://127.0.0.1:PEER --initial-cluster $cluster
--initial-cluster-state new --initial-cluster-token bench-SIDE\` (a restart reuses the
same command on the existing data dirs). Per round and side: one fresh cluster for the
workloads, the $keys-key load, snapshot and restart; a fresh one for each watcher and
lease count. The key-count rows use one more fresh cluster per side.

Range keys: \`etcdctl --endpoints $eps put benchkey <256 B value>\` (and benchkey4k,
benchkey64k with 4 KiB and 64 KiB values).
Snapshot: after loading the keys, \`etcdctl snapshot save\` from the first member; its RSS
growth is the peak of the members' summed VmRSS (sampled every 0.1 s while it streams)
minus the sum just before.
Restart: after loading the keys, all members are killed at once (SIGKILL) and
started again with the same command. Serving = first moment a linearizable range through
all members succeeds (probe: \`skiff-bench --conns $members --total $members --request-timeout
0.25 range serving-probe\`, repeated every 50 ms), so the figure includes a new process
of the probe each time (a few ms) and an election.
Members' CPU: utime + stime of the member processes (from /proc) over each run,
per 1000 successful requests (or per second of the run); it excludes the load generator,
which shares the same cores. Load generator's CPU: its own user + system time over the
whole process (GNU time), so it includes connecting and setting up (opening watchers,
keep-alive streams).
RSS: VmRSS of the member processes summed, sampled every 0.5 s during the workloads
(peak) and once 2 s after loading keys; for the watcher and lease rows sampled every
0.2 s during that run (peak; growth = peak minus the sum just before the run).
Watchers: each count on a fresh cluster, 100 watch streams over 10 conns; watcher j watches key j mod (watchers/1000),
so each put fans out to 1000 watchers whatever the total (100k watchers on one key would
make each put 100k events, which measures event fan-out, not holding watchers).
Leases: each count on a fresh cluster, granted first (\`lease-grant\`, TTL 600 s, 100
clients; its own row), then \`lease-keepalive --ids-file\` keeps each alive once at
leases/$lease_secs per second (every lease once in $lease_secs s; 20 s in a full run, the
cadence of clients renewing TTL-60 leases every TTL/3); where the achieved
keep-alives/s falls short of that, the members were saturated and the per-second CPU is
all they could give.
fdatasync: \`skiff-bench fdatasync --dir <work-dir> --count 300\`.

Load generator runs (each with \`-w json\`, the same for both sides):

$(cat "$commands_md")
MD
  if [ -s "${defrag_md:-}" ]; then
    # bench/defrag.sh's own report, one heading level down, its command made repo-relative.
    {
      echo
      echo "## Defragment under load"
      sed '1d; s/^# /### /' "$defrag_md"
    } >>"$out"
  fi
}
