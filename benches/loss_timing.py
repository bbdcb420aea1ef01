#!/usr/bin/env python3
"""When a meterd near its capacity drops datagrams: the kernel's drops over time, by phase.

    python3 benches/loss_timing.py target/release/meterd [--workload dogstatsd] [--rate 2200000]
                                   [--secs 30] [--runs 1] [--load target/release/meterd-load]
                                   [--nice -10] [--buffer 4194304] [--ingest LINE] [--threads]

Starts BINARY pinned to CPU 1 (one reader, 10 s interval, console JSON sink, the debug log for
each flush's end), sends every series once, then offers `--rate` lines/s from meterd-load on
CPU 0 for `--secs` seconds, `--runs` times with 2 s of quiet before each, and reads the socket's
drop counter (`/proc/net/udp`) every 20 ms. Prints each change with its time in the interval,
each run's drops (all, and in its first 0.3 s: the nap taken at the quiet rate before), then the
drops by phase: in the first second of an interval (the swap, the new series of the next
interval and the render beside them), in the half second after a flush ended (its tables freed,
its heap trimmed), and elsewhere. `meterd_udp_kernel_drops_total` on /metrics cannot tell these
apart: it is read once per flush. `--buffer`: bytes of socket buffer asked (throughput.sh asks
8388608). `--threads`: also each thread's CPU time and minor page faults every 100 ms, summed
over the runs by half second of the interval (what the reader did where the drops fell). Only
127.0.0.1; bounded by --secs and --runs.
"""
import argparse
import datetime
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import INTERVAL_S, free_port, meterd_toml, stop, threads, udp_stat  # noqa: E402

FLUSHED = re.compile(r"^(\S+?)Z\s+DEBUG meterd::flush: flushed points=(\d+) ms=(\d+)")


def udp_drops(port):
    """The drops of the UDP socket bound to `port`, or None before it is bound."""
    stat = udp_stat(port)
    return stat["drops"] if stat["sockets"] else None


def flush_ends(log):
    """Unix times at which flushes that rendered points ended (the debug log's `flushed`)."""
    ends = []
    for line in log.splitlines():
        m = FLUSHED.match(line)
        if m and int(m.group(2)) > 100:
            at = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc)
            ends.append(at.timestamp())
    return ends


def add_thread_deltas(bins, half, seen, pid):
    """Adds each thread's CPU ns and minor faults since `seen` to `bins[(half, name)]`; returns
    the new snapshot."""
    now = threads(pid, faults=True)
    for tid, (comm, run, _, faults) in now.items():
        if tid in seen:
            b = bins.setdefault((half, comm), [0, 0])
            b[0] += run - seen[tid][1]
            b[1] += faults - seen[tid][3]
    return now


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("binary")
    p.add_argument("--workload", default="dogstatsd")
    p.add_argument("--rate", type=int, default=2_200_000)
    p.add_argument("--secs", type=int, default=30)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--buffer", type=int, default=4194304)
    p.add_argument("--load", default="target/release/meterd-load")
    p.add_argument("--nice", type=int, default=0)
    p.add_argument("--ingest", action="append", default=[], help="a line for the [ingest] table")
    p.add_argument("--threads", action="store_true", help="each thread's CPU and page faults by half second")
    a = p.parse_args()
    if not 1 <= a.secs <= 600:
        sys.exit("loss_timing.py: --secs must be 1..600")
    if not 1 <= a.runs <= 20:
        sys.exit("loss_timing.py: --runs must be 1..20")
    interval = float(INTERVAL_S)  # the interval meterd_toml configures
    udp, http = free_port(socket.SOCK_DGRAM), f"127.0.0.1:{free_port(socket.SOCK_STREAM)}"
    with tempfile.TemporaryDirectory(prefix="meterd-loss.") as work:
        conf, log_path = os.path.join(work, "meterd.toml"), os.path.join(work, "meterd.log")
        with open(conf, "w") as f:
            f.write(meterd_toml(udp, http, a.ingest, a.buffer))
        env = dict(os.environ, RUST_LOG="meterd=debug")
        with open(log_path, "w") as log:
            proc = subprocess.Popen(["nice", "-n", str(a.nice), "taskset", "-c", "1", a.binary, "--config", conf],
                                    stdout=subprocess.DEVNULL, stderr=log, env=env)
        try:
            deadline = time.time() + 10
            while udp_drops(udp) is None:
                if time.time() > deadline or proc.poll() is not None:
                    sys.exit(f"loss_timing.py: {a.binary} did not start")
                time.sleep(0.05)
            load = ["nice", "-n", str(a.nice), a.load, "--to", f"127.0.0.1:{udp}", "--workload", a.workload,
                    "--cpu", "0", "--quiet"]
            # Every series once, so that the runs update series rather than make them.
            subprocess.run(load + ["--rate", "200000", "--count", "200000"], check=True, timeout=60)
            changes, last, runs, bins = [], udp_drops(udp) or 0, [], {}
            for _ in range(a.runs):
                time.sleep(2)
                start = time.time()
                gen = subprocess.Popen(load + ["--rate", str(a.rate), "--duration", str(a.secs)])
                ours = len(changes)
                seen, seen_at = threads(proc.pid, faults=True) if a.threads else None, start
                while time.time() < start + a.secs + 1 or gen.poll() is None:
                    now, drops = time.time(), udp_drops(udp)
                    if drops is not None and drops != last:
                        changes.append((now, drops - last))
                        last = drops
                    if seen is not None and now - seen_at >= 0.1:
                        seen, seen_at = add_thread_deltas(bins, int(now % interval * 2) / 2, seen, proc.pid), now
                    time.sleep(0.02)
                gen.wait(timeout=30)
                mine = changes[ours:]
                runs.append((sum(n for _, n in mine), sum(n for at, n in mine if at - start < 0.3)))
        finally:
            stop(proc)
        ends = flush_ends(open(log_path).read())
    phases = {"first 1 s of an interval": 0, "0.5 s after a flush ended": 0, "elsewhere": 0}
    for at, n in changes:
        into = at % interval
        print(f"{time.strftime('%H:%M:%S', time.gmtime(at))}.{int(at % 1 * 1000):03d} "
              f"({into:5.2f} s into the interval): +{n} datagrams")
        if into < 1.0:
            phases["first 1 s of an interval"] += n
        elif any(0 <= at - e < 0.5 for e in ends):
            phases["0.5 s after a flush ended"] += n
        else:
            phases["elsewhere"] += n
    if bins:
        comms = sorted({c for _, c in bins})
        print("s into the interval | " + " | ".join(f"{c}: CPU ms, faults" for c in comms))
        for half in sorted({h for h, _ in bins}):
            cells = (bins.get((half, c), [0, 0]) for c in comms)
            print(f"{half:4.1f} | " + " | ".join(f"{run / 1e6:7.0f} {faults:7d}" for run, faults in cells))
    for i, (n, early) in enumerate(runs):
        print(f"run {i + 1}: {n} datagrams dropped, {early} in its first 0.3 s")
    durations = ", ".join(f"{e % interval:.2f}" for e in ends)
    print(f"{a.workload} at {a.rate:,} lines/s for {a.runs} × {a.secs} s: {sum(phases.values())} datagrams dropped; "
          + "; ".join(f"{k}: {v}" for k, v in phases.items())
          + f" (flushes ended {durations} s into their intervals)")


if __name__ == "__main__":
    main()
