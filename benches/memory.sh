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
# Cases (--cases, default a,b,c,d,e,f):
#   a  1M counter series, 1 line each
#   b  1M gauge series, 1 line each
#   c  100k timer series, 100 samples each (25 lines per datagram, so each series gets exactly
#      100: meterd-load visits the series in whole shuffled passes)
#   d  case a's flush: meterd_flush_duration_ms of 1M series, with --flush-rate lines/s of gauge
#      traffic (10k series) from 2 s before the boundary to 4 s after; lost = sent - received
#   e  10k timer series, 2000 samples each: the HDR form (beyond 1024 raw samples)
#   f  10k timer series, 1000 samples each: the largest raw form
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
  --cases LIST       a,b,c,d,e,f (default all; d runs within a)
  --rate N           lines/s of the measured load (default 400000)
  --flush-rate N     lines/s sent across the flush in case d (default 300000)
  --scale N          divide every series count by N (quick trial runs; default 1)
  --out FILE         append the markdown table to FILE
  --keep             keep the work directory (configs, logs, totals)
EOF
}

BUILD=0
OUT=""
CASES="a,b,c,d,e,f"
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

cat >"$WORK/memory.py" <<'PY'
import json, math, os, re, signal, subprocess, sys, time, urllib.request

meterd, load, work, cases, rate, flush_rate, scale, command = sys.argv[1:9]
rate, flush_rate, scale = int(rate), int(flush_rate), int(scale)
cases = cases.split(",")


def say(msg):
    print(f"== {msg}", file=sys.stderr, flush=True)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def udp_drops(port):
    total = 0
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if int(fields[1].rsplit(":", 1)[1], 16) == port:
                        total += int(fields[-1])
        except OSError:
            pass
    return total


def scrape(http):
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def pick_interval(min_wait, slack=10):
    """A whole-second interval whose next wall-clock boundary is min_wait..min_wait+slack s away."""
    now = time.time()
    for i in range(math.ceil(min_wait), 20 * math.ceil(min_wait) + 200):
        wait = i - now % i
        if min_wait <= wait <= min_wait + slack:
            return i, now + wait
    raise RuntimeError("no interval found")


class Meterd:
    def __init__(self, name, interval, max_series):
        self.cfg = os.path.join(work, f"{name}.toml")
        with open(self.cfg, "w") as f:
            f.write(
                f'interval = "{interval}s"\nmax_series = {max_series}\n'
                '[ingest]\nstatsd_udp = ["127.0.0.1:0"]\n'
                '[http]\nlisten = "127.0.0.1:0"\n'
                '[[sinks]]\ntype = "console"\nformat = "json"\nexclude = ["load."]\n'
            )
        self.log = os.path.join(work, f"{name}.log")
        self.proc = subprocess.Popen(
            [meterd, "--config", self.cfg],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "w"),
        )
        with open(os.path.join(work, "pids"), "a") as f:
            f.write(f"{self.proc.pid}\n")
        self.udp = self.http = None
        deadline = time.time() + 15
        while time.time() < deadline and not (self.udp and self.http):
            with open(self.log) as f:
                text = f.read()
            m = re.search(r'transport="udp" addr=127\.0\.0\.1:(\d+)', text)
            self.udp = int(m.group(1)) if m else None
            m = re.search(r'transport="http" addr=(127\.0\.0\.1:\d+)', text)
            self.http = m.group(1) if m else None
            time.sleep(0.1)
        if not (self.udp and self.http):
            raise RuntimeError(f"meterd did not start; see {self.log}")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def load_cmd(port, series, types, count, r, totals, seed=1):
    return [
        load, "--to", f"127.0.0.1:{port}", "--series", str(series), "--types", types,
        "--tags", "0", "--sample-rate", "1", "--lines-per-datagram", "25",
        "--count", str(count), "--rate", str(r), "--seed", str(seed),
        "--totals", totals, "--quiet",
    ]


def shown(cmd):
    return " ".join(os.path.basename(c) if c in (load, meterd) else c for c in cmd)


