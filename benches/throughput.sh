#!/usr/bin/env bash
# Side-by-side throughput benchmark (issue 6): meterd, collectd's statsd plugin and Etsy statsd
# 0.9.0 driven by meterd-load with the same workloads and the same socket receive buffer.
#
#   benches/throughput.sh --smoke            seconds, tiny rates, meterd (plus peers already
#                                            installed); exits non-zero if meterd lost or
#                                            miscounted anything or the script broke. For CI.
#   benches/throughput.sh [--out FILE] ...   the full run (many minutes): installs the peers,
#                                            raises net.core.rmem_default/rmem_max for them
#                                            (restored on exit), prints a markdown table and
#                                            appends it with the command and machine facts to FILE.
#
# Per peer and workload it reports: CPU ns per line at 1M lines/s offered (utime+stime from
# /proc/PID/stat over the run ÷ lines processed), lines/s processed when flooded, the highest
# offered rate held at < 0.1 % loss (log bisection over short runs) and resident memory. Loss is
# 1 − processed ÷ sent, with "sent" from meterd-load's totals and "processed" from the peer itself:
# meterd's /metrics (meterd_lines_received_total), statsd's sumlog lines (metrics_received),
# collectd's CSV files (counter totals and timer counts, scaled to lines). Each run is
# cross-checked with the kernel's drop counters (/proc/net/udp drops for the port, /proc/net/snmp
# RcvbufErrors). The load generator runs on CPU 0, the aggregator on CPU 1; only 127.0.0.1.
# The bookkeeping lives in the Python helper below (python3 is on every machine of this kind).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: benches/throughput.sh [--smoke] [--out FILE] [options]
  --smoke              seconds-long check for CI (meterd exact, peers only if installed)
  --out FILE           append the results (markdown) to FILE
  --peers LIST         meterd,collectd,statsd (default all three)
  --workloads LIST     plain,dogstatsd (default both; collectd runs plain only)
  --rcvbuf BYTES       socket receive buffer of every peer (default 8388608)
  --run-secs N         length of each measured run (default 11: spans a 10 s flush)
  --steps N            bisection steps of the held-rate search (default 6)
  --cpu-rate N         offered rate of the CPU measurement (default 1000000)
  --lo-rate N          lowest rate the search tries (default 20000)
  --meterd-readers N   meterd's [ingest] readers (default 1: it gets one core)
  --nice N             run the generator and the aggregators at this nice value, and give the
                       script's scheduler autogroup the same (restored on exit: with
                       sched_autogroup a process's nice only counts within its session), so that
                       other work on a shared machine does not take their cores (default 0)
  --perf               record `perf record -g` of meterd during its flood runs
  --keep               keep the work directory
EOF
}

SMOKE=0
OUT=""
PEERS="meterd,collectd,statsd"
WORKLOADS="plain,dogstatsd"
RCVBUF=8388608
RUN_SECS=11
STEPS=6
CPU_RATE=1000000
LO_RATE=20000
READERS=1
PERF=0
NICE=0
KEEP=0
LOAD_CPU=0
PEER_CPU=1
ARGV=("$0" "$@")
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --out) OUT="$2"; shift ;;
    --peers) PEERS="$2"; shift ;;
    --workloads) WORKLOADS="$2"; shift ;;
    --rcvbuf) RCVBUF="$2"; shift ;;
    --run-secs) RUN_SECS="$2"; shift ;;
    --steps) STEPS="$2"; shift ;;
    --cpu-rate) CPU_RATE="$2"; shift ;;
    --lo-rate) LO_RATE="$2"; shift ;;
    --meterd-readers) READERS="$2"; shift ;;
    --perf) PERF=1 ;;
    --nice) NICE="$2"; shift ;;
    --keep) KEEP=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "throughput.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
for n in "$RCVBUF" "$RUN_SECS" "$STEPS" "$CPU_RATE" "$LO_RATE" "$READERS"; do
  [[ $n =~ ^[0-9]+$ ]] || { echo "throughput.sh: $n is not a number" >&2; exit 2; }
done
(( RUN_SECS >= 1 && RUN_SECS <= 120 )) || { echo "throughput.sh: --run-secs must be 1..120" >&2; exit 2; }
(( STEPS <= 20 )) || { echo "throughput.sh: --steps must be at most 20" >&2; exit 2; }
[[ $NICE =~ ^-?[0-9]+$ ]] && (( NICE >= -20 && NICE <= 19 )) || { echo "throughput.sh: --nice must be -20..19" >&2; exit 2; }
if (( $(nproc) < 2 )); then PEER_CPU=0; fi

ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
PEERS_DIR="$ROOT/../shared/bench-peers"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/meterd-bench.XXXXXX)
SHM=$(mktemp -d /dev/shm/meterd-bench.XXXXXX)
RECORDS="$WORK/runs.jsonl"
PIDS=()
SYSCTL_SAVED=""
AUTOGROUP_SAVED=""
PEER_PID=""

log() { printf '== %s\n' "$*" >&2; }

