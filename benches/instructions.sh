#!/usr/bin/env bash
# Instructions per ingested line (plain workload shapes, 10k existing series), counted by
# callgrind in benches/ingest_loop.rs's `measured` alone: total, and the functions that take
# the most (inclusive and own). Needs valgrind (apt-get install valgrind). Deterministic, so a
# hot-path change can be judged from one run on a busy machine; confirm in time with ab.py.
#
#   bash benches/instructions.sh [--top N]
set -euo pipefail
TOP=25
while [ $# -gt 0 ]; do
  case "$1" in
    --top) TOP="$2"; shift 2 ;;
    *) echo "usage: benches/instructions.sh [--top N]" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
cd "$(dirname "$0")/.."
# The executable cargo built (wherever CARGO_TARGET_DIR puts it).
BIN=$(cargo bench --bench ingest_loop --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
[ -x "$BIN" ] || { echo "instructions.sh: could not build benches/ingest_loop.rs" >&2; exit 1; }
OUT=$(mktemp /tmp/meterd-callgrind.XXXXXX)
trap 'rm -f "$OUT"' EXIT
ITERS=100
RUN=$(valgrind --tool=callgrind --callgrind-out-file="$OUT" --toggle-collect='*ingest_loop::measured*' \
  "$BIN" "$ITERS" 2>/dev/null)
echo "$RUN"
python3 benches/ingest_loop_report.py instructions "$OUT" "$RUN" "$TOP"