def wait_lines(m, base, want, deadline):
    """Polls /metrics until `want` lines arrived after `base` or nothing moves for 3 s."""
    last, still = -1, time.time()
    while time.time() < deadline:
        got = scrape(m.http).get("meterd_lines_received_total", 0) - base
        if got >= want:
            return int(got)
        if got != last:
            last, still = got, time.time()
        elif time.time() - still > 3:
            return int(got)
        time.sleep(0.2)
    return int(last)


def run_case(key, series, types, kind, per_series, r, with_flush_load, second):
    lines = series * per_series
    load_secs = lines / r
    # A second interval needs room after the first flush (and case d's 6 s of traffic) too.
    interval, boundary = pick_interval(load_secs * (3 if second else 1.5) + (24 if second else 12))
    m = Meterd(key, interval, max(2 * series, 1_000_000))
    try:
        time.sleep(1.0)
        rss0 = rss_kib(m.proc.pid)
        base = scrape(m.http).get("meterd_lines_received_total", 0)
        drops0 = udp_drops(m.udp)
        totals = os.path.join(work, f"{key}.totals.json")
        cmd = load_cmd(m.udp, series, types, lines, r, totals)
        say(f"case {key}: {shown(cmd)} (interval {interval}s, flush in {boundary - time.time():.0f}s)")
        subprocess.run(cmd, check=True, timeout=load_secs * 2 + 60)
        with open(totals) as f:
            sent = json.load(f)["lines"]
        got = wait_lines(m, base, sent, time.time() + 30)
        time.sleep(0.5)
        rss1 = rss_kib(m.proc.pid)
        drops = udp_drops(m.udp) - drops0
        measured_at = time.time()
        if measured_at > boundary - 0.5:
            raise RuntimeError(f"case {key}: the measurement ran into the flush; lower --scale or raise --rate")
        row = {
            "case": key, "series": series, "kind": kind, "per_series": per_series, "rate": r,
            "sent": sent, "received": got, "kernel_drops": drops,
            "rss0": rss0, "rss1": rss1, "interval": interval, "cmd": shown(cmd),
        }
        bg = None
        if with_flush_load:
            # Gauge traffic (10k other series, so the counters flushed stay the case's) from 2 s
            # before the boundary to 4 s after.
            time.sleep(max(0.0, boundary - 2 - time.time()))
            bg_totals = os.path.join(work, f"{key}.flush.totals.json")
            bg_count = flush_rate * 6
            bg_cmd = load_cmd(m.udp, min(10_000, series), "g", bg_count, flush_rate, bg_totals, seed=2)
            bg_base = scrape(m.http).get("meterd_lines_received_total", 0)
            bg_drops0 = udp_drops(m.udp)
            bg = subprocess.Popen(bg_cmd)
            row["flush_cmd"] = shown(bg_cmd)
        # Wait for the flush: series.active for this kind is set by it.
        deadline = boundary + 60
        flushed = 0
        while time.time() < deadline:
            time.sleep(0.5)
            if time.time() < boundary:
                continue
            s = scrape(m.http)
            flushed = int(s.get(f'meterd_series_active{{kind="{kind}"}}', 0))
            if flushed:
                row["flush_ms"] = int(s.get("meterd_flush_duration_ms", -1))
                break
        row["flushed_series"] = flushed
        if bg is not None:
            bg.wait(timeout=60)
            with open(bg_totals) as f:
                bg_sent = json.load(f)["lines"]
            row["flush_sent"] = bg_sent
            row["flush_received"] = wait_lines(m, bg_base, bg_sent, time.time() + 30)
            row["flush_drops"] = udp_drops(m.udp) - bg_drops0
        time.sleep(1.0)
        row["rss2"] = rss_kib(m.proc.pid)
        if second:
            # The same lines again in the next interval: the steady state, with the tables
            # sized by the last interval, gauge_last filled and whatever the allocator kept.
            base = scrape(m.http).get("meterd_lines_received_total", 0)
            subprocess.run(cmd, check=True, timeout=load_secs * 2 + 60)
            got2 = wait_lines(m, base, sent, time.time() + 30)
            time.sleep(0.5)
            row["rss3"] = rss_kib(m.proc.pid)
            row["second_ok"] = got2 >= sent and time.time() < boundary + interval - 0.5
        return row
    finally:
        m.stop()


