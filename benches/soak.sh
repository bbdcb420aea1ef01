#!/usr/bin/env bash
# Soak test (issue 7, item 6): the real meterd binary at half its measured capacity for a long
# time, with churning series and a flaky sink, then loss, memory slope and flush latency.
#
#   benches/soak.sh --smoke               ~20 s, tiny rate: exits non-zero if anything is off. For CI.
#   benches/soak.sh [--out FILE] ...      the full run (default 10 min): prints a markdown section
#                                         (command, machine, config, results) and writes it to FILE.
#
# How it works. A capacity probe floods a fresh meterd (same config, same sinks) with meterd-load
# flat out for a few seconds and takes the rate meterd processed (its /metrics lines received over
# the send time plus the drain); the soak then runs a second, fresh meterd at half that rate
# (--rate overrides) in consecutive segments, each with a new series prefix (soak0000, soak0001,
# …; meterd-load --prefix), so every segment's series are new and the previous segment's stop.
# meterd flushes every --interval seconds to two http sinks (benches/soak_sink.py): "capture"
# answers 200 and records every flush document; "flaky" answers 500 to a share of requests and
# hangs past the sink timeout on another share.
#
# Reported: loss, exactly: lines meterd-load sent (its totals files) − lines meterd received
# (/metrics meterd_lines_received_total, after the sockets drained), with invalid lines, kernel
# drops and send errors; exactness: per series, the counter sums and timer counts flushed to the
# capture sink against meterd-load's totals; resident memory: VmRSS of meterd every --rss-every
# seconds, least-squares slope in KiB/min (whole run, after the warm-up, second half) plus
# first/last/peak, and per minute with the other work on meterd's CPU (from /proc/stat) and the
# share of its runnable time meterd's UDP reader waited for that CPU, to tell loss caused by a
# busy machine from loss caused by meterd;
# flush latency: per flush, the end of the interval to the capture sink holding the whole document
# (swap, render, encode, POST), and meterd's own meterd.flush.duration_ms, as p50/p90/p99/max.
# Verdicts: no loss, exact, the capture sink lost nothing, the flaky sink was exercised, memory
# flat (the second half's slope of RSS less the gauge memory, kept up for an hour, adds at most
# 10 % of its mean RSS; full runs only) with the gauge memory — last values kept an hour for `+N`,
# which grows for the first hour under the churning gauge names, reported by meterd as
# meterd_gauges_remembered_bytes — within its documented bytes per gauge, every flush arrived
# within one interval; the exit status is 1 when one fails.
#
# meterd runs on CPU 1; meterd-load and the sinks on CPU 0 (taskset; both on 0 with one CPU).
# Only 127.0.0.1, ports chosen by the kernel (port 0, read back from meterd's log). Everything is
# bounded: each process has a time limit of its own, waits have deadlines, and the exit trap
# stops every child this script started (by its process id).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: benches/soak.sh [--smoke] [--duration SECS] [--rate N] [--out FILE] [options]
  --smoke            ~20 s check with tiny numbers (12 s soak, 20k lines/s at most, 2k series,
                     4 s segments, 1 s flushes, a 2 s probe); exit 1 if anything is off
  --duration SECS    soak length (default 600)
  --rate N           lines/s to soak at (default: half the rate the capacity probe measures)
  --out FILE         also write the markdown section to FILE (replacing it)
  --segment SECS     length of one series generation (default 30)
  --series N         series per generation (default 20000)
  --workload W       meterd-load preset, plain or dogstatsd (default dogstatsd)
  --interval SECS    meterd's flush interval, whole seconds (default 2)
  --fail-rate F      share of the flaky sink's requests answered 500 (default 0.2)
  --hang-rate F      share held past the sink timeout before answering (default 0.05)
  --probe-secs N     length of the flat-out capacity probe (default 5; skipped with --rate)
  --rss-every SECS   sampling period of meterd's RSS (default 5)
  --no-build         use the binaries in target/release as they are
  --keep             keep the work directory
EOF
}

