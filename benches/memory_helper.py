"""The measurement of benches/memory.sh: per case, a fresh meterd, VmRSS before and after one
case's lines from meterd-load, the flush that follows; then the markdown table.

    python3 benches/memory_helper.py METERD LOAD WORK CASES RATE FLUSH_RATE SCALE COMMAND

(as memory.sh calls it; exits 1 when a case lost lines or flushed other than its series).
"""
import json, math, os, re, signal, subprocess, sys, time, urllib.request

# Set by main() from the command line; read by the functions below.
meterd = load = work = command = ""
cases = []
rate = flush_rate = scale = 0


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
    cmd = [
        load, "--to", f"127.0.0.1:{port}", "--series", str(series), "--types", types,
        "--tags", "0", "--sample-rate", "1", "--lines-per-datagram", "25",
        "--count", str(count), "--rate", str(r), "--seed", str(seed),
        "--totals", totals, "--quiet",
    ]
    if types == "s":
        # Every line generated once: the default ring (two passes over the series, repeated)
        # would give each set series only the few members its lines in the ring draw.
        cmd[1:1] = ["--ring-datagrams", str(-(-count // 25))]
    return cmd


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


def run_cases():
    """Runs the cases asked for (retrying a lossy one at half the rate, at most twice); returns
    their rows and whether every one was as expected."""
    plan = {
        "a": (1_000_000, "c", "counter", 1),
        "b": (1_000_000, "g", "gauge", 1),
        "c": (100_000, "ms", "timer", 100),
        "e": (10_000, "ms", "timer", 2000),
        "f": (10_000, "ms", "timer", 1000),
        "g": (20_000, "s", "set", 500),
    }
    rows = []
    ok = True
    for key in ["a", "b", "c", "e", "f", "g"]:
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
    return rows, ok


def table(rows):
    """The markdown report of the cases' rows."""
    mib = lambda kib: f"{kib / 1024:.1f}"
    out = []
    out.append(f"`{command}` — meterd `{meterd}`, {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} CPUs\n")
    out.append("| case | series × samples | lines sent / received (kernel drops) | VmRSS before → after (MiB) | **bytes per series** | flushed series | flush ms | VmRSS after flush (MiB) | bytes per series, 2nd interval |")
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    names = {"a": "a counters", "b": "b gauges", "c": "c timers", "e": "e timers (HDR)", "f": "f timers (raw, 1000)",
             "g": "g sets (~100 members)"}
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
    return "\n".join(out)


def main(argv):
    global meterd, load, work, cases, rate, flush_rate, scale, command
    meterd, load, work, cases, rate, flush_rate, scale, command = argv[1:9]
    rate, flush_rate, scale = int(rate), int(flush_rate), int(scale)
    cases = cases.split(",")
    rows, ok = run_cases()
    print(table(rows))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main(sys.argv)