stop_pid() { # PID: SIGTERM, up to 30 s for a final flush, then SIGKILL
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

cleanup() {
  local rc=$? p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  if [[ -n $AUTOGROUP_SAVED ]]; then
    echo "$AUTOGROUP_SAVED" >/proc/$$/autogroup 2>/dev/null || echo "throughput.sh: could not restore the autogroup nice $AUTOGROUP_SAVED" >&2
  fi
  if [[ -n $SYSCTL_SAVED ]]; then
    # shellcheck disable=SC2086
    sysctl -q -w $SYSCTL_SAVED >/dev/null || echo "throughput.sh: could not restore $SYSCTL_SAVED" >&2
  fi
  rm -rf "$SHM"
  if [[ $KEEP == 1 ]]; then echo "throughput.sh: work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# The measurement helper: snapshots, runs, drains, flush waits, loss, search, exactness, tables.
cat >"$WORK/bench.py" <<'PY'
import argparse, glob, json, math, os, re, subprocess, sys, time, urllib.request

from bench_common import loadavg, proc, say, threads, udp_stat


def snmp():
    rows = [r.split() for r in open("/proc/net/snmp") if r.startswith("Udp:")]
    d = dict(zip(rows[0][1:], (int(x) for x in rows[1][1:])))
    return {"rcvbuf_errors": d.get("RcvbufErrors", 0), "in_errors": d.get("InErrors", 0)}


def sched_delta(before, after):
    """On-CPU and runqueue-wait seconds between two snapshots, over threads alive at both plus
    threads started in between (a thread that exited takes its times with it)."""
    on = wait = 0
    for tid, (_, a_on, a_wait) in after.items():
        _, b_on, b_wait = before.get(tid, ("", 0, 0))
        on, wait = on + a_on - b_on, wait + a_wait - b_wait
    return on / 1e9, wait / 1e9


def complete_rows(path):
    """The rows of a CSV file collectd may be writing: only those ended by a newline (a file
    just created is empty, and a row being written is cut), none if it cannot be read."""
    try:
        text = open(path).read()
    except OSError:
        return []
    return text.split("\n")[:-1]


class Peer:
    """How to read what a peer processed, and how to wait until it has reported it."""

    def __init__(self, a):
        self.kind, self.pid, self.port = a.peer, a.pid, a.port
        self.source, self.interval = a.source, a.interval
        self.ref = None

    def alive(self):
        return os.path.exists(f"/proc/{self.pid}")

    def state(self):
        if self.kind == "meterd":
            text = urllib.request.urlopen(self.source, timeout=5).read().decode()
            out = {"lines": 0, "invalid": 0, "kernel_drops": 0}
            for row in text.splitlines():
                m = re.match(r"^(meterd_[a-z_]+)(\{[^}]*\})? ([0-9.e+]+)$", row)
                if not m:
                    continue
                name, v = m.group(1), float(m.group(3))
                if name == "meterd_lines_received_total":
                    out["lines"] = int(v)
                elif name == "meterd_lines_invalid_total":
                    out["invalid"] += int(v)
                elif name == "meterd_udp_kernel_drops_total":
                    out["kernel_drops"] = int(v)
            return out
        if self.kind == "statsd":
            out = {"lines": 0, "flushes": 0, "c": 0.0, "ms": 0.0, "bad": 0}
            try:
                rows = open(self.source).read().splitlines()
            except OSError:
                rows = []
            for row in rows:
                try:
                    d = json.loads(row)
                except ValueError:
                    continue
                out["flushes"] += 1
                out["lines"] += d.get("metrics_received", 0)
                out["bad"] += d.get("bad_lines_seen", 0)
                out["c"] += d.get("counters", {}).get("c", 0)
                out["ms"] += d.get("timer_count", {}).get("ms", 0)
            return out
        # collectd: cumulative counter totals (last row of each derive file) and every timer
        # count row written so far (the -count gauges are per interval).
        out = {"c": 0.0, "ms": 0.0}
        latest = {}
        for path in glob.glob(os.path.join(self.source, "derive-load.c.*")):
            series = path[: -len("-YYYY-MM-DD")]
            if path > latest.get(series, ""):
                latest[series] = path
        for path in latest.values():
            rows = complete_rows(path)
            if rows and not rows[-1].startswith("epoch"):  # a data row, not the header alone
                out["c"] += float(rows[-1].split(",")[1])
        for path in glob.glob(os.path.join(self.source, "gauge-load.ms.*-count-*")):
            for row in complete_rows(path)[1:]:
                out["ms"] += float(row.split(",")[1])
        if self.ref is None and latest:
            self.ref = sorted(latest.values())[0]
        return out

    def last_write(self):
        """collectd: epoch of the last row of a counter file (all are written every interval)."""
        if self.ref is None:
            self.state()
        if self.ref is None:
            return None
        rows = complete_rows(self.ref)
        try:
            return float(rows[-1].split(",")[0]) if rows else None
        except ValueError:
            return None  # the header row only

    def wait_reported(self, t_drain):
        """Waits until a flush that started after `t_drain` has been written."""
        deadline = time.time() + 2 * self.interval + 15
        if self.kind == "meterd":
            return
        if self.kind == "statsd":
            n = self.state()["flushes"]
            while time.time() < deadline and self.state()["flushes"] <= n:
                time.sleep(0.2)
            return
        while time.time() < deadline:
            t = self.last_write()
            if t is not None and t > t_drain + 0.05:
                return
            if t is None and time.time() > t_drain + self.interval + 2:
                return
            time.sleep(0.25)
        raise SystemExit(f"{self.kind} wrote no flush within {2 * self.interval + 15} s")


def wait_drained(peer, timeout=90):
    """Until the socket's queue stays empty (and meterd's line counter stops moving); returns when
    the queue was first seen empty, so that polling does not stretch the measured window."""
    deadline, zero, last, first_zero = time.time() + timeout, 0, None, None
    while time.time() < deadline:
        if not peer.alive():
            raise SystemExit(f"{peer.kind} (pid {peer.pid}) died during the run")
        now = time.time()
        if udp_stat(peer.port)["rx_queue"] == 0:
            zero += 1
            first_zero = first_zero or now
            cur = peer.state()["lines"] if peer.kind == "meterd" else None
            if zero >= 2 and cur == last:
                return first_zero
            last = cur
        else:
            zero, last, first_zero = 0, None, None
        time.sleep(0.05)
    raise SystemExit(f"{peer.kind}: socket queue not drained within {timeout} s")


def run_once(a, peer, phase, load_args, target):
    """One load run against a running peer; returns (and appends) its record."""
    totals_file = os.path.join(a.work, f"totals-{peer.kind}-{a.workload}-{phase}.json")
    before = {"proc": proc(peer.pid), "sched": threads(peer.pid), "udp": udp_stat(peer.port), "snmp": snmp(),
              "peer": peer.state()}
    la = loadavg()
    t0 = time.time()
    cmd = ["nice", "-n", str(a.nice), a.load, "--to", f"127.0.0.1:{peer.port}", "--workload", a.workload, "--cpu", str(a.load_cpu),
           "--quiet", "--totals", totals_file] + load_args
    subprocess.run(cmd, check=True)
    t_end = time.time()
    t_drain = wait_drained(peer)
    after_proc, after_sched = proc(peer.pid), threads(peer.pid)
    after_udp, after_snmp = udp_stat(peer.port), snmp()
    peer.wait_reported(t_drain)
    after_peer = peer.state()
    t = json.load(open(totals_file))
    sent = t["lines"]
    if peer.kind == "collectd":
        tx = t["counter_sum"] + t["timer_samples"]
        rx = (after_peer["c"] - before["peer"]["c"]) + (after_peer["ms"] - before["peer"]["ms"])
        processed = round(sent * rx / tx) if tx else 0
    else:
        processed = after_peer["lines"] - before["peer"]["lines"]
    window = t["duration_s"] + max(0.0, t_drain - t_end)
    cpu = after_proc["cpu_s"] - before["proc"]["cpu_s"]
    drops = after_udp["drops"] - before["udp"]["drops"]
    rec = {
        "peer": peer.kind, "workload": a.workload, "phase": phase, "target_rate": target,
        "sent": sent, "datagrams": t["datagrams"], "achieved_rate": t["lines_per_s"],
        "send_errors": t["send_errors"], "pacing_resets": t["pacing_resets"],
        "processed": processed, "loss": (1 - processed / sent) if sent else 0.0,
        "window_s": window, "processed_rate": processed / window if window > 0 else 0.0,
        "cpu_s": cpu, "ns_per_line": cpu * 1e9 / processed if processed else None,
        "kernel_drops_datagrams": drops,
        "kernel_lost_lines_est": round(drops * t["avg_lines_per_datagram"]),
        "rcvbuf_errors_delta": after_snmp["rcvbuf_errors"] - before["snmp"]["rcvbuf_errors"],
        "rss_kb": after_proc["rss_kb"], "hwm_kb": after_proc["hwm_kb"], "loadavg_start": la,
    }
    # Of the time the aggregator wanted a CPU, the share it got (< 100 %: other work on its core).
    on, rec["runq_wait_s"] = sched_delta(before["sched"], after_sched)
    rec["on_cpu_share"] = on / (on + rec["runq_wait_s"]) if on + rec["runq_wait_s"] > 0 else None
    if peer.kind == "meterd":
        rec["invalid"] = after_peer["invalid"] - before["peer"]["invalid"]
    if peer.kind in ("statsd", "collectd"):
        # Parsing sanity: counter and timer totals received ÷ sent (≈ 1 − loss when parsed right).
        dc, dm = after_peer["c"] - before["peer"]["c"], after_peer["ms"] - before["peer"]["ms"]
        rec["counter_ratio"] = dc / t["counter_sum"] if t["counter_sum"] else None
        ms_sent = sum(v["count"] for v in t["timers"].values() if v["type"] == "ms")
        rec["timer_ratio"] = dm / ms_sent if ms_sent else None
    rec["unexplained_lines"] = sent - processed - rec["kernel_lost_lines_est"]
    with open(a.records, "a") as f:
        f.write(json.dumps(rec) + "\n")
    say(f"   [{peer.kind} {a.workload} {phase}] sent {sent:,} at {t['lines_per_s']:,.0f}/s"
        f" -> processed {processed:,} ({rec['processed_rate']:,.0f}/s), loss {rec['loss'] * 100:.3f} %,"
        f" cpu {cpu:.2f} s ({(rec['ns_per_line'] or 0):.0f} ns/line), kernel drops {drops:,} datagrams,"
        f" rss {after_proc['rss_kb'] // 1024} MiB, on cpu {(rec['on_cpu_share'] or 0) * 100:.0f} % of runnable time,"
        f" load {' '.join(la)}")
    return rec


def cmd_phases(a):
    """Warm-up, CPU at a fixed rate, flood, held-rate search, memory: one running peer."""
    peer = Peer(a)
    secs = a.run_secs
    # Warm-up: every series once, so the runs below measure updates of existing series.
    run_once(a, peer, "warmup", ["--rate", "200000", "--count", str(a.warm_lines)], 200000)
    run_once(a, peer, "cpu", ["--rate", str(a.cpu_rate), "--duration", str(secs)], a.cpu_rate)
    if a.perf_out:
        perf = subprocess.Popen(["taskset", "-c", str(a.load_cpu), "perf", "record", "-F", "499", "--call-graph", "dwarf",
                                 "-p", str(peer.pid), "-o", a.perf_out, "--", "sleep", str(max(1, secs - 1))],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    flood = run_once(a, peer, "flood", ["--duration", str(secs)], 0)
    if a.perf_out:
        perf.wait(timeout=60)
    # Held at < 0.1 % loss: the lowest rate must pass; then 1.3 × the flooded rate is tried, going
    # up by 1.5× while it passes (at most 4 times, never beyond what the generator achieved flat
    # out), and the last passing and first failing rates are bisected in log space.
    ok = lambda r: r["loss"] < 0.001
    rnd = lambda x: float(f"{x:.3g}")
    held = lambda r: min(r["target_rate"], rnd(r["achieved_rate"]))
    gen_max = flood["achieved_rate"]
    step = lambda rate: run_once(a, peer, "search", ["--rate", str(rate), "--duration", str(secs)], rate)
    best, note, fail = None, "", None
    lo = float(a.lo_rate)
    r = step(lo)
    if not ok(r):
        fail = r
    else:
        best = held(r)
        hi = rnd(min(max(flood["processed_rate"] * 1.3, lo * 2), gen_max))
        ups = 0
        r = step(hi) if hi > lo else None
        while r is not None and ok(r):
            lo, best = hi, held(r)
            nxt = rnd(min(hi * 1.5, gen_max))
            if ups == 4 or nxt <= hi * 1.01:
                break
            hi, ups = nxt, ups + 1
            r = step(hi)
        if r is None or lo == hi:
            note = "highest rate tried" if r is not None and ups == 4 else "generator limit"
        else:
            fail = r
            for _ in range(a.steps):
                mid = rnd(math.sqrt(lo * hi))
                if mid <= lo or mid >= hi:
                    break
                r = step(mid)
                if ok(r):
                    lo, best = mid, max(best, held(r))
                else:
                    hi, fail = mid, r
    if fail is not None:
        note = note or f"fails at {fail['target_rate']:,.0f}/s: loss {fail['loss'] * 100:.2f} %"
    p = proc(peer.pid)
    summary = {"peer": peer.kind, "workload": a.workload, "phase": "summary", "held_rate": best,
               "held_note": note, "fail_rate": fail["target_rate"] if fail else None,
               "fail_loss": fail["loss"] if fail else None, "rss_kb": p["rss_kb"], "hwm_kb": p["hwm_kb"]}
    with open(a.records, "a") as f:
        f.write(json.dumps(summary) + "\n")
    say(f"   [{peer.kind} {a.workload}] held {best} lines/s ({note}),"
        f" rss {p['rss_kb'] // 1024} MiB, peak {p['hwm_kb'] // 1024} MiB")


def cmd_run(a):
    """One run (smoke mode): prints the record."""
    peer = Peer(a)
    rec = run_once(a, peer, a.phase, a.load_args, a.target)
    print(json.dumps(rec))


def cmd_exact(a):
    """meterd's flushed counters and timer counts against the summed totals, series by series."""
    want_c, want_t, want_g = {}, {}, set()
    for path in a.totals:
        t = json.load(open(path))
        for k, v in t["counters"].items():
            want_c[k] = want_c.get(k, 0.0) + v
        for k, v in t["timers"].items():
            want_t[k] = want_t.get(k, 0.0) + v["count"]
        want_g.update(t["gauges"])
    got_c, got_t, got_g = {}, {}, set()
    docs = 0
    for row in open(a.flush):
        row = row.strip()
        if not row.startswith("{"):
            continue
        docs += 1
        for m in json.loads(row).get("metrics", []):
            name = m["name"]
            parts = name.split(".")
            if parts[0] != "load" or len(parts) < 3:
                continue
            tags = sorted(m.get("tags") or [])
            key = lambda base: base + ("|#" + ",".join(tags) if tags else "")
            if len(parts) == 3 and parts[1] == "c" and m["kind"] == "counter":
                got_c[key(name)] = got_c.get(key(name), 0.0) + m["value"]
            elif len(parts) == 4 and parts[3] == "count" and parts[1] in ("ms", "h", "d"):
                base = key(".".join(parts[:3]))
                got_t[base] = got_t.get(base, 0.0) + m["value"]
            elif len(parts) == 3 and parts[1] == "g":
                got_g.add(key(name))
    close = lambda x, y: abs(x - y) <= 1e-9 * max(1.0, abs(x), abs(y))
    bad = []
    for want, got, what in ((want_c, got_c, "counter"), (want_t, got_t, "timer count")):
        for k in sorted(set(want) | set(got)):
            if not close(want.get(k, 0.0), got.get(k, 0.0)):
                bad.append(f"{what} {k}: sent {want.get(k, 0.0)}, flushed {got.get(k, 0.0)}")
    missing_g = sorted(want_g - got_g)
    bad += [f"gauge {k}: sent, never flushed" for k in missing_g[:20]]
    res = {"flush_documents": docs, "counters": len(want_c), "timers": len(want_t), "gauges": len(want_g),
           "mismatches": len(bad) + max(0, len(missing_g) - 20), "examples": bad[:10],
           "counter_sum_sent": sum(want_c.values()), "counter_sum_flushed": sum(got_c.values()),
           "timer_count_sent": sum(want_t.values()), "timer_count_flushed": sum(got_t.values())}
    print(json.dumps(res))
    if res["mismatches"] or docs == 0:
        sys.exit(1)


def fmt_rate(x):
    if x is None:
        return "–"
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.0f}k"


def cmd_table(a):
    recs = [json.loads(r) for r in open(a.records) if r.strip()]
    out = []
    names = {"meterd": "meterd", "collectd": "collectd 5 statsd plugin (C)", "statsd": "Etsy statsd 0.9.0 (Node)"}
    for w in a.workloads.split(","):
        rows = {}
        for r in recs:
            if r["workload"] != w:
                continue
            row = rows.setdefault(r["peer"], {})
            if r["phase"] in ("cpu", "flood", "summary"):
                row[r["phase"]] = r
        if not rows:
            continue
        out.append(f"\n### {w}\n")
        out.append("| peer | CPU per line at 1M lines/s offered (loss) | processed when flooded | "
                   "held at < 0.1 % loss | RSS at end (peak) |")
        out.append("| --- | --- | --- | --- | --- |")
        for p in ("meterd", "collectd", "statsd"):
            if p not in rows:
                continue
            c, f, s = rows[p].get("cpu"), rows[p].get("flood"), rows[p].get("summary")
            cpu = f"{c['ns_per_line']:.0f} ns ({c['loss'] * 100:.2f} %)" if c and c["ns_per_line"] else "–"
            fl = f"{fmt_rate(f['processed_rate'])} lines/s" if f else "–"
            if f and f.get("on_cpu_share") is not None:
                fl += f" (on CPU {f['on_cpu_share'] * 100:.0f} %)"
            if s and s["held_rate"] is not None:
                held = f"{fmt_rate(s['held_rate'])} lines/s"
                if s["fail_rate"]:
                    held += f" (fails at {fmt_rate(s['fail_rate'])}: {s['fail_loss'] * 100:.2f} % loss)"
                else:
                    held += f" ({s['held_note']})"
            elif s:
                held = f"< {fmt_rate(s['fail_rate'])} ({s['held_note']})"
            else:
                held = "–"
            mem = f"{s['rss_kb'] / 1024:.0f} MiB ({s['hwm_kb'] / 1024:.0f} MiB)" if s else "–"
            out.append(f"| {names[p]} | {cpu} | {fl} | {held} | {mem} |")
        m = rows.get("meterd", {})
        for p in ("collectd", "statsd"):
            if p not in rows or not m:
                continue
            o = rows[p]
            parts = []
            try:
                parts.append(f"{o['cpu']['ns_per_line'] / m['cpu']['ns_per_line']:.2f}× less CPU per line")
            except (KeyError, TypeError, ZeroDivisionError):
                pass
            try:
                parts.append(f"{m['flood']['processed_rate'] / o['flood']['processed_rate']:.2f}× the lines processed when flooded")
            except (KeyError, TypeError, ZeroDivisionError):
                pass
            try:
                parts.append(f"{m['summary']['held_rate'] / o['summary']['held_rate']:.2f}× the rate held")
            except (KeyError, TypeError, ZeroDivisionError):
                pass
            if parts:
                out.append(f"\nmeterd vs {names[p]}: " + ", ".join(parts) + ".")
        # Kernel cross-check of the flood and cpu runs.
        out.append("\nKernel cross-check (lines sent − processed − kernel drops × lines per datagram; "
                   "≈ 0 when every loss is a socket-buffer overflow):")
        for p in ("meterd", "collectd", "statsd"):
            for ph in ("cpu", "flood"):
                r = rows.get(p, {}).get(ph)
                if r:
                    out.append(f"- {p} {ph}: sent {r['sent']:,}, processed {r['processed']:,}, kernel drops "
                               f"{r['kernel_drops_datagrams']:,} datagrams (RcvbufErrors +{r['rcvbuf_errors_delta']:,}),"
                               f" unexplained {r['unexplained_lines']:,} lines; on CPU "
                               f"{(r.get('on_cpu_share') or 0) * 100:.0f} % of its runnable time, load {' '.join(r['loadavg_start'])}")
    print("\n".join(out))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("phases", "run"):
        p = sub.add_parser(name)
        p.add_argument("--peer", required=True)
        p.add_argument("--pid", type=int, required=True)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--source", required=True)
        p.add_argument("--interval", type=float, default=10)
        p.add_argument("--workload", required=True)
        p.add_argument("--records", required=True)
        p.add_argument("--work", required=True)
        p.add_argument("--load", required=True)
        p.add_argument("--load-cpu", type=int, default=0)
        p.add_argument("--nice", type=int, default=0)
        if name == "phases":
            p.add_argument("--run-secs", type=int, default=11)
            p.add_argument("--cpu-rate", type=int, default=1000000)
            p.add_argument("--lo-rate", type=int, default=20000)
            p.add_argument("--steps", type=int, default=6)
            p.add_argument("--warm-lines", type=int, default=200000)
            p.add_argument("--perf-out", default="")
        else:
            p.add_argument("--phase", required=True)
            p.add_argument("--target", type=float, default=0)
            p.add_argument("load_args", nargs=argparse.REMAINDER)
    p = sub.add_parser("exact")
    p.add_argument("--flush", required=True)
    p.add_argument("totals", nargs="+")
    p = sub.add_parser("table")
    p.add_argument("--records", required=True)
    p.add_argument("--workloads", required=True)
    p = sub.add_parser("bound")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True)
    p = sub.add_parser("http")
    p.add_argument("--url", required=True)
    p.add_argument("--pid", type=int, required=True)
    a = ap.parse_args()
    if a.cmd == "run" and a.load_args[:1] == ["--"]:
        a.load_args = a.load_args[1:]
    if a.cmd == "bound":
        deadline = time.time() + 30
        while time.time() < deadline:
            if not os.path.exists(f"/proc/{a.pid}"):
                sys.exit(f"pid {a.pid} exited before binding 127.0.0.1:{a.port}")
            if udp_stat(a.port)["sockets"] > 0:
                return
            time.sleep(0.1)
        sys.exit(f"nothing bound 127.0.0.1:{a.port} within 30 s")
    if a.cmd == "http":
        deadline = time.time() + 30
        while time.time() < deadline:
            if not os.path.exists(f"/proc/{a.pid}"):
                sys.exit(f"pid {a.pid} exited before serving {a.url}")
            try:
                urllib.request.urlopen(a.url, timeout=2).read()
                return
            except OSError:
                time.sleep(0.1)
        sys.exit(f"{a.url} did not answer within 30 s")
    {"phases": cmd_phases, "run": cmd_run, "exact": cmd_exact, "table": cmd_table}[a.cmd](a)


main()
PY
export PYTHONPATH="$ROOT/benches${PYTHONPATH:+:$PYTHONPATH}" # bench_common.py
BENCH=(python3 "$WORK/bench.py")

free_port() { # udp|tcp: a port free on 127.0.0.1 right now
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
PY
}

rcvbuf_of() { # PORT: the receive buffer the kernel gave the socket (ss skmem rb)
  ss -uamn "sport = :$1" 2>/dev/null | grep -o 'rb[0-9]*' | head -1 | tr -d rb || true
}

# ---------------------------------------------------------------------------------------------
# Binaries: copied so that a rebuild by someone else cannot swap them mid-run.
log "building release binaries (cargo build --release --workspace --bins)"
(cd "$ROOT" && cargo build --release --workspace --bins --quiet)
cp "$TARGET_DIR/release/meterd" "$TARGET_DIR/release/meterd-load" "$WORK/"
LOAD="$WORK/meterd-load"

PORT=$(free_port udp)
HPORT=$(free_port tcp)

start_meterd() { # FLUSH_OUT: console JSON sink output
  cat >"$WORK/meterd.toml" <<EOF
interval = "10s"
[ingest]
statsd_udp = ["127.0.0.1:$PORT"]
readers = $READERS
# The kernel doubles SO_RCVBUF(FORCE) requests: half of RCVBUF gives a socket buffer of RCVBUF,
# the same as the peers get from net.core.rmem_default.
read_buffer_bytes = $((RCVBUF / 2))
[http]
listen = "127.0.0.1:$HPORT"
[[sinks]]
type = "console"
format = "json"
EOF
  nice -n "$NICE" taskset -c "$PEER_CPU" "$WORK/meterd" --config "$WORK/meterd.toml" >"$1" 2>>"$WORK/meterd.log" &
  PEER_PID=$!
  PIDS+=("$PEER_PID")
  "${BENCH[@]}" bound --port "$PORT" --pid "$PEER_PID"
  "${BENCH[@]}" http --url "http://127.0.0.1:$HPORT/metrics" --pid "$PEER_PID"
  PEER_SOURCE="http://127.0.0.1:$HPORT/metrics"
  PEER_INTERVAL=10
}

start_collectd() { # INTERVAL
  local dir="$WORK/collectd" csv="$SHM/collectd-csv"
  rm -rf "$dir" "$csv"
  mkdir -p "$dir" "$csv"
  sed -e "s#@VARDIR@#$dir#g" -e "s#^Interval .*#Interval $1#" -e "s#Port \"8125\"#Port \"$PORT\"#" \
    -e "s#DataDir \".*\"#DataDir \"$csv\"#" "$PEERS_DIR/collectd.conf" >"$dir/collectd.conf"
  nice -n "$NICE" taskset -c "$PEER_CPU" collectd -C "$dir/collectd.conf" -f >"$dir/stdout.log" 2>&1 &
  PEER_PID=$!
  PIDS+=("$PEER_PID")
  "${BENCH[@]}" bound --port "$PORT" --pid "$PEER_PID"
  PEER_SOURCE="$csv/bench/statsd"
  PEER_INTERVAL=$1
}

start_statsd() { # DIR INTERVAL_MS
  local dir=$1
  rm -f "$dir/sumlog.jsonl"
  cp "$PEERS_DIR/sumlog.js" "$dir/sumlog.js"
  sed -e "s#port: 8125#port: $PORT#" -e "s#mgmt_port: 8126#mgmt_port: $(free_port tcp)#" \
    -e "s#flushInterval: [0-9]*#flushInterval: $2#" "$PEERS_DIR/statsd-config.js" >"$dir/statsd-config.js"
  (cd "$dir" && exec nice -n "$NICE" taskset -c "$PEER_CPU" node node_modules/statsd/stats.js statsd-config.js >"$dir/stdout.log" 2>&1) &
  PEER_PID=$!
  PIDS+=("$PEER_PID")
  "${BENCH[@]}" bound --port "$PORT" --pid "$PEER_PID"
  PEER_SOURCE="$dir/sumlog.jsonl"
  PEER_INTERVAL=$(( $2 / 1000 ))
}

peer_args() { # the arguments bench.py needs about the running peer
  echo --peer "$1" --pid "$PEER_PID" --port "$PORT" --source "$PEER_SOURCE" --interval "$PEER_INTERVAL" \
    --records "$RECORDS" --work "$WORK" --load "$LOAD" --load-cpu "$LOAD_CPU" --nice "$NICE"
}

has_collectd() { command -v collectd >/dev/null 2>&1 && [[ -e /usr/lib/collectd/statsd.so ]]; }

# ---------------------------------------------------------------------------------------------
if [[ $SMOKE == 1 ]]; then
  # meterd: plain at 20k lines/s for 2 s and dogstatsd for 1 s; nothing may be lost, and the
  # flushed counter sums and timer counts must equal the totals series by series.
  log "smoke: meterd on 127.0.0.1:$PORT"
  start_meterd "$WORK/meterd-flush.jsonl"
  # shellcheck disable=SC2046
  "${BENCH[@]}" run $(peer_args meterd) --workload plain --phase smoke-plain --target 20000 -- \
    --rate 20000 --duration 2 >"$WORK/smoke-plain.json"
  # shellcheck disable=SC2046
  "${BENCH[@]}" run $(peer_args meterd) --workload dogstatsd --phase smoke-dogstatsd --target 20000 -- \
    --rate 20000 --duration 1 --series 20000 >"$WORK/smoke-dogstatsd.json"
  stop_pid "$PEER_PID"
  fail=0
  python3 - "$WORK/smoke-plain.json" "$WORK/smoke-dogstatsd.json" <<'PY' || fail=1
import json, sys
bad = False
for path in sys.argv[1:]:
    r = json.load(open(path))
    ok = r["sent"] > 0 and r["processed"] == r["sent"] and r["invalid"] == 0 and r["kernel_drops_datagrams"] == 0
    print(f"smoke: meterd {r['workload']}: sent {r['sent']}, received {r['processed']}, invalid {r['invalid']}, "
          f"kernel drops {r['kernel_drops_datagrams']}: {'ok' if ok else 'FAILED'}", file=sys.stderr)
    bad |= not ok
sys.exit(1 if bad else 0)
PY
  if "${BENCH[@]}" exact --flush "$WORK/meterd-flush.jsonl" \
    "$WORK/totals-meterd-plain-smoke-plain.json" "$WORK/totals-meterd-dogstatsd-smoke-dogstatsd.json" \
    >"$WORK/exact.json"; then
    log "smoke: meterd flushed exactly what was sent: $(cat "$WORK/exact.json")"
  else
    log "smoke: meterd's flush differs from the totals: $(cat "$WORK/exact.json")"
    fail=1
  fi
  # Peers only if already installed (no installs, no sysctl changes), with 1 s flushes.
  smoke_peer() { # NAME: the peer must have processed most of a tiny run
    # shellcheck disable=SC2046
    "${BENCH[@]}" run $(peer_args "$1") --workload plain --phase smoke-plain --target 20000 -- \
      --rate 20000 --duration 1 >"$WORK/smoke-$1.json"
    stop_pid "$PEER_PID"
    python3 - "$WORK/smoke-$1.json" "$1" <<'PY' || fail=1
import json, sys
r = json.load(open(sys.argv[1]))
print(f"smoke: {sys.argv[2]}: sent {r['sent']}, processed {r['processed']}", file=sys.stderr)
sys.exit(0 if r["processed"] >= 0.5 * r["sent"] else 1)
PY
  }
  if [[ ,$PEERS, == *,collectd,* ]] && has_collectd; then
    start_collectd 1
    smoke_peer collectd
  fi
  if [[ ,$PEERS, == *,statsd,* && -n ${METERD_BENCH_STATSD_DIR:-} && -e ${METERD_BENCH_STATSD_DIR:-}/node_modules/statsd/stats.js ]]; then
    start_statsd "$METERD_BENCH_STATSD_DIR" 1000
    smoke_peer statsd
  fi
  if [[ $fail != 0 ]]; then
    log "smoke: FAILED (work directory kept: $WORK)"
    KEEP=1
    exit 1
  fi
  log "smoke: ok"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# Full run.
[[ $(id -u) == 0 ]] || { echo "throughput.sh: the full run needs root (sysctl, apt-get)" >&2; exit 1; }
START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)
if ! git -C "$ROOT" diff --quiet HEAD -- src tools Cargo.toml Cargo.lock 2>/dev/null; then COMMIT="$COMMIT + uncommitted changes"; fi

