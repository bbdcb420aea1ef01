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
hits both builds alike, where two back-to-back batches would charge it to one of them. Only
127.0.0.1; every run is bounded by --secs.

`--perf PREFIX` records each measured run with `perf record -g` (of the aggregator's process,
kernel included) into PREFIX.A1.data, PREFIX.B1.data, … for `perf report -i`: the profile at
the offered rate, e.g. `ab.py B B --rounds 1 --workload mixed --perf /tmp/mixed`. The recording
costs CPU of its own, so take ns/line from runs without it.
"""
import argparse
import json
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
from bench_common import free_port, meterd_toml, stop, threads  # noqa: E402


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
        # Warm-up: every series exists before the measured run.
        subprocess.run(load + ["--rate", "200000", "--count", str(a.warm)], check=True)
        time.sleep(0.5)
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
        print(f"{a.workload}{mix} at {a.rate:,} lines/s, {a.rounds} rounds of {a.secs} s, {what}: "
              f"A median {ma:.1f} ns/line, B median {mb:.1f} ns/line, B/A = {ratio}")


if __name__ == "__main__":
    main()
