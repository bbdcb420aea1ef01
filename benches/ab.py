#!/usr/bin/env python3
"""Interleaved A/B of two meterd builds: CPU per line at a fixed offered rate.

    python3 benches/ab.py A/meterd B/meterd [--workload plain] [--types MIX] [--rate 1000000]
                          [--secs 8] [--rounds 5] [--load target/release/meterd-load] [--nice -10]
                          [--config FILE] [--config-b FILE] [--ingest LINE] [--ingest-b LINE]

`--config FILE` appends FILE's TOML (e.g. `[[mappings]]` tables; top-level tables only, as it
follows the generated `[[sinks]]`) to both builds' config, `--config-b FILE` to B's alone: e.g.
`--config-b benches/mapping_rules.toml` prices a realistic rule set against a build without it.
`--ingest LINE` / `--ingest-b LINE` (repeatable) add a key to the generated `[ingest]` table of
both builds / of B alone: e.g. `ab.py M M --ingest-b 'read_coalesce = "20ms"'` prices a setting
on one build.

Each round starts A, then B (the order alternates every round), each pinned to CPU 1 with the
load generator on CPU 0, warms every series up, offers `--rate` lines/s for `--secs` seconds and
reads the aggregator's CPU time (each thread's /proc schedstat run time, in ns, summed): of the
process, of its datagram reader threads alone (which leaves out flushes that fall into a run),
and of its runtime threads (flush rendering, sinks, HTTP) and the lines it counted
(`meterd_lines_received_total` on /metrics). Prints each run and the median ns/line of each
build with the ratio B ÷ A. Interleaving matters on a shared machine: a neighbour's burst then
hits both builds alike, where two back-to-back batches would charge it to one of them. Every
run starts at the same point of meterd's flush interval (its warm-up 1 s after a flush, its
measured window 4 s after), so each window holds one flush at the same place. Only 127.0.0.1;
every run is bounded by --secs.

Besides the ratio of the medians, each group's line gives B ÷ A per pair of rounds (two rounds
in turn, one in each order: the geometric mean of their own B ÷ A, which cancels a cost of
running first or second and a steady drift of the host) as a median and a distribution-free
interval (order statistics of the binomial: the narrowest symmetric pair of them whose coverage
is at least 95 %, or the whole range when there are too few pairs for that; the coverage is
printed, and below 90 %, with fewer than five pairs, no verdict). The host's speed drifts
over an hour by more than most changes are worth; a pair of rounds shares its drift. An
interval that holds 1.000 means the rounds did not tell the builds apart: before the runs were
aligned to the flush, one build against itself read B lower in 8 of 9 rounds (0.975 per
round), which its four pairs did not (their range 0.970–1.009). 16 rounds give 8 pairs.
Prints the CPU's name, family, model and clock first.

`--perf PREFIX` records each measured run with `perf record -g` (of the aggregator's process,
kernel included) into PREFIX.A1.data, PREFIX.B1.data, … for `perf report -i`: the profile at
the offered rate, e.g. `ab.py B B --rounds 1 --workload mixed --perf /tmp/mixed`. The recording
costs CPU of its own, so take ns/line from runs without it.
"""
import argparse
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import (  # noqa: E402
    cpu_model, free_port, meterd_toml, stop, threads, wait_for_phase)


# Seconds after a flush at which each run's warm-up starts (it and the half second after it take
# at most 2 s with the default --warm), and at which its measured window starts: the window then
# holds the next flush and, with the default --secs 8, the two seconds after it.
WARM_PHASE = 1.0
WINDOW_PHASE = 4.0

# What each run reports, by thread name prefix ("" = every thread).
GROUPS = {"process": "", "reader thread": "meterd-udp", "runtime threads": "meterd-rt"}


def cpu(pid):
    """CPU seconds of each of GROUPS, summed over the live threads (schedstat, in ns)."""
    sums = dict.fromkeys(GROUPS, 0.0)
    for comm, run, _ in threads(pid).values():
        for group, prefix in GROUPS.items():
            if comm.startswith(prefix):
                sums[group] += run / 1e9
    return sums


def lines_received(http):
    body = urllib.request.urlopen(f"http://{http}/metrics", timeout=5).read().decode()
    m = re.search(r"^meterd_lines_received_total(?:\{[^}]*\})? ([0-9.e+]+)$", body, re.M)
    return float(m.group(1)) if m else 0.0