if [[ ,$PEERS, == *,collectd,* ]] && ! has_collectd; then
  log "installing collectd-core"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends collectd-core >/dev/null
fi
STATSD_DIR="$WORK/statsd"
if [[ ,$PEERS, == *,statsd,* ]]; then
  log "installing statsd 0.9.0 into $STATSD_DIR"
  mkdir -p "$STATSD_DIR"
  (cd "$STATSD_DIR" && npm install --no-audit --no-fund --silent statsd@0.9.0 >/dev/null)
fi

if [[ $NICE != 0 && -w /proc/$$/autogroup ]]; then
  AUTOGROUP_SAVED=$(sed -n 's/.* nice \(-\{0,1\}[0-9]*\)$/\1/p' /proc/$$/autogroup)
  echo "$NICE" >/proc/$$/autogroup
  log "scheduler autogroup nice $NICE (was $AUTOGROUP_SAVED; restored on exit)"
fi

# The same receive buffer for everyone: the peers set none and get rmem_default.
SYSCTL_SAVED="net.core.rmem_default=$(sysctl -n net.core.rmem_default) net.core.rmem_max=$(sysctl -n net.core.rmem_max)"
log "socket receive buffer $RCVBUF bytes for all (was: $SYSCTL_SAVED; restored on exit)"
sysctl -q -w net.core.rmem_default="$RCVBUF" net.core.rmem_max="$RCVBUF" >/dev/null

