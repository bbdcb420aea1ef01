#!/usr/bin/env bash
# Side-by-side throughput benchmark (issue 6): meterd, collectd's statsd plugin and Etsy statsd
# 0.9.0 driven by meterd-load with the same workloads and the same socket receive buffer.
#
#   benches/throughput.sh --smoke            seconds, tiny rates, meterd (plus peers already
#                                            installed); exits non-zero if meterd lost or
#                                            miscounted anything or the script broke. For CI.
#   benches/throughput.sh [--out FILE] ...   the full run (many minutes): installs the peers,
#                                            raises net.core.rmem_default/rmem_max for them
#                                            (restored on exit), prints a markdown table and
#                                            appends it with the command and machine facts to FILE.
#
# Per peer and workload it reports: CPU ns per line at 1M lines/s offered (utime+stime from
# /proc/PID/stat over the run ÷ lines processed), lines/s processed when flooded, the highest
# offered rate held at < 0.1 % loss (log bisection over short runs) and resident memory. Loss is
# 1 − processed ÷ sent, with "sent" from meterd-load's totals and "processed" from the peer itself:
# meterd's /metrics (meterd_lines_received_total), statsd's sumlog lines (metrics_received),
# collectd's CSV files (counter totals and timer counts, scaled to lines). Each run is
# cross-checked with the kernel's drop counters (/proc/net/udp drops for the port, /proc/net/snmp
# RcvbufErrors). The load generator runs on CPU 0, the aggregator on CPU 1; only 127.0.0.1.
# The bookkeeping lives in benches/throughput_helper.py (python3 is on every machine of this kind).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: benches/throughput.sh [--smoke] [--out FILE] [options]
  --smoke              seconds-long check for CI (meterd exact, peers only if installed)
  --out FILE           append the results (markdown) to FILE
  --peers LIST         meterd,collectd,statsd (default all three)
  --workloads LIST     plain,dogstatsd,mixed (default all three; collectd runs plain only)
  --rcvbuf BYTES       socket receive buffer of every peer (default 8388608)
  --run-secs N         length of each measured run (default 11: spans a 10 s flush)
  --steps N            bisection steps of the held-rate search (default 6)
  --cpu-rate N         offered rate of the CPU measurement (default 1000000)
  --lo-rate N          lowest rate the search tries (default 20000)
  --meterd-readers N   meterd's [ingest] readers (default 1: it gets one core)
  --meterd-ingest LINE a line for meterd's [ingest] table, e.g. 'read_coalesce = "20ms"'
                       (repeatable)
  --nice N             run the generator and the aggregators at this nice value, and give the
                       script's scheduler autogroup the same (restored on exit: with
                       sched_autogroup a process's nice only counts within its session), so that
                       other work on a shared machine does not take their cores (default 0)
  --perf               record `perf record -g` of meterd during its flood runs
  --keep               keep the work directory
EOF
}

SMOKE=0
OUT=""
PEERS="meterd,collectd,statsd"
WORKLOADS="plain,dogstatsd,mixed"
RCVBUF=8388608
RUN_SECS=11
STEPS=6
CPU_RATE=1000000
LO_RATE=20000
READERS=1
INGEST_LINES=()
PERF=0
NICE=0
KEEP=0
LOAD_CPU=0
PEER_CPU=1
ARGV=("$0" "$@")
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --out) OUT="$2"; shift ;;
    --peers) PEERS="$2"; shift ;;
    --workloads) WORKLOADS="$2"; shift ;;
    --rcvbuf) RCVBUF="$2"; shift ;;
    --run-secs) RUN_SECS="$2"; shift ;;
    --steps) STEPS="$2"; shift ;;
    --cpu-rate) CPU_RATE="$2"; shift ;;
    --lo-rate) LO_RATE="$2"; shift ;;
    --meterd-readers) READERS="$2"; shift ;;
    --meterd-ingest) INGEST_LINES+=("$2"); shift ;;
    --perf) PERF=1 ;;
    --nice) NICE="$2"; shift ;;
    --keep) KEEP=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "throughput.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
for n in "$RCVBUF" "$RUN_SECS" "$STEPS" "$CPU_RATE" "$LO_RATE" "$READERS"; do
  [[ $n =~ ^[0-9]+$ ]] || { echo "throughput.sh: $n is not a number" >&2; exit 2; }
