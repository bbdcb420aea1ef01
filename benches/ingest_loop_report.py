"""Reports of the ingest-loop scripts (benches/ingest_loop.rs measured outside criterion).

    python3 benches/ingest_loop_report.py instructions CALLGRIND_OUT RUN_OUTPUT TOP
        instructions per line, total and by function (benches/instructions.sh)
    python3 benches/ingest_loop_report.py loop-ab BASE A,B [A,B ...]
        medians of the rounds' ns per line and B/A (benches/loop_ab.sh)
"""
import re
import statistics
import subprocess
import sys


def instructions(out, run, top):
    """Instructions per line from callgrind's output file `out` and the bench's stdout `run`:
    the total, then the `top` functions inclusive and own."""
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


def loop_ab(base, pairs):
    """Medians of the (A, B) ns-per-line rounds and their ratio."""
    a = statistics.median(p[0] for p in pairs)
    b = statistics.median(p[1] for p in pairs)
    print(f"ingest loop, {len(pairs)} rounds: A ({base}) median {a:.1f} ns/line, "
          f"B (working tree) median {b:.1f} ns/line, B/A = {b / a:.3f}")


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "instructions" and len(argv) == 5:
        instructions(argv[2], argv[3], int(argv[4]))
    elif cmd == "loop-ab" and len(argv) >= 3:
        loop_ab(argv[2], [tuple(map(float, p.split(","))) for p in argv[3:]])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
