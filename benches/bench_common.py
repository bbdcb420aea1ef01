"""What benches/ab.py, loss_timing.py, throughput.sh and soak.sh read from /proc, in one place,
and the meterd configuration ab.py and loss_timing.py run.

ab.py, loss_timing.py and the scripts' helpers (throughput_helper.py, soak_helper.py) import it
from beside themselves; throughput.sh and soak.sh run `python3 benches/bench_common.py cpu` for
the CPU line of their reports. Linux only.
"""
import glob
import os
import socket
import subprocess
import sys
import time

CLK = os.sysconf("SC_CLK_TCK")


def free_port(kind):
    """A free 127.0.0.1 port for `kind` (socket.SOCK_DGRAM or SOCK_STREAM)."""
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# The flush interval of the configuration below, in seconds. meterd flushes at wall-clock
# multiples of it.
INTERVAL_S = 10


def meterd_toml(udp, http, ingest=(), buffer=4194304):
    """One reader on 127.0.0.1:`udp` (`buffer` bytes asked; the default, 4 MiB, is 8 MiB as the
    kernel reports it: the full nap), the API on `http`, an INTERVAL_S interval, a console JSON
    sink; `ingest` lines join the `[ingest]` table."""
    return (f'interval = "{INTERVAL_S}s"\n[ingest]\nstatsd_udp = ["127.0.0.1:{udp}"]\nreaders = 1\n'
            f'read_buffer_bytes = {buffer}\n' + "".join(f"{line}\n" for line in ingest) +
            f'[http]\nlisten = "{http}"\n[[sinks]]\ntype = "console"\nformat = "json"\n')


def wait_for_phase(phase):
    """Sleeps until `phase` seconds after a wall-clock multiple of INTERVAL_S: a run started
    there meets the flush at the same point of its window whatever else ran before it."""
    time.sleep((phase - time.time()) % INTERVAL_S)


def stop(proc):
    """Terminates `proc`, killing it after 15 s."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def cpu_model():
    """The CPU as /proc/cpuinfo names it, with its family, model and clock: the name alone
    ("AMD EPYC") covers several generations, whose CPU per line differs."""
    fields = {}
    for line in open("/proc/cpuinfo"):
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
        if not line.strip():
            break
    return (f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, "
            f"model {fields.get('model', '?')}, {fields.get('cpu MHz', '?')} MHz)")


def say(msg):
    print(msg, file=sys.stderr, flush=True)


def loadavg():
    """The 1, 5 and 15 minute load averages, as /proc/loadavg writes them."""
    return open("/proc/loadavg").read().split()[:3]


def threads(pid, faults=False):
    """Per live thread of `pid`: (name, on-CPU ns, runqueue-wait ns) from schedstat, by tid, and
    with `faults` its minor page faults fourth (from its stat). schedstat counts nanoseconds;
    utime + stime count 10 ms ticks, too coarse for a short run."""
    out = {}
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            comm = open(f"{task}/comm").read().strip()
            run, wait = open(f"{task}/schedstat").read().split()[:2]
            row = (comm, int(run), int(wait))
            if faults:
                stat = open(f"{task}/stat").read()
                row += (int(stat[stat.rindex(")") + 2:].split()[7]),)
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
        out[os.path.basename(task)] = row
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


if __name__ == "__main__":
    # `python3 benches/bench_common.py cpu`: the CPU line throughput.sh and soak.sh record.
    if sys.argv[1:] == ["cpu"]:
        print(cpu_model())
    else:
        sys.exit("usage: bench_common.py cpu")
