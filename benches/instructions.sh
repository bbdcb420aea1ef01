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
python3 - "$OUT" "$RUN" "$TOP" <<'PY'
import re, subprocess, sys
out, run, top = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = re.search(r"lines_per_pass (\d+) passes (\d+)", run)
lines = int(m.group(1)) * int(m.group(2))
total = next(int(l.split()[1]) for l in open(out) if l.startswith(("summary:", "totals:")))
print(f"instructions per line: {total / lines:.1f} ({total:,} over {lines:,} lines)")
def table(inclusive):
    """(instructions per line, function) rows: inclusive takes each function's largest row,
    own sums its rows (callgrind splits a function's own cost by source file of inlined code)."""
    text = subprocess.run(["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}", out],
                          capture_output=True, text=True, check=True).stdout
    per = {}
    for l in text.split("\n"):
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(\S+)", l)
        if not (m and ":" in m.group(2)):
            continue
        name = m.group(2).split(":", 1)[1]
        if not name or name.startswith(":"):
            continue
        if inclusive and not name.startswith(("meterd::", "hashbrown::", "hdrhistogram::")):
            continue
        ir = int(m.group(1).replace(",", "")) / lines
        per[name] = max(per.get(name, 0), ir) if inclusive else per.get(name, 0) + ir
    return sorted(((ir, name) for name, ir in per.items()), reverse=True)
for title, inclusive in (("inclusive", True), ("own (inlined code included)", False)):
    print(f"\n{title}, instructions per line:")
    for ir, name in table(inclusive)[:top]:
        print(f"{ir:8.1f}  {name[:110]}")
PY