declare -A RB EXACT
for w in ${WORKLOADS//,/ }; do
  case $w in
    plain) warm=20000 ;;
    dogstatsd) warm=200000 ;;
    *) echo "throughput.sh: unknown workload $w" >&2; exit 2 ;;
  esac
  for p in ${PEERS//,/ }; do
    if [[ $p == collectd && $w != plain ]]; then continue; fi
    log "$w: $p"
    perf_out=""
    case $p in
      meterd)
        start_meterd /dev/null
        if [[ $PERF == 1 ]]; then perf_out="$WORK/perf-meterd-$w.data"; fi
        ;;
      collectd) start_collectd 10 ;;
      statsd) start_statsd "$STATSD_DIR" 10000 ;;
      *) echo "throughput.sh: unknown peer $p" >&2; exit 2 ;;
    esac
    RB[$p]=$(rcvbuf_of "$PORT")
    # shellcheck disable=SC2046
    "${BENCH[@]}" phases $(peer_args "$p") --workload "$w" --run-secs "$RUN_SECS" --cpu-rate "$CPU_RATE" \
      --lo-rate "$LO_RATE" --steps "$STEPS" --warm-lines "$warm" --perf-out "$perf_out"
    stop_pid "$PEER_PID"
    if [[ -n $perf_out && -s $perf_out ]]; then
      {
        echo "# flat profile (self)"
        perf report -i "$perf_out" --stdio --no-children --sort dso,symbol -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40
        echo "# call graphs (self, callers)"
        perf report -i "$perf_out" --stdio --no-children --percent-limit 2 --max-stack 12 -g caller,0.5,callee,function,percent 2>/dev/null | grep -v '^$' | head -200
      } >"$WORK/perf-meterd-$w.txt" || true
      log "perf report of meterd under flood ($w): $WORK/perf-meterd-$w.txt"
      KEEP=1
    fi
  done
  if [[ ,$PEERS, == *,meterd,* ]]; then
    # Exactness: a fresh meterd at a modest rate; its flushed counter sums and timer counts must
    # equal the totals series by series.
    log "$w: meterd exactness check"
    start_meterd "$WORK/exact-$w.jsonl"
    # shellcheck disable=SC2046
    "${BENCH[@]}" run $(peer_args meterd) --workload "$w" --phase exact --target 500000 -- \
      --rate 500000 --duration 3 >/dev/null
    stop_pid "$PEER_PID"
    if "${BENCH[@]}" exact --flush "$WORK/exact-$w.jsonl" "$WORK/totals-meterd-$w-exact.json" >"$WORK/exact-$w.json"; then
      EXACT[$w]="exact"
    else
      EXACT[$w]="MISMATCH"
    fi
    log "$w: $(cat "$WORK/exact-$w.json")"
    rm -f "$WORK/exact-$w.jsonl"
  fi
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