def run(binary, a, work, extras=(), perf=None, ingest=()):
    udp, http = free_port(socket.SOCK_DGRAM), f"127.0.0.1:{free_port(socket.SOCK_STREAM)}"
    conf = os.path.join(work, "meterd.toml")
    with open(conf, "w") as f:
        f.write(meterd_toml(udp, http, ingest))
        for extra in extras:
            f.write("\n" + open(extra).read())
    proc = subprocess.Popen(["nice", "-n", str(a.nice), "taskset", "-c", "1", binary, "--config", conf],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while True:
            try:
                lines_received(http)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    sys.exit(f"ab.py: {binary} did not start")
                time.sleep(0.05)
        load = ["nice", "-n", str(a.nice), a.load, "--to", f"127.0.0.1:{udp}", "--workload", a.workload,
                "--cpu", "0", "--quiet"] + (["--types", a.types] if a.types else [])
        # Every run starts at the same point of the flush interval. Without it, each run's
        # window met the flush at a point that depended on the runs before it, and one build
        # against itself read 0.958 over nine rounds (dogstatsd; runtime threads 0.830).
        wait_for_phase(WARM_PHASE)
        # Warm-up: every series exists before the measured run.
        subprocess.run(load + ["--rate", "200000", "--count", str(a.warm)], check=True)
        time.sleep(0.5)
        wait_for_phase(WINDOW_PHASE)
        cpu0, lines0 = cpu(proc.pid), lines_received(http)
        totals = os.path.join(work, "totals.json")
        recorder = None
        if perf:
            recorder = subprocess.Popen(["perf", "record", "-q", "-g", "-F", "1999", "-p", str(proc.pid), "-o", perf],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(load + ["--rate", str(a.rate), "--duration", str(a.secs), "--totals", totals], check=True)
        if recorder:
            recorder.send_signal(signal.SIGINT)
            recorder.wait(timeout=60)
        sent = json.load(open(totals))["lines"]
        deadline = time.time() + 5
        while lines_received(http) - lines0 < sent and time.time() < deadline:
            time.sleep(0.05)
        lines = lines_received(http) - lines0
        cpu1 = cpu(proc.pid)
        per_line = {g: (cpu1[g] - cpu0[g]) * 1e9 / lines if lines else float("nan") for g in GROUPS}
        return {"per_line": per_line, "loss": 1 - lines / sent}
    finally:
        stop(proc)


def median_interval(xs, level=0.95):
    """The median of `xs` and a distribution-free interval for it: the k-th smallest and k-th
    largest value, k the largest for which the binomial tails outside hold at most 1 - `level`
    (at least 1, so that few pairs still give their range). Returns (median, low, high,
    coverage)."""
    xs = sorted(xs)
    n = len(xs)
    tail = lambda k: sum(math.comb(n, i) for i in range(k)) / 2 ** n  # P(Binom(n, 1/2) < k)
    k = 1
    while k + 1 <= n // 2 and 2 * tail(k + 1) <= 1 - level:
        k += 1
    return statistics.median(xs), xs[k - 1], xs[n - k], 1 - 2 * tail(k)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--workload", default="plain")
    p.add_argument("--rate", type=int, default=1_000_000)
    p.add_argument("--secs", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warm", type=int, default=0, help="warm-up lines (default: 3 × the workload's series)")
    p.add_argument("--types", default="", help="meterd-load --types, e.g. ms (timers only) or c:5,g:2")
    p.add_argument("--load", default="target/release/meterd-load")
    p.add_argument("--nice", type=int, default=0)
    p.add_argument("--config", default="", help="TOML appended to both builds' config")
    p.add_argument("--config-b", default="", help="TOML appended to B's config only")
    p.add_argument("--ingest", action="append", default=[], help="a line for both builds' [ingest] table")
    p.add_argument("--ingest-b", action="append", default=[], help="a line for B's [ingest] table only")
    p.add_argument("--perf", default="", help="perf record each measured run into PERF.A1.data, PERF.B1.data, …")
    a = p.parse_args()
    if a.warm == 0:
        a.warm = 300_000 if a.workload == "dogstatsd" else 30_000
    results = {g: {"A": [], "B": []} for g in GROUPS}
    print(f"CPU: {cpu_model()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="meterd-ab.") as work:
        for r in range(a.rounds):
            order = [("A", a.a), ("B", a.b)] if r % 2 == 0 else [("B", a.b), ("A", a.a)]
            for name, binary in order:
                extras = [c for c in (a.config, a.config_b if name == "B" else "") if c]
                perf = f"{a.perf}.{name}{r + 1}.data" if a.perf else None
                ingest = a.ingest + (a.ingest_b if name == "B" else [])
                res = run(binary, a, work, extras, perf, ingest)
                for g, v in res["per_line"].items():
                    results[g][name].append(v)
                pl = res["per_line"]
                print(f"round {r + 1} {name}: {pl['process']:.1f} ns/line (reader thread "
                      f"{pl['reader thread']:.1f}, runtime threads {pl['runtime threads']:.1f}), "
                      f"loss {res['loss'] * 100:.3f} %", flush=True)
    for what, d in results.items():
        ma, mb = statistics.median(d["A"]), statistics.median(d["B"])
        ratio = f"{mb / ma:.3f}" if ma else "-"
        mix = f" (types {a.types})" if a.types else ""
        rounds = [b / a_ if a_ > 0 else math.nan for a_, b in zip(d["A"], d["B"])]
        pairs = [math.sqrt(x * y) for x, y in zip(rounds[0::2], rounds[1::2])]
        pairs = [p_ for p_ in pairs if not math.isnan(p_)]
        within = ""
        if pairs:
            med, low, high, cover = median_interval(pairs)
            if cover < 0.9:
                verdict = "too few pairs to judge (10 rounds or more)"
            elif low <= 1 <= high:
                verdict = "not told apart"
            else:
                verdict = "B cheaper" if high < 1 else "B dearer"
            within = (f"; per pair of rounds B/A median {med:.3f}, {cover * 100:.0f} % interval "
                      f"{low:.3f}–{high:.3f} ({len(pairs)} of them): {verdict}")
        print(f"{a.workload}{mix} at {a.rate:,} lines/s, {a.rounds} rounds of {a.secs} s, {what}: "
              f"A median {ma:.1f} ns/line, B median {mb:.1f} ns/line, B/A = {ratio}{within}")


if __name__ == "__main__":
    main()
