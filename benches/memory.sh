#!/usr/bin/env bash
# Memory per series (issue 6): resident bytes meterd holds per counter, gauge and timer series
# within one interval, and how long the flush of 1M series takes (and whether it loses lines).
#
#   benches/memory.sh [--build] [--out FILE] [options]
#
# Each case starts a fresh target/release/meterd on 127.0.0.1 (ephemeral ports, a console sink
# that excludes the load's names, stdout to /dev/null), reads VmRSS from /proc/PID/status, sends
# one case's lines with target/release/meterd-load at a fixed rate, waits until meterd's
# /metrics counts every line sent (meterd_lines_received_total) and reads VmRSS again:
# bytes per series = (after - before) / series. The interval is chosen per case (whole seconds)
# so that its first wall-clock boundary falls just after the measurement: the flush then
# happens after it, and meterd_series_active{kind=...} at that flush must equal the case's
# series (all of them in one interval, none refused). A case whose lines were not all received
# (kernel drops) is retried at half the rate, at most twice.
#
# Cases (--cases, default a,b,c,d,e,f,g):
#   a  1M counter series, 1 line each
#   b  1M gauge series, 1 line each
#   c  100k timer series, 100 samples each (25 lines per datagram, so each series gets exactly
#      100: meterd-load visits the series in whole shuffled passes)
#   d  case a's flush: meterd_flush_duration_ms of 1M series, with --flush-rate lines/s of gauge
#      traffic (10k series) from 2 s before the boundary to 4 s after; lost = sent - received
#   e  10k timer series, 2000 samples each: the HDR form (beyond 1024 raw samples)
#   f  10k timer series, 1000 samples each: the largest raw form
#   g  20k set series, 500 lines each drawing from 100 members: ~100 distinct members each
#      (99.3 expected; a ring of every line, ~250 MB in meterd-load), the exact form's largest use
# Cases a and b also send their lines again in the second interval and report the steady state:
# tables sized by the last interval, gauges' last values kept for `+N`, allocator leftovers.
#
# Bounded: every case has a deadline (load time x 2 + 60 s) and the script stops meterd on exit.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: benches/memory.sh [--build] [--out FILE] [options]
  --build            cargo build --release --workspace --bins first
  --meterd PATH      meterd binary (default $CARGO_TARGET_DIR or target/release/meterd)
  --load PATH        meterd-load binary (default next to meterd)
  --cases LIST       a,b,c,d,e,f,g (default all; d runs within a)
  --rate N           lines/s of the measured load (default 400000)
  --flush-rate N     lines/s sent across the flush in case d (default 300000)
  --scale N          divide every series count by N (quick trial runs; default 1)
  --out FILE         append the markdown table to FILE
  --keep             keep the work directory (configs, logs, totals)
EOF
}

BUILD=0
OUT=""
CASES="a,b,c,d,e,f,g"
RATE=400000
FLUSH_RATE=300000
SCALE=1
KEEP=0
METERD=""
LOAD=""
ARGV=("$0" "$@")
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) BUILD=1 ;;
    --meterd) METERD="$2"; shift ;;
    --load) LOAD="$2"; shift ;;
    --cases) CASES="$2"; shift ;;
    --rate) RATE="$2"; shift ;;
    --flush-rate) FLUSH_RATE="$2"; shift ;;
    --scale) SCALE="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --keep) KEEP=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "memory.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
for n in "$RATE" "$FLUSH_RATE" "$SCALE"; do
  [[ $n =~ ^[0-9]+$ ]] && (( n > 0 )) || { echo "memory.sh: $n is not a positive number" >&2; exit 2; }
done

ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ $BUILD == 1 ]]; then
  (cd "$ROOT" && cargo build --release --workspace --bins)
fi
METERD=${METERD:-$TARGET_DIR/release/meterd}
LOAD=${LOAD:-$(dirname "$METERD")/meterd-load}
for b in "$METERD" "$LOAD"; do
  [[ -x $b ]] || { echo "memory.sh: $b not found (try --build)" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/meterd-memory.XXXXXX)
cleanup() {
  local rc=$?
  if [[ -f $WORK/pids ]]; then
    while read -r p; do kill -KILL "$p" 2>/dev/null || true; done <"$WORK/pids"
  fi
  if [[ $KEEP == 1 ]]; then echo "memory.sh: work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rc=0
# The measurement and the table: benches/memory_helper.py.
python3 "$ROOT/benches/memory_helper.py" "$METERD" "$LOAD" "$WORK" "$CASES" "$RATE" "$FLUSH_RATE" "$SCALE" "${ARGV[*]}" \
  >"$WORK/table.md" || rc=$?
cat "$WORK/table.md"
if [[ -n $OUT ]]; then cat "$WORK/table.md" >>"$OUT"; fi
exit "$rc"