SMOKE=0 DURATION="" RATE="" OUT="" SEGMENT="" SERIES="" WORKLOAD="" INTERVAL="" FAIL_RATE=""
HANG_RATE="" PROBE_SECS="" RSS_EVERY="" BUILD=1 KEEP=0
ARGV=("$@")
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --duration) DURATION="${2:?}"; shift ;;
    --rate) RATE="${2:?}"; shift ;;
    --out) OUT="${2:?}"; shift ;;
    --segment) SEGMENT="${2:?}"; shift ;;
    --series) SERIES="${2:?}"; shift ;;
    --workload) WORKLOAD="${2:?}"; shift ;;
    --interval) INTERVAL="${2:?}"; shift ;;
    --fail-rate) FAIL_RATE="${2:?}"; shift ;;
    --hang-rate) HANG_RATE="${2:?}"; shift ;;
    --probe-secs) PROBE_SECS="${2:?}"; shift ;;
    --rss-every) RSS_EVERY="${2:?}"; shift ;;
    --no-build) BUILD=0 ;;
    --keep) KEEP=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "soak.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [[ $SMOKE == 1 ]]; then
  : "${DURATION:=12}" "${SEGMENT:=4}" "${SERIES:=2000}" "${INTERVAL:=1}" "${PROBE_SECS:=2}"
  : "${RSS_EVERY:=1}" "${FAIL_RATE:=0.3}" "${HANG_RATE:=0.1}"
  RATE_CAP=20000
else
  RATE_CAP=0
fi
: "${DURATION:=600}" "${SEGMENT:=30}" "${SERIES:=20000}" "${WORKLOAD:=dogstatsd}" "${INTERVAL:=2}"
: "${FAIL_RATE:=0.2}" "${HANG_RATE:=0.05}" "${PROBE_SECS:=5}" "${RSS_EVERY:=5}"
for v in DURATION SEGMENT SERIES INTERVAL PROBE_SECS RSS_EVERY; do
  opt=${v,,}
  if ! [[ ${!v} =~ ^[0-9]+$ ]] || (( ${!v} == 0 )); then
    echo "soak.sh: --${opt//_/-} must be a positive whole number" >&2
    exit 2
  fi
done
[[ -z $RATE || $RATE =~ ^[0-9]+$ ]] || { echo "soak.sh: --rate must be a whole number of lines/s" >&2; exit 2; }
[[ $WORKLOAD == plain || $WORKLOAD == dogstatsd ]] || { echo "soak.sh: --workload must be plain or dogstatsd" >&2; exit 2; }
(( DURATION <= 86400 )) || { echo "soak.sh: --duration must be at most 86400" >&2; exit 2; }
(( SEGMENT <= 3600 && PROBE_SECS <= 60 && INTERVAL <= 60 )) || { echo "soak.sh: --segment ≤ 3600, --probe-secs ≤ 60, --interval ≤ 60" >&2; exit 2; }
for f in "$FAIL_RATE" "$HANG_RATE"; do
  [[ $f =~ ^(0(\.[0-9]+)?|1(\.0+)?)$ ]] || { echo "soak.sh: --fail-rate and --hang-rate must be in [0, 1]" >&2; exit 2; }
done

LOAD_CPU=0
METERD_CPU=1
if (( $(nproc) < 2 )); then METERD_CPU=0; fi
ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/meterd-soak.XXXXXX)
PIDS=()       # every background child, stopped by the exit trap
METERD_PID="" # the meterd process itself (its parent is the `timeout` bounding it)
SINK_TIMEOUT_MS=$(( INTERVAL * 500 )) # meterd clamps sink timeouts to half the interval
HANG_SECS=$(python3 -c "print(round($SINK_TIMEOUT_MS / 1000 + 0.5, 3))")
# Longest the whole run may take: the soak, the probe, start-ups, drains and shutdowns.
LIMIT=$(( DURATION + PROBE_SECS + 300 ))

log() { printf '== %s\n' "$*" >&2; }

