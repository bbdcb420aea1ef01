#!/usr/bin/env bash
# Interleaved A/B of the reader's loop without the socket (benches/ingest_loop.rs): the same
# bench built from a base commit (A) and from the working tree (B), run in turns pinned to one
# CPU, ns per line of each run, the medians and B ÷ A.
#
#   bash benches/loop_ab.sh [--base REV] [--rounds N] [--iters N] [--cpu N] [--shape S] [--cold]
#
# The loop leaves out the kernel's receive and the interval's flushes, so it isolates the
# user-space cost of parsing and aggregating: on this shared 2-core machine its medians move
# ~2 % between runs where `benches/ab.py` (end to end, over the socket) moves ±5 %. Use it to
# judge a hot-path change, then `ab.py` for what it does end to end. Defaults: --base HEAD,
# 5 rounds of 2000 passes (~1 s each), CPU 1, shape plain, caches warm (`--cold` evicts them
# before each pass, as a reader's bursts at 1M lines/s find them; use fewer passes with it, it
# spends ~10 ms per pass evicting). Builds the base in a git worktree under /tmp with its own
# target directory (the first build takes a minute or two), with the working tree's
# benches/ingest_loop.rs, so that both sides run the same harness.
set -euo pipefail
BASE=HEAD ROUNDS=5 ITERS=2000 CPU=1 SHAPE=plain COLD=""
while [ $# -gt 0 ]; do
  case "$1" in
    --base) BASE="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --iters) ITERS="$2"; shift 2 ;;
    --cpu) CPU="$2"; shift 2 ;;
    --shape) SHAPE="$2"; shift 2 ;;
    --cold) COLD=cold; shift ;;
    *) echo "usage: benches/loop_ab.sh [--base REV] [--rounds N] [--iters N] [--cpu N] [--shape S] [--cold]" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
ROOT=$(pwd)
REV=$(git rev-parse --verify "$BASE^{commit}")
WT=/tmp/meterd-loop-ab-$REV
if [ ! -d "$WT" ]; then
  git worktree add --detach --force "$WT" "$REV" >/dev/null
fi
cp benches/ingest_loop.rs "$WT/benches/ingest_loop.rs"
# The executable cargo built (wherever CARGO_TARGET_DIR puts it).
bench_exe() {
  (cd "$1" && CARGO_TARGET_DIR="$2" cargo bench --bench ingest_loop --no-run 2>&1) \
    | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1
}
A=$(bench_exe "$WT" "/tmp/meterd-loop-ab-target")
B=$(bench_exe "$ROOT" "${CARGO_TARGET_DIR:-$ROOT/target}")
for exe in "$A" "$B"; do
  [ -x "$exe" ] || { echo "loop_ab.sh: could not build benches/ingest_loop.rs" >&2; exit 1; }
done
# Fixed names so that the two are told apart in `ps` and never confused by a rebuild.
cp "$A" /tmp/meterd-loop-ab-a
cp "$B" /tmp/meterd-loop-ab-b
run() { taskset -c "$CPU" "$1" "$ITERS" "$SHAPE" $COLD | sed -n 's/.*ns_per_line \([0-9.]*\).*/\1/p'; }
RESULTS=""
for r in $(seq 1 "$ROUNDS"); do
  # Alternate which goes first, so a neighbour's burst does not always land on one of them.
  if [ $((r % 2)) -eq 1 ]; then a=$(run /tmp/meterd-loop-ab-a); b=$(run /tmp/meterd-loop-ab-b)
  else b=$(run /tmp/meterd-loop-ab-b); a=$(run /tmp/meterd-loop-ab-a); fi
  echo "round $r: A ($BASE) $a ns/line, B (working tree) $b ns/line"
  RESULTS="$RESULTS $a,$b"
done
python3 "$ROOT/benches/ingest_loop_report.py" loop-ab "$BASE" $RESULTS