plan = {
    "a": (1_000_000, "c", "counter", 1),
    "b": (1_000_000, "g", "gauge", 1),
    "c": (100_000, "ms", "timer", 100),
    "e": (10_000, "ms", "timer", 2000),
    "f": (10_000, "ms", "timer", 1000),
}
rows = []
ok = True
for key in ["a", "b", "c", "e", "f"]:
    if key not in cases and not (key == "a" and "d" in cases):
        continue
    series, types, kind, per = plan[key]
    series = max(1, series // scale)
    r = rate
    for attempt in range(3):
        row = run_case(key, series, types, kind, per, r, key == "a" and "d" in cases, key in "ab")
        if row["received"] >= row["sent"] and row["kernel_drops"] == 0:
            break
        say(f"case {key}: {row['sent'] - row['received']} lines lost at {r}/s; retrying at half the rate")
        r //= 2
    if row["received"] < row["sent"] or row["flushed_series"] != series or not row.get("second_ok", True):
        ok = False
    rows.append(row)

mib = lambda kib: f"{kib / 1024:.1f}"
out = []
out.append(f"`{command}` — meterd `{meterd}`, {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} CPUs\n")
out.append("| case | series × samples | lines sent / received (kernel drops) | VmRSS before → after (MiB) | **bytes per series** | flushed series | flush ms | VmRSS after flush (MiB) | bytes per series, 2nd interval |")
out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
names = {"a": "a counters", "b": "b gauges", "c": "c timers", "e": "e timers (HDR)", "f": "f timers (raw, 1000)"}
for row in rows:
    per = (row["rss1"] - row["rss0"]) * 1024 / row["series"]
    second = "-"
    if "rss3" in row:
        second = f"{(row['rss3'] - row['rss0']) * 1024 / row['series']:,.0f}"
        second += "" if row["second_ok"] else " (lines lost or flushed early)"
    out.append(
        f"| {names[row['case']]} | {row['series']:,} × {row['per_series']} | "
        f"{row['sent']:,} / {row['received']:,} ({row['kernel_drops']}) | "
        f"{mib(row['rss0'])} → {mib(row['rss1'])} | **{per:,.0f}** | {row['flushed_series']:,} | "
        f"{row.get('flush_ms', '-')} | {mib(row['rss2'])} | {second} |"
    )
for row in rows:
    if "flush_sent" in row:
        lost = row["flush_sent"] - row["flush_received"]
        out.append(
            f"\nd) flush of {row['flushed_series']:,} counter series: **{row.get('flush_ms', '-')} ms** "
            f"(meterd_flush_duration_ms); across it {row['flush_sent']:,} lines sent at "
            f"{flush_rate:,}/s, {row['flush_received']:,} received, {lost:,} lost, "
            f"kernel drops {row['flush_drops']}."
        )
out.append("\nLoad commands (each against a fresh meterd; interval chosen so its first flush follows the measurement):\n")
for row in rows:
    out.append(f"- {row['case']}: `{row['cmd']}` (interval {row['interval']}s)")
    if "flush_cmd" in row:
        out.append(f"- d: `{row['flush_cmd']}`, from 2 s before the flush")
print("\n".join(out))
sys.exit(0 if ok else 1)
PY

rc=0
python3 "$WORK/memory.py" "$METERD" "$LOAD" "$WORK" "$CASES" "$RATE" "$FLUSH_RATE" "$SCALE" "${ARGV[*]}" \
  >"$WORK/table.md" || rc=$?
cat "$WORK/table.md"
if [[ -n $OUT ]]; then cat "$WORK/table.md" >>"$OUT"; fi
exit "$rc"
