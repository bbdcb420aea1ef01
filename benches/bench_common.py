"""What benches/ab.py, throughput.sh and soak.sh read from /proc, in one place.

ab.py and the scripts' helpers (throughput_helper.py, soak_helper.py) import it from beside
themselves. Linux only.
"""
import glob
import os
import sys

CLK = os.sysconf("SC_CLK_TCK")


def say(msg):
    print(msg, file=sys.stderr, flush=True)


def loadavg():
    """The 1, 5 and 15 minute load averages, as /proc/loadavg writes them."""
    return open("/proc/loadavg").read().split()[:3]


def threads(pid):
    """Per live thread of `pid`: (name, on-CPU ns, runqueue-wait ns) from schedstat, by tid.
    schedstat counts nanoseconds; utime + stime count 10 ms ticks, too coarse for a short run."""
    out = {}
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            comm = open(f"{task}/comm").read().strip()
            run, wait = open(f"{task}/schedstat").read().split()[:2]
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
        out[os.path.basename(task)] = (comm, int(run), int(wait))
    return out


def proc(pid):
    """CPU (ticks and schedstat), memory and thread count of process `pid`."""
    s = open(f"/proc/{pid}/stat").read()
    f = s[s.rindex(")") + 2:].split()
    status = {}
    for row in open(f"/proc/{pid}/status"):
        k, _, v = row.partition(":")
        if k in ("VmRSS", "VmHWM", "Threads"):
            status[k] = int(v.split()[0])
    ts = threads(pid).values()
    return {"cpu_s": (int(f[11]) + int(f[12])) / CLK, "rss_kb": status.get("VmRSS", 0),
            "hwm_kb": status.get("VmHWM", 0), "threads": status.get("Threads", 0),
            "sched_run_s": sum(t[1] for t in ts) / 1e9, "sched_wait_s": sum(t[2] for t in ts) / 1e9}


def udp_sockets(port):
    """The fields of each /proc/net/udp{,6} row whose local port is `port`."""
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            rows = open(path).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if len(f) > 12 and int(f[1].rsplit(":", 1)[1], 16) == port:
                yield f


def udp_stat(port):
    """Receive-queue bytes, drops and socket count of the UDP sockets bound to `port`."""
    q = drops = n = 0
    for f in udp_sockets(port):
        q += int(f[4].split(":")[1], 16)
        drops += int(f[-1])
        n += 1
    return {"rx_queue": q, "drops": drops, "sockets": n}