done
(( RUN_SECS >= 1 && RUN_SECS <= 120 )) || { echo "throughput.sh: --run-secs must be 1..120" >&2; exit 2; }
(( STEPS <= 20 )) || { echo "throughput.sh: --steps must be at most 20" >&2; exit 2; }
[[ $NICE =~ ^-?[0-9]+$ ]] && (( NICE >= -20 && NICE <= 19 )) || { echo "throughput.sh: --nice must be -20..19" >&2; exit 2; }
if (( $(nproc) < 2 )); then PEER_CPU=0; fi

ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
PEERS_DIR="$ROOT/../shared/bench-peers"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/meterd-bench.XXXXXX)
SHM=$(mktemp -d /dev/shm/meterd-bench.XXXXXX)
RECORDS="$WORK/runs.jsonl"
PIDS=()
SYSCTL_SAVED=""
AUTOGROUP_SAVED=""
PEER_PID=""

log() { printf '== %s\n' "$*" >&2; }

stop_pid() { # PID: SIGTERM, up to 30 s for a final flush, then SIGKILL
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

cleanup() {
  local rc=$? p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  if [[ -n $AUTOGROUP_SAVED ]]; then
    echo "$AUTOGROUP_SAVED" >/proc/$$/autogroup 2>/dev/null || echo "throughput.sh: could not restore the autogroup nice $AUTOGROUP_SAVED" >&2
  fi
  if [[ -n $SYSCTL_SAVED ]]; then
    # shellcheck disable=SC2086
    sysctl -q -w $SYSCTL_SAVED >/dev/null || echo "throughput.sh: could not restore $SYSCTL_SAVED" >&2
  fi
  rm -rf "$SHM"
  if [[ $KEEP == 1 ]]; then echo "throughput.sh: work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# The measurement helper (benches/throughput_helper.py): snapshots, runs, drains, flush waits, loss,
# search, exactness, tables.
BENCH=(python3 "$ROOT/benches/throughput_helper.py")

free_port() { # udp|tcp: a port free on 127.0.0.1 right now
  "${BENCH[@]}" free-port "$1"
}

rcvbuf_of() { # PORT: the receive buffer the kernel gave the socket (ss skmem rb)
  ss -uamn "sport = :$1" 2>/dev/null | grep -o 'rb[0-9]*' | head -1 | tr -d rb || true
}

# ---------------------------------------------------------------------------------------------
# Binaries: copied so that a rebuild by someone else cannot swap them mid-run.
log "building release binaries (cargo build --release --workspace --bins)"
(cd "$ROOT" && cargo build --release --workspace --bins --quiet)
cp "$TARGET_DIR/release/meterd" "$TARGET_DIR/release/meterd-load" "$WORK/"
LOAD="$WORK/meterd-load"

PORT=$(free_port udp)
HPORT=$(free_port tcp)

start_meterd() { # FLUSH_OUT: console JSON sink output
  cat >"$WORK/meterd.toml" <<EOF
interval = "10s"
[ingest]
statsd_udp = ["127.0.0.1:$PORT"]
readers = $READERS
# The kernel doubles SO_RCVBUF(FORCE) requests: half of RCVBUF gives a socket buffer of RCVBUF,
# the same as the peers get from net.core.rmem_default.
read_buffer_bytes = $((RCVBUF / 2))
$(printf '%s\n' "${INGEST_LINES[@]}")
[http]
listen = "127.0.0.1:$HPORT"
[[sinks]]
type = "console"
format = "json"
EOF
  nice -n "$NICE" taskset -c "$PEER_CPU" "$WORK/meterd" --config "$WORK/meterd.toml" >"$1" 2>>"$WORK/meterd.log" &
  PEER_PID=$!
  PIDS+=("$PEER_PID")
  "${BENCH[@]}" bound --port "$PORT" --pid "$PEER_PID"
  "${BENCH[@]}" http --url "http://127.0.0.1:$HPORT/metrics" --pid "$PEER_PID"
  PEER_SOURCE="http://127.0.0.1:$HPORT/metrics"
  PEER_INTERVAL=10
}

start_collectd() { # INTERVAL
  local dir="$WORK/collectd" csv="$SHM/collectd-csv"
  rm -rf "$dir" "$csv"
  mkdir -p "$dir" "$csv"
  sed -e "s#@VARDIR@#$dir#g" -e "s#^Interval .*#Interval $1#" -e "s#Port \"8125\"#Port \"$PORT\"#" \
    -e "s#DataDir \".*\"#DataDir \"$csv\"#" "$PEERS_DIR/collectd.conf" >"$dir/collectd.conf"
  nice -n "$NICE" taskset -c "$PEER_CPU" collectd -C "$dir/collectd.conf" -f >"$dir/stdout.log" 2>&1 &
  PEER_PID=$!
  PIDS+=("$PEER_PID")
  "${BENCH[@]}" bound --port "$PORT" --pid "$PEER_PID"
  PEER_SOURCE="$csv/bench/statsd"
  PEER_INTERVAL=$1
}

start_statsd() { # DIR INTERVAL_MS
  local dir=$1
  rm -f "$dir/sumlog.jsonl"
  cp "$PEERS_DIR/sumlog.js" "$dir/sumlog.js"
  sed -e "s#port: 8125#port: $PORT#" -e "s#mgmt_port: 8126#mgmt_port: $(free_port tcp)#" \
    -e "s#flushInterval: [0-9]*#flushInterval: $2#" "$PEERS_DIR/statsd-config.js" >"$dir/statsd-config.js"
  (cd "$dir" && exec nice -n "$NICE" taskset -c "$PEER_CPU" node node_modules/statsd/stats.js statsd-config.js >"$dir/stdout.log" 2>&1) &
  PEER_PID=$!
  PIDS+=("$PEER_PID")
  "${BENCH[@]}" bound --port "$PORT" --pid "$PEER_PID"
  PEER_SOURCE="$dir/sumlog.jsonl"
  PEER_INTERVAL=$(( $2 / 1000 ))
}

peer_args() { # the arguments bench.py needs about the running peer
  echo --peer "$1" --pid "$PEER_PID" --port "$PORT" --source "$PEER_SOURCE" --interval "$PEER_INTERVAL" \
    --records "$RECORDS" --work "$WORK" --load "$LOAD" --load-cpu "$LOAD_CPU" --nice "$NICE"
}

has_collectd() { command -v collectd >/dev/null 2>&1 && [[ -e /usr/lib/collectd/statsd.so ]]; }

# ---------------------------------------------------------------------------------------------
if [[ $SMOKE == 1 ]]; then
  # meterd: plain at 20k lines/s for 2 s, dogstatsd and mixed (its own prefix: its names would
  # be plain's) for 1 s each; nothing may be lost, and the
  # flushed counter sums and timer counts must equal the totals series by series.
  log "smoke: meterd on 127.0.0.1:$PORT"
  start_meterd "$WORK/meterd-flush.jsonl"
  # shellcheck disable=SC2046
  "${BENCH[@]}" run $(peer_args meterd) --workload plain --phase smoke-plain --target 20000 -- \
    --rate 20000 --duration 2 >"$WORK/smoke-plain.json"
  # shellcheck disable=SC2046
  "${BENCH[@]}" run $(peer_args meterd) --workload dogstatsd --phase smoke-dogstatsd --target 20000 -- \
    --rate 20000 --duration 1 --series 20000 >"$WORK/smoke-dogstatsd.json"
  # shellcheck disable=SC2046
  "${BENCH[@]}" run $(peer_args meterd) --workload mixed --phase smoke-mixed --target 20000 -- \
    --rate 20000 --duration 1 --prefix mixed >"$WORK/smoke-mixed.json"
  stop_pid "$PEER_PID"
  fail=0
  "${BENCH[@]}" smoke-meterd "$WORK/smoke-plain.json" "$WORK/smoke-dogstatsd.json" \
    "$WORK/smoke-mixed.json" || fail=1
  if "${BENCH[@]}" exact --flush "$WORK/meterd-flush.jsonl" \
    "$WORK/totals-meterd-plain-smoke-plain.json" "$WORK/totals-meterd-dogstatsd-smoke-dogstatsd.json" \
    "$WORK/totals-meterd-mixed-smoke-mixed.json" \
    >"$WORK/exact.json"; then
    log "smoke: meterd flushed exactly what was sent: $(cat "$WORK/exact.json")"
  else
    log "smoke: meterd's flush differs from the totals: $(cat "$WORK/exact.json")"
    fail=1
  fi
  # Peers only if already installed (no installs, no sysctl changes), with 1 s flushes.
  smoke_peer() { # NAME: the peer must have processed most of a tiny run
    # shellcheck disable=SC2046
    "${BENCH[@]}" run $(peer_args "$1") --workload plain --phase smoke-plain --target 20000 -- \
      --rate 20000 --duration 1 >"$WORK/smoke-$1.json"
    stop_pid "$PEER_PID"
    "${BENCH[@]}" smoke-peer "$WORK/smoke-$1.json" "$1" || fail=1
  }
  if [[ ,$PEERS, == *,collectd,* ]] && has_collectd; then
    start_collectd 1
    smoke_peer collectd
  fi
  if [[ ,$PEERS, == *,statsd,* && -n ${METERD_BENCH_STATSD_DIR:-} && -e ${METERD_BENCH_STATSD_DIR:-}/node_modules/statsd/stats.js ]]; then
    start_statsd "$METERD_BENCH_STATSD_DIR" 1000
    smoke_peer statsd
  fi
  if [[ $fail != 0 ]]; then
    log "smoke: FAILED (work directory kept: $WORK)"
    KEEP=1
    exit 1
  fi
  log "smoke: ok"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# Full run.
[[ $(id -u) == 0 ]] || { echo "throughput.sh: the full run needs root (sysctl, apt-get)" >&2; exit 1; }
START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)
if ! git -C "$ROOT" diff --quiet HEAD -- src tools Cargo.toml Cargo.lock 2>/dev/null; then COMMIT="$COMMIT + uncommitted changes"; fi

if [[ ,$PEERS, == *,collectd,* ]] && ! has_collectd; then
  log "installing collectd-core"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends collectd-core >/dev/null
fi
STATSD_DIR="$WORK/statsd"
if [[ ,$PEERS, == *,statsd,* ]]; then
  log "installing statsd 0.9.0 into $STATSD_DIR"
  mkdir -p "$STATSD_DIR"
  (cd "$STATSD_DIR" && npm install --no-audit --no-fund --silent statsd@0.9.0 >/dev/null)
fi

if [[ $NICE != 0 && -w /proc/$$/autogroup ]]; then
  AUTOGROUP_SAVED=$(sed -n 's/.* nice \(-\{0,1\}[0-9]*\)$/\1/p' /proc/$$/autogroup)
  echo "$NICE" >/proc/$$/autogroup
  log "scheduler autogroup nice $NICE (was $AUTOGROUP_SAVED; restored on exit)"
fi

# The same receive buffer for everyone: the peers set none and get rmem_default.
SYSCTL_SAVED="net.core.rmem_default=$(sysctl -n net.core.rmem_default) net.core.rmem_max=$(sysctl -n net.core.rmem_max)"
log "socket receive buffer $RCVBUF bytes for all (was: $SYSCTL_SAVED; restored on exit)"
sysctl -q -w net.core.rmem_default="$RCVBUF" net.core.rmem_max="$RCVBUF" >/dev/null

declare -A RB EXACT
for w in ${WORKLOADS//,/ }; do
  case $w in
    plain | mixed) warm=20000 ;;
    dogstatsd) warm=200000 ;;
    *) echo "throughput.sh: unknown workload $w" >&2; exit 2 ;;
  esac
  for p in ${PEERS//,/ }; do
    if [[ $p == collectd && $w != plain ]]; then continue; fi
    log "$w: $p"
    perf_out=""
    case $p in
      meterd)
        start_meterd /dev/null
        if [[ $PERF == 1 ]]; then perf_out="$WORK/perf-meterd-$w.data"; fi
        ;;
      collectd) start_collectd 10 ;;
      statsd) start_statsd "$STATSD_DIR" 10000 ;;
      *) echo "throughput.sh: unknown peer $p" >&2; exit 2 ;;
    esac
    RB[$p]=$(rcvbuf_of "$PORT")
    # shellcheck disable=SC2046
    "${BENCH[@]}" phases $(peer_args "$p") --workload "$w" --run-secs "$RUN_SECS" --cpu-rate "$CPU_RATE" \
      --lo-rate "$LO_RATE" --steps "$STEPS" --warm-lines "$warm" --perf-out "$perf_out"
    stop_pid "$PEER_PID"
    if [[ -n $perf_out && -s $perf_out ]]; then
      {
        echo "# flat profile (self)"
        perf report -i "$perf_out" --stdio --no-children --sort dso,symbol -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40
        echo "# call graphs (self, callers)"
        perf report -i "$perf_out" --stdio --no-children --percent-limit 2 --max-stack 12 -g caller,0.5,callee,function,percent 2>/dev/null | grep -v '^$' | head -200
      } >"$WORK/perf-meterd-$w.txt" || true
      log "perf report of meterd under flood ($w): $WORK/perf-meterd-$w.txt"
      KEEP=1
    fi
  done
  if [[ ,$PEERS, == *,meterd,* ]]; then
    # Exactness: a fresh meterd at a modest rate; its flushed counter sums and timer counts must
    # equal the totals series by series.
    log "$w: meterd exactness check"
    start_meterd "$WORK/exact-$w.jsonl"
    # shellcheck disable=SC2046
    "${BENCH[@]}" run $(peer_args meterd) --workload "$w" --phase exact --target 500000 -- \
      --rate 500000 --duration 3 >/dev/null
    stop_pid "$PEER_PID"
    if "${BENCH[@]}" exact --flush "$WORK/exact-$w.jsonl" "$WORK/totals-meterd-$w-exact.json" >"$WORK/exact-$w.json"; then
      EXACT[$w]="exact"
    else
      EXACT[$w]="MISMATCH"
    fi
    log "$w: $(cat "$WORK/exact-$w.json")"
    rm -f "$WORK/exact-$w.jsonl"
  fi
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# `|| true`: without collectd (`--peers meterd`), grep finds nothing, which pipefail and set -e
# would turn into the script's exit before its report.
COLLECTD_VERSION=$( (collectd -h 2>/dev/null || true) | grep -o 'collectd [0-9][0-9.]*[0-9]' | head -1 || true)
CPU_MODEL=$(python3 "$ROOT/benches/bench_common.py" cpu)
{
  echo
  echo "## Throughput, $START_DATE"
  echo
  echo "Command: \`benches/throughput.sh ${ARGV[*]:1}\` (meterd $COMMIT)."
  echo "Machine: nproc $(nproc), CPU \"$CPU_MODEL\", kernel $(uname -r); load average $LOAD_START at the start, $LOAD_END at the end (a shared machine)."
  echo "Setup: meterd-load pinned to CPU 0, each aggregator to CPU 1 (taskset), both at nice $NICE; runs of $RUN_SECS s with 10 s flush intervals;"
  echo "socket receive buffer $RCVBUF bytes for all (granted: $(for p in "${!RB[@]}"; do printf '%s %s; ' "$p" "${RB[$p]:-?}"; done | sed 's/; $//'));"
  PEER_DESC=""
  [[ ,$PEERS, == *,collectd,* ]] && PEER_DESC+="${COLLECTD_VERSION:-collectd} (Debian collectd-core), "
  [[ ,$PEERS, == *,statsd,* ]] && PEER_DESC+="Etsy statsd 0.9.0 on Node $(node --version 2>/dev/null || echo '?'), "
  echo "meterd readers = $READERS${INGEST_LINES[*]:+, [ingest] ${INGEST_LINES[*]}}, console JSON sink; peers: ${PEER_DESC:-none, }"
  echo "configured as in shared/bench-peers (ports, and collectd's CSV directory, moved). Held rate: the lowest rate ($LO_RATE lines/s) must pass; then 1.3 × the flooded rate,"
  echo "raised 1.5× while it passes, and a log bisection of $STEPS steps between the last passing and the first failing rate;"
  echo "a step passes when loss < 0.1 % in its run or, failing that, in a second run at the same rate; the rate held is the one the generator achieved in it. Loss = 1 − processed ÷ sent (meterd: /metrics lines received;"
  echo "statsd: sumlog metrics_received; collectd: counter totals and timer counts from its CSV files, scaled to lines)."
  echo "\"On CPU\": the share of the time the aggregator was runnable that it spent on a CPU (/proc/PID/task/*/schedstat); below 100 % other work took its core."
  for w in ${WORKLOADS//,/ }; do
    [[ -n ${EXACT[$w]:-} ]] && echo "meterd exactness ($w, 500k lines/s for 3 s, flushed counter sums and timer counts vs totals, series by series): ${EXACT[$w]}."
  done
  "${BENCH[@]}" table --records "$RECORDS" --workloads "$WORKLOADS"
} >"$WORK/report.md"
cat "$WORK/report.md"
if [[ -n $OUT ]]; then
  cat "$WORK/report.md" >>"$OUT"
  cp "$RECORDS" "${OUT%.md}.runs.jsonl"
  log "appended to $OUT; every run's record in ${OUT%.md}.runs.jsonl"
fi