COLLECTD_VERSION=$( (collectd -h 2>/dev/null || true) | grep -o 'collectd [0-9][0-9.]*[0-9]' | head -1)
CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
{
  echo
  echo "## Throughput, $START_DATE"
  echo
  echo "Command: \`benches/throughput.sh ${ARGV[*]:1}\` (meterd $COMMIT)."
  echo "Machine: nproc $(nproc), CPU \"$CPU_MODEL\", kernel $(uname -r); load average $LOAD_START at the start, $LOAD_END at the end (a shared machine)."
  echo "Setup: meterd-load pinned to CPU 0, each aggregator to CPU 1 (taskset), both at nice $NICE; runs of $RUN_SECS s with 10 s flush intervals;"
  echo "socket receive buffer $RCVBUF bytes for all (granted: $(for p in "${!RB[@]}"; do printf '%s %s; ' "$p" "${RB[$p]:-?}"; done | sed 's/; $//'));"
  PEER_DESC=""
  [[ ,$PEERS, == *,collectd,* ]] && PEER_DESC+="${COLLECTD_VERSION:-collectd} (Debian collectd-core), "
  [[ ,$PEERS, == *,statsd,* ]] && PEER_DESC+="Etsy statsd 0.9.0 on Node $(node --version 2>/dev/null || echo '?'), "
  echo "meterd readers = $READERS, console JSON sink; peers: ${PEER_DESC:-none, }"
  echo "configured as in shared/bench-peers (ports, and collectd's CSV directory, moved). Held rate: the lowest rate ($LO_RATE lines/s) must pass; then 1.3 × the flooded rate,"
  echo "raised 1.5× while it passes, and a log bisection of $STEPS steps between the last passing and the first failing rate;"
  echo "a step passes when loss < 0.1 %, and the rate held is the one the generator achieved in it. Loss = 1 − processed ÷ sent (meterd: /metrics lines received;"
  echo "statsd: sumlog metrics_received; collectd: counter totals and timer counts from its CSV files, scaled to lines)."
  echo "\"On CPU\": the share of the time the aggregator was runnable that it spent on a CPU (/proc/PID/task/*/schedstat); below 100 % other work took its core."
  for w in ${WORKLOADS//,/ }; do
    [[ -n ${EXACT[$w]:-} ]] && echo "meterd exactness ($w, 500k lines/s for 3 s, flushed counter sums and timer counts vs totals, series by series): ${EXACT[$w]}."
  done
  "${BENCH[@]}" table --records "$RECORDS" --workloads "$WORKLOADS"
} >"$WORK/report.md"
cat "$WORK/report.md"
if [[ -n $OUT ]]; then
  cat "$WORK/report.md" >>"$OUT"
  cp "$RECORDS" "${OUT%.md}.runs.jsonl"
  log "appended to $OUT; every run's record in ${OUT%.md}.runs.jsonl"
fi