stop_pid() { # PID [SECS]: SIGTERM, wait up to SECS (default 10), then SIGKILL
  local pid=$1 secs=${2:-10} i keep=() p
  if kill -TERM "$pid" 2>/dev/null; then
    for ((i = 0; i < secs * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  if [[ -n $METERD_PID ]]; then kill -TERM "$METERD_PID" 2>/dev/null || true; fi
  for p in "${PIDS[@]}"; do stop_pid "$p" 5; done
  if [[ $KEEP == 1 ]]; then echo "soak.sh: work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# The helper (benches/soak_helper.py): readiness, drains, /metrics snapshots, sampling and the
# report.
SOAK_PY="$ROOT/benches/soak_helper.py"
HELPER=(timeout 120 python3 "$SOAK_PY")

meta() { printf '%s\t%s\n' "$1" "$2" >>"$WORK/meta.tsv"; }
now() { date +%s.%N; }

# ---------------------------------------------------------------------------------------------
# Binaries: copied, so that a rebuild by someone else cannot swap them mid-run.
if [[ $BUILD == 1 ]]; then
  log "building release binaries (cargo build --release --workspace --bins)"
  (cd "$ROOT" && timeout 1800 cargo build --release --workspace --bins --quiet)
fi
cp "$TARGET_DIR/release/meterd" "$TARGET_DIR/release/meterd-load" "$WORK/"
LOAD="$WORK/meterd-load"

start_sinks() { # TAG: the capture and flaky sinks; sets CAPTURE_PORT, FLAKY_PORT, SINK_PIDS
  local tag=$1 i
  taskset -c "$LOAD_CPU" python3 "$ROOT/benches/soak_sink.py" capture --max-secs "$LIMIT" \
    --port-file "$WORK/$tag-capture.port" --summary "$WORK/$tag-capture.json" --records "$WORK/$tag-capture.jsonl" \
    --series-re '^soak[0-9]{4}\.(?P<type>c|g|s|ms|h|d)\.m[0-9]+(?P<rest>(\.[a-z0-9_]+)?)$' 2>>"$WORK/$tag-sinks.log" &
  SINK_PIDS=("$!")
  taskset -c "$LOAD_CPU" python3 "$ROOT/benches/soak_sink.py" flaky --max-secs "$LIMIT" \
    --port-file "$WORK/$tag-flaky.port" --summary "$WORK/$tag-flaky.json" \
    --fail-rate "$FAIL_RATE" --hang-rate "$HANG_RATE" --hang-secs "$HANG_SECS" --seed 7 2>>"$WORK/$tag-sinks.log" &
  SINK_PIDS+=("$!")
  PIDS+=("${SINK_PIDS[@]}")
  for ((i = 0; i < 100; i++)); do
    [[ -s $WORK/$tag-capture.port && -s $WORK/$tag-flaky.port ]] && break
    sleep 0.1
  done
  [[ -s $WORK/$tag-capture.port && -s $WORK/$tag-flaky.port ]] || { echo "soak.sh: the sinks did not start:" >&2; cat "$WORK/$tag-sinks.log" >&2; exit 1; }
  CAPTURE_PORT=$(cat "$WORK/$tag-capture.port")
  FLAKY_PORT=$(cat "$WORK/$tag-flaky.port")
}

stop_sinks() { # TAG: SIGTERM; each writes its summary
  local p
  for p in "${SINK_PIDS[@]}"; do stop_pid "$p" 70; done
  [[ -s $WORK/$1-capture.json && -s $WORK/$1-flaky.json ]] || { echo "soak.sh: a sink wrote no summary:" >&2; cat "$WORK/$1-sinks.log" >&2; exit 1; }
}

write_config() { # FILE
  cat >"$1" <<EOF
hostname = "soak"
interval = "${INTERVAL}s"
shutdown_timeout = "5s"

[ingest]
statsd_udp = ["127.0.0.1:0"]
readers = 1

[http]
listen = "127.0.0.1:0"

[[sinks]]
type = "http"
name = "capture"
url = "http://127.0.0.1:$CAPTURE_PORT/ingest"
timeout = "${SINK_TIMEOUT_MS}ms"

[[sinks]]
type = "http"
name = "flaky"
url = "http://127.0.0.1:$FLAKY_PORT/ingest"
timeout = "${SINK_TIMEOUT_MS}ms"
EOF
}

start_meterd() { # TAG: sets METERD_PID, METERD_WRAPPER, UDP_ADDR, UDP_PORT, HTTP_ADDR
  local tag=$1 i addrs
  write_config "$WORK/$tag.toml"
  timeout -s TERM -k 10 "$LIMIT" taskset -c "$METERD_CPU" "$WORK/meterd" --config "$WORK/$tag.toml" \
    >"$WORK/$tag-meterd.out" 2>"$WORK/$tag-meterd.log" &
  METERD_WRAPPER=$!
  PIDS+=("$METERD_WRAPPER")
  METERD_PID=""
  for ((i = 0; i < 100; i++)); do # the child of `timeout` is meterd (taskset execs it)
    METERD_PID=$(awk '{print $1}' "/proc/$METERD_WRAPPER/task/$METERD_WRAPPER/children" 2>/dev/null) || true
    [[ -n $METERD_PID ]] && break
    sleep 0.05
  done
  [[ -n $METERD_PID ]] || { echo "soak.sh: meterd did not start" >&2; exit 1; }
  addrs=$("${HELPER[@]}" ready --log "$WORK/$tag-meterd.log" --pid "$METERD_PID")
  UDP_ADDR=${addrs% *}
  HTTP_ADDR=${addrs#* }
  UDP_PORT=${UDP_ADDR##*:}
}

stop_meterd() { # sets METERD_EXIT: meterd's status after SIGTERM (final flush, then exit)
  METERD_EXIT=0
  kill -TERM "$METERD_PID" 2>/dev/null || true
  local i
  for ((i = 0; i < 300; i++)); do
    kill -0 "$METERD_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$METERD_PID" 2>/dev/null; then
    echo "soak.sh: meterd did not exit within 30 s of SIGTERM; killed" >&2
    kill -KILL "$METERD_PID" 2>/dev/null || true
  fi
  wait "$METERD_WRAPPER" || METERD_EXIT=$?
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p == "$METERD_WRAPPER" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
  METERD_PID=""
}

run_load() { # TOTALS SECS ARGS...: meterd-load in the background (so signals reach the trap)
  local totals=$1 secs=$2 pid rc=0
  shift 2
  timeout -k 5 $(( secs + 30 )) "$LOAD" --to "$UDP_ADDR" --workload "$WORKLOAD" --series "$SERIES" \
    --cpu "$LOAD_CPU" --quiet --totals "$totals" --duration "$secs" "$@" &
  pid=$!
  PIDS+=("$pid")
  wait "$pid" || rc=$?
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
  (( rc == 0 )) || { echo "soak.sh: meterd-load failed (status $rc)" >&2; exit 1; }
}

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)
if ! git -C "$ROOT" diff --quiet HEAD -- src tools Cargo.toml Cargo.lock 2>/dev/null; then COMMIT="$COMMIT + uncommitted changes"; fi
meta smoke "$SMOKE"
meta command "benches/soak.sh${ARGV[*]:+ ${ARGV[*]}}"
meta commit "$COMMIT"
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta nproc "$(nproc)"
meta cpu "$(python3 "$ROOT/benches/bench_common.py" cpu)"
meta kernel "$(uname -r)"
meta load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
for v in DURATION SEGMENT SERIES WORKLOAD INTERVAL FAIL_RATE HANG_RATE HANG_SECS PROBE_SECS RSS_EVERY \
  LOAD_CPU METERD_CPU SINK_TIMEOUT_MS RATE_CAP; do
  meta "${v,,}" "${!v}"
done

# ---------------------------------------------------------------------------------------------
# Capacity probe: a fresh meterd with the same config and sinks, flooded flat out.
if [[ -z $RATE ]]; then
  log "capacity probe: meterd-load flat out for $PROBE_SECS s"
  start_sinks probe
  start_meterd probe
  "${HELPER[@]}" snapshot --http "$HTTP_ADDR" >"$WORK/probe-before.json"
  run_load "$WORK/probe-totals.json" "$PROBE_SECS" --prefix probe --rate 0
  sent_end=$(now)
  drained=$("${HELPER[@]}" drain --http "$HTTP_ADDR" --port "$UDP_PORT" --pid "$METERD_PID")
  "${HELPER[@]}" snapshot --http "$HTTP_ADDR" >"$WORK/probe-after.json"
  PROBE=$("${HELPER[@]}" probe --before "$WORK/probe-before.json" --after "$WORK/probe-after.json" \
    --totals "$WORK/probe-totals.json" --sent-end "$sent_end" --drained "$drained")
  stop_meterd
  stop_sinks probe
  RATE=$("${HELPER[@]}" probe-rate "$PROBE")
  if (( RATE_CAP > 0 && RATE > RATE_CAP )); then RATE=$RATE_CAP; fi
  meta probe "$PROBE"
  log "capacity probe: $("${HELPER[@]}" probe-summary "$PROBE"); soaking at $RATE lines/s"
fi
(( RATE > 0 )) || { echo "soak.sh: the rate is 0" >&2; exit 1; }
meta rate "$RATE"

# ---------------------------------------------------------------------------------------------
# The soak.
SEGMENTS=$(( (DURATION + SEGMENT - 1) / SEGMENT ))
WARMUP=$(( DURATION / 10 > 2 * SEGMENT ? DURATION / 10 : 2 * SEGMENT )) # reported, not judged
if (( WARMUP * 2 > DURATION )); then WARMUP=$(( DURATION / 4 )); fi
meta segments "$SEGMENTS"
meta warmup "$WARMUP"
start_sinks soak
start_meterd soak
"${HELPER[@]}" snapshot --http "$HTTP_ADDR" --pid "$METERD_PID" >"$WORK/soak-start.json"
T_START=$(now)
meta t_soak_start "$T_START"
log "soak: $DURATION s at $RATE lines/s, $SEGMENTS segments of $SERIES $WORKLOAD series, flushes every $INTERVAL s; meterd pid $METERD_PID, UDP $UDP_ADDR, HTTP $HTTP_ADDR"
timeout -k 5 $(( DURATION + 200 )) python3 "$SOAK_PY" sample --http "$HTTP_ADDR" --pid "$METERD_PID" \
  --every "$RSS_EVERY" --until "$(python3 -c "print($T_START + $DURATION + 120)")" \
  --stop-file "$WORK/stop-sampling" --out "$WORK/soak-samples.jsonl" --port "$UDP_PORT" --cpu "$METERD_CPU" &
SAMPLER=$!
PIDS+=("$SAMPLER")
left=$DURATION
for ((seg = 0; seg < SEGMENTS; seg++)); do
  secs=$(( left < SEGMENT ? left : SEGMENT ))
  prefix=$(printf 'soak%04d' "$seg")
  run_load "$WORK/totals-$prefix.json" "$secs" --prefix "$prefix" --rate "$RATE" --seed $(( seg + 1 ))
  left=$(( left - secs ))
  kill -0 "$METERD_PID" 2>/dev/null || { echo "soak.sh: meterd died during segment $prefix" >&2; KEEP=1; exit 1; }
  log "$("${HELPER[@]}" segment "$WORK/totals-$prefix.json" "$METERD_PID" "$seg" "$SEGMENTS")"
done
T_SENT_END=$(now)
meta t_sent_end "$T_SENT_END"
"${HELPER[@]}" drain --http "$HTTP_ADDR" --port "$UDP_PORT" --pid "$METERD_PID" >/dev/null
"${HELPER[@]}" snapshot --http "$HTTP_ADDR" --pid "$METERD_PID" >"$WORK/soak-end.json"
meta load_end "$(cut -d' ' -f1-3 /proc/loadavg)"
touch "$WORK/stop-sampling"
stop_pid "$SAMPLER" 10
meta t_term "$(now)"
stop_meterd
meta meterd_exit "$METERD_EXIT"
stop_sinks soak

# ---------------------------------------------------------------------------------------------
rc=0
"${HELPER[@]}" report --work "$WORK" --meta "$WORK/meta.tsv" >"$WORK/report.md" || rc=$?
if [[ ! -s $WORK/report.md ]]; then echo "soak.sh: the report failed" >&2; KEEP=1; exit 1; fi
cat "$WORK/report.md"
if [[ -n $OUT ]]; then
  cp "$WORK/report.md" "$OUT"
  log "written to $OUT"
fi
if (( rc != 0 )); then
  log "soak: NOT as expected (work directory kept: $WORK)"
  KEEP=1
  exit 1
fi
log "soak: as expected"
