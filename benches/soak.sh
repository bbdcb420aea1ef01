#!/usr/bin/env bash
# Soak test (issue 7, item 6): the real meterd binary at half its measured capacity for a long
# time, with churning series and a flaky sink, then loss, memory slope and flush latency.
#
#   benches/soak.sh --smoke               ~20 s, tiny rate: exits non-zero if anything is off. For CI.
#   benches/soak.sh [--out FILE] ...      the full run (default 10 min): prints a markdown section
#                                         (command, machine, config, results) and writes it to FILE.
#
# How it works. A capacity probe floods a fresh meterd (same config, same sinks) with meterd-load
# flat out for a few seconds and takes the rate meterd processed (its /metrics lines received over
# the send time plus the drain); the soak then runs a second, fresh meterd at half that rate
# (--rate overrides) in consecutive segments, each with a new series prefix (soak0000, soak0001,
# …; meterd-load --prefix), so every segment's series are new and the previous segment's stop.
# meterd flushes every --interval seconds to two http sinks (benches/soak_sink.py): "capture"
# answers 200 and records every flush document; "flaky" answers 500 to a share of requests and
# hangs past the sink timeout on another share.
#
# Reported: loss, exactly: lines meterd-load sent (its totals files) − lines meterd received
# (/metrics meterd_lines_received_total, after the sockets drained), with invalid lines, kernel
# drops and send errors; exactness: per series, the counter sums and timer counts flushed to the
# capture sink against meterd-load's totals; resident memory: VmRSS of meterd every --rss-every
# seconds, least-squares slope in KiB/min (whole run, after the warm-up, second half) plus
# first/last/peak, and per minute with the other work on meterd's CPU (from /proc/stat) and the
# share of its runnable time meterd's UDP reader waited for that CPU, to tell loss caused by a
# busy machine from loss caused by meterd;
# flush latency: per flush, the end of the interval to the capture sink holding the whole document
# (swap, render, encode, POST), and meterd's own meterd.flush.duration_ms, as p50/p90/p99/max.
# Verdicts: no loss, exact, the capture sink lost nothing, the flaky sink was exercised, memory
# flat (the second half's slope, kept up for an hour, adds at most 10 % of its mean RSS; full runs
# only), every flush arrived within one interval; the exit status is 1 when one fails.
#
# meterd runs on CPU 1; meterd-load and the sinks on CPU 0 (taskset; both on 0 with one CPU).
# Only 127.0.0.1, ports chosen by the kernel (port 0, read back from meterd's log). Everything is
# bounded: each process has a time limit of its own, waits have deadlines, and the exit trap
# stops every child this script started (by its process id).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: benches/soak.sh [--smoke] [--duration SECS] [--rate N] [--out FILE] [options]
  --smoke            ~20 s check with tiny numbers (12 s soak, 20k lines/s at most, 2k series,
                     4 s segments, 1 s flushes, a 2 s probe); exit 1 if anything is off
  --duration SECS    soak length (default 600)
  --rate N           lines/s to soak at (default: half the rate the capacity probe measures)
  --out FILE         also write the markdown section to FILE (replacing it)
  --segment SECS     length of one series generation (default 30)
  --series N         series per generation (default 20000)
  --workload W       meterd-load preset, plain or dogstatsd (default dogstatsd)
  --interval SECS    meterd's flush interval, whole seconds (default 2)
  --fail-rate F      share of the flaky sink's requests answered 500 (default 0.2)
  --hang-rate F      share held past the sink timeout before answering (default 0.05)
  --probe-secs N     length of the flat-out capacity probe (default 5; skipped with --rate)
  --rss-every SECS   sampling period of meterd's RSS (default 5)
  --no-build         use the binaries in target/release as they are
  --keep             keep the work directory
EOF
}

SMOKE=0 DURATION="" RATE="" OUT="" SEGMENT="" SERIES="" WORKLOAD="" INTERVAL="" FAIL_RATE=""
HANG_RATE="" PROBE_SECS="" RSS_EVERY="" BUILD=1 KEEP=0
ARGV=("$@")
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --duration) DURATION="${2:?}"; shift ;;
    --rate) RATE="${2:?}"; shift ;;
    --out) OUT="${2:?}"; shift ;;
    --segment) SEGMENT="${2:?}"; shift ;;
    --series) SERIES="${2:?}"; shift ;;
    --workload) WORKLOAD="${2:?}"; shift ;;
    --interval) INTERVAL="${2:?}"; shift ;;
    --fail-rate) FAIL_RATE="${2:?}"; shift ;;
    --hang-rate) HANG_RATE="${2:?}"; shift ;;
    --probe-secs) PROBE_SECS="${2:?}"; shift ;;
    --rss-every) RSS_EVERY="${2:?}"; shift ;;
    --no-build) BUILD=0 ;;
    --keep) KEEP=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "soak.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [[ $SMOKE == 1 ]]; then
  : "${DURATION:=12}" "${SEGMENT:=4}" "${SERIES:=2000}" "${INTERVAL:=1}" "${PROBE_SECS:=2}"
  : "${RSS_EVERY:=1}" "${FAIL_RATE:=0.3}" "${HANG_RATE:=0.1}"
  RATE_CAP=20000
else
  RATE_CAP=0
fi
: "${DURATION:=600}" "${SEGMENT:=30}" "${SERIES:=20000}" "${WORKLOAD:=dogstatsd}" "${INTERVAL:=2}"
: "${FAIL_RATE:=0.2}" "${HANG_RATE:=0.05}" "${PROBE_SECS:=5}" "${RSS_EVERY:=5}"
for v in DURATION SEGMENT SERIES INTERVAL PROBE_SECS RSS_EVERY; do
  opt=${v,,}
  if ! [[ ${!v} =~ ^[0-9]+$ ]] || (( ${!v} == 0 )); then
    echo "soak.sh: --${opt//_/-} must be a positive whole number" >&2
    exit 2
  fi
done
[[ -z $RATE || $RATE =~ ^[0-9]+$ ]] || { echo "soak.sh: --rate must be a whole number of lines/s" >&2; exit 2; }
[[ $WORKLOAD == plain || $WORKLOAD == dogstatsd ]] || { echo "soak.sh: --workload must be plain or dogstatsd" >&2; exit 2; }
(( DURATION <= 86400 )) || { echo "soak.sh: --duration must be at most 86400" >&2; exit 2; }
(( SEGMENT <= 3600 && PROBE_SECS <= 60 && INTERVAL <= 60 )) || { echo "soak.sh: --segment ≤ 3600, --probe-secs ≤ 60, --interval ≤ 60" >&2; exit 2; }
for f in "$FAIL_RATE" "$HANG_RATE"; do
  [[ $f =~ ^(0(\.[0-9]+)?|1(\.0+)?)$ ]] || { echo "soak.sh: --fail-rate and --hang-rate must be in [0, 1]" >&2; exit 2; }
done

LOAD_CPU=0
METERD_CPU=1
if (( $(nproc) < 2 )); then METERD_CPU=0; fi
ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d /tmp/meterd-soak.XXXXXX)
PIDS=()       # every background child, stopped by the exit trap
METERD_PID="" # the meterd process itself (its parent is the `timeout` bounding it)
SINK_TIMEOUT_MS=$(( INTERVAL * 500 )) # meterd clamps sink timeouts to half the interval
HANG_SECS=$(python3 -c "print(round($SINK_TIMEOUT_MS / 1000 + 0.5, 3))")
# Longest the whole run may take: the soak, the probe, start-ups, drains and shutdowns.
LIMIT=$(( DURATION + PROBE_SECS + 300 ))

log() { printf '== %s\n' "$*" >&2; }

stop_pid() { # PID [SECS]: SIGTERM, wait up to SECS (default 10), then SIGKILL
  local pid=$1 secs=${2:-10} i keep=() p
  if kill -TERM "$pid" 2>/dev/null; then
    for ((i = 0; i < secs * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  if [[ -n $METERD_PID ]]; then kill -TERM "$METERD_PID" 2>/dev/null || true; fi
  for p in "${PIDS[@]}"; do stop_pid "$p" 5; done
  if [[ $KEEP == 1 ]]; then echo "soak.sh: work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# The helper: readiness, drains, /metrics snapshots, sampling and the report.
cat >"$WORK/soak.py" <<'PY'
import argparse, glob, json, math, os, re, sys, time, urllib.request

from bench_common import CLK, loadavg, proc, say, threads, udp_stat

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def metrics(url):
    """meterd's cumulative self-metrics from /metrics, summed over tags except sink."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out = {}
    for row in text.splitlines():
        m = re.match(r'^(meterd_[a-z_]+)(\{([a-z]+)="([^"]*)"\})? ([0-9.e+-]+)$', row)
        if not m:
            continue
        name, key, val, v = m.group(1), m.group(3), m.group(4), float(m.group(5))
        if key == "sink":
            name = f"{name}{{{val}}}"
        out[name] = out.get(name, 0) + v
    return out


def cpu_busy_s(cpu):
    """Seconds CPU `cpu` was busy (not idle or iowait) since boot, from /proc/stat."""
    for row in open("/proc/stat"):
        f = row.split()
        if f[0] == f"cpu{cpu}":
            v = [int(x) for x in f[1:]]
            return (sum(v[:8]) - v[3] - v[4]) / CLK
    return 0.0


def readers(pid):
    """Run and runqueue-wait seconds summed over meterd's UDP reader threads (meterd-udp-N)."""
    ts = [t for t in threads(pid).values() if t[0].startswith("meterd-udp")]
    return sum(t[1] for t in ts) / 1e9, sum(t[2] for t in ts) / 1e9


def cmd_ready(a):
    """Waits for meterd's "listening" lines; prints the UDP and HTTP addresses."""
    deadline = time.time() + a.timeout
    while time.time() < deadline:
        if not alive(a.pid):
            sys.exit(f"meterd (pid {a.pid}) exited during start-up:\n" + open(a.log).read()[-2000:])
        text = ANSI.sub("", open(a.log).read())
        udp = re.search(r'listening transport="?udp"? addr=([0-9.]+:[0-9]+)', text)
        http = re.search(r'listening transport="?http"? addr=([0-9.]+:[0-9]+)', text)
        if udp and http:
            try:
                urllib.request.urlopen(f"http://{http.group(1)}/healthz", timeout=2).read()
                print(udp.group(1), http.group(1))
                return
            except OSError:
                pass
        time.sleep(0.1)
    sys.exit(f"meterd did not start within {a.timeout} s")


def cmd_drain(a):
    """Until the socket's queue is empty and meterd's line count stops moving; prints when the
    queue was first seen empty (seconds since the epoch)."""
    deadline, last, first_empty = time.time() + a.timeout, None, None
    url = f"http://{a.http}/metrics"
    while time.time() < deadline:
        if not alive(a.pid):
            sys.exit(f"meterd (pid {a.pid}) died")
        now = time.time()
        q = udp_stat(a.port)["rx_queue"]
        if q == 0:
            first_empty = first_empty or now
            cur = metrics(url).get("meterd_lines_received_total")
            if cur is not None and cur == last:
                print(f"{first_empty:.3f}")
                return
            last = cur
        else:
            last, first_empty = None, None
        time.sleep(0.2)
    sys.exit(f"meterd's socket did not drain within {a.timeout} s")


def cmd_snapshot(a):
    """/metrics plus /proc facts, as JSON."""
    out = {"t": time.time(), "metrics": metrics(f"http://{a.http}/metrics"), "loadavg": loadavg()}
    if a.pid:
        out["proc"] = proc(a.pid)
    print(json.dumps(out))


def cmd_sample(a):
    """Every --every seconds until meterd exits, --stop-file appears or --until passes."""
    url = f"http://{a.http}/metrics"
    with open(a.out, "a", buffering=1) as out:
        nxt = time.time()
        while time.time() < a.until and alive(a.pid) and not os.path.exists(a.stop_file):
            rec = {"t": time.time(), "loadavg": loadavg(), "cpu_busy_s": cpu_busy_s(a.cpu),
                   "udp_drops": udp_stat(a.port)["drops"]}
            try:
                rec.update(proc(a.pid))
                rec["reader_run_s"], rec["reader_wait_s"] = readers(a.pid)
            except (OSError, ValueError):
                break
            try:
                m = metrics(url)
                rec["lines"] = m.get("meterd_lines_received_total")
                rec["kernel_drops"] = m.get("meterd_udp_kernel_drops_total")
            except OSError:
                pass
            out.write(json.dumps(rec) + "\n")
            nxt += a.every
            time.sleep(max(0.0, min(nxt - time.time(), a.until - time.time())))


def cmd_probe(a):
    """Processed rate of a flood: received lines over the send time plus the drain."""
    before, after = json.load(open(a.before)), json.load(open(a.after))
    t = json.load(open(a.totals))
    got = after["metrics"]["meterd_lines_received_total"] - before["metrics"]["meterd_lines_received_total"]
    window = t["duration_s"] + max(0.0, a.drained - a.sent_end)
    drops = after["metrics"].get("meterd_udp_kernel_drops_total", 0) - before["metrics"].get("meterd_udp_kernel_drops_total", 0)
    res = {"sent": t["lines"], "sent_rate": t["lines_per_s"], "received": got, "window_s": window,
           "processed_rate": got / window if window > 0 else 0, "kernel_drops": drops,
           "generator_limited": drops == 0 and got == t["lines"]}
    print(json.dumps(res))


# ---------------------------------------------------------------------------------------------
def pct(xs, p):
    if not xs:
        return None
    s = sorted(xs)
    return s[max(0, math.ceil(p * len(s)) - 1)]


def fit(points):
    """Least-squares slope (y per x) of [(x, y)], or None."""
    n = len(points)
    if n < 2:
        return None
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def n(x):
    return f"{x:,.0f}"


def mib(kb):
    return f"{kb / 1024:.1f} MiB"


def ms(x):
    return "–" if x is None else f"{x:.0f} ms" if x >= 10 else f"{x:.1f} ms"


def cmd_report(a):
    meta = {}
    for row in open(a.meta):
        k, _, v = row.rstrip("\n").partition("\t")
        meta[k] = v
    W = a.work
    smoke = meta["smoke"] == "1"
    interval = float(meta["interval"])
    t_term = float(meta["t_term"])
    checks = []  # (ok, text)

    # Loss: sender totals against meterd's own counters.
    totals = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(W, "totals-soak*.json")))]
    sent = sum(t["lines"] for t in totals)
    send_errors = sum(t["send_errors"] for t in totals)
    first, last = json.load(open(os.path.join(W, "soak-start.json"))), json.load(open(os.path.join(W, "soak-end.json")))
    d = lambda k: last["metrics"].get(k, 0) - first["metrics"].get(k, 0)
    received, invalid, kdrops = d("meterd_lines_received_total"), d("meterd_lines_invalid_total"), d("meterd_udp_kernel_drops_total")
    sdropped = d("meterd_series_dropped_total")
    loss = sent - received
    send_secs = sum(t["duration_s"] for t in totals)
    achieved = sent / send_secs if send_secs else 0
    checks.append((sent > 0 and loss == 0 and invalid == 0 and send_errors == 0 and sdropped == 0,
                   f"loss: sent {n(sent)}, received {n(received)}, lost {n(loss)}; invalid {n(invalid)},"
                   f" send errors {n(send_errors)}, kernel drops {n(kdrops)} datagrams, series refused {n(sdropped)}"))

    # Exactness through the capture sink.
    cap = json.load(open(os.path.join(W, "soak-capture.json")))
    want_c, want_t, want_g = {}, {}, set()
    for t in totals:
        for k, v in t["counters"].items():
            want_c[k] = want_c.get(k, 0.0) + v
        for k, v in t["timers"].items():
            want_t[k] = want_t.get(k, 0.0) + v["count"]
        want_g.update(t["gauges"])
    close = lambda x, y: abs(x - y) <= 1e-9 * max(1.0, abs(x), abs(y))
    bad = []
    for want, got, what in ((want_c, cap["counters"], "counter"), (want_t, cap["timers"], "timer count")):
        for k in set(want) | set(got):
            if not close(want.get(k, 0.0), got.get(k, 0.0)):
                bad.append(f"{what} {k}: sent {want.get(k, 0.0)}, flushed {got.get(k, 0.0)}")
    missing_g = want_g - set(cap["gauges"])
    extra_g = set(cap["gauges"]) - want_g
    mismatches = len(bad) + len(missing_g) + len(extra_g)
    csum_sent, csum_got = sum(want_c.values()), sum(cap["counters"].values())
    checks.append((mismatches == 0 and cap["bad"] == 0 and len(want_c) > 0,
                   f"exactness at the capture sink: {n(len(want_c))} counters, {n(len(want_t))} timers,"
                   f" {n(len(want_g))} gauges compared series by series: {mismatches} mismatches"
                   f" (counter sum sent {csum_sent:,.0f}, flushed {csum_got:,.0f})"
                   + (" — expected, as lines were lost" if mismatches and loss else "")
                   + ("; e.g. " + "; ".join(sorted(bad)[:3]) if bad else "")
                   + (f"; {len(missing_g)} gauges never flushed" if missing_g else "")))

    # Flushes as the capture sink saw them.
    recs = [json.loads(r) for r in open(os.path.join(W, "soak-capture.jsonl")) if r.strip()]
    regular = [r for r in recs if "error" not in r and not r["duplicate"] and r["t_end"] < t_term]
    latency = [(r["t_end"] - r["timestamp"]) * 1000 for r in regular]
    # meterd.flush.duration_ms in flush k is the duration of flush k-1 (the first has none).
    own_ms = [r["self"].get("meterd.flush.duration_ms") for r in regular[1:]]
    own_ms = [x for x in own_ms if x is not None]
    stamps = [r["timestamp"] for r in regular]
    gaps = [b - a for a, b in zip(stamps, stamps[1:]) if b - a > interval + 1e-9]
    series_active = [r["self"].get("meterd.series.active", 0) for r in regular]
    late = [x for x in latency if x >= interval * 1000]
    checks.append((len(regular) >= 3 and not late and not gaps,
                   f"flushes: {len(regular)} regular documents at the capture sink ({cap['duplicates']} duplicates),"
                   f" {len(gaps)} missing intervals, {len(late)} arrived later than one interval"))

    # Sinks.
    fl = json.load(open(os.path.join(W, "soak-flaky.json")))
    sink = lambda s, k: d(f"meterd_sink_{k}_total{{{s}}}")
    checks.append((sink("capture", "dropped") == 0 and sink("capture", "sent") > 0,
                   f"capture sink: {n(sink('capture', 'sent'))} points delivered, {n(sink('capture', 'errors'))} failed attempts,"
                   f" {n(sink('capture', 'dropped'))} dropped"))
    checks.append((fl["requests"] > 0 and fl["failed_500"] + fl["hung"] > 0 and sink("flaky", "errors") > 0,
                   f"flaky sink: {fl['requests']} requests, {fl['failed_500']} answered 500, {fl['hung']} held"
                   f" {fl['hang_secs']} s; meterd counted {n(sink('flaky', 'errors'))} failed attempts,"
                   f" {n(sink('flaky', 'sent'))} points delivered, {n(sink('flaky', 'dropped'))} dropped"))

    # Memory.
    samples = [json.loads(r) for r in open(os.path.join(W, "soak-samples.jsonl")) if r.strip()]
    samples = [s for s in samples if s["t"] <= float(meta["t_sent_end"]) + 1]
    t0 = float(meta["t_soak_start"])
    warm = float(meta["warmup"])
    pts = [((s["t"] - t0) / 60, s["rss_kb"]) for s in samples]
    after = [(x, y) for x, y in pts if x * 60 >= warm]
    half = [(x, y) for x, y in pts if x >= pts[-1][0] / 2] if pts else []
    slope_all, slope_after, slope_half = fit(pts), fit(after), fit(half)
    rss = [y for _, y in pts]
    hwm = max((s["hwm_kb"] for s in samples), default=0)
    mem_ok = None
    # Flat = the second half's slope, kept up for an hour, adds at most 10 % of that half's mean
    # RSS (or 2 MiB); a falling RSS (memory returned after an early peak) is not growth. The second half, not the whole run: buffers sized by the largest flush and
    # the allocator settle during the first minutes, and a leak shows as a slope that persists.
    if slope_half is not None and slope_after is not None:
        mean = sum(y for _, y in half) / len(half)
        per_hour = slope_half * 60
        mem_ok = per_hour <= max(0.10 * mean, 2048)
        mem_text = (f"memory: RSS {mib(rss[0])} first, {mib(rss[-1])} last, {mib(max(rss))} peak (VmHWM {mib(hwm)});"
                    f" slope {slope_all:+,.0f} KiB/min over the run, {slope_after:+,.0f} KiB/min after the first"
                    f" {warm:.0f} s, {slope_half:+,.0f} KiB/min over the second half ({per_hour / 1024:+.1f} MiB per hour,"
                    f" {'within' if mem_ok else 'beyond'} +10 % of its mean {mib(mean)})")
    else:
        mem_text = f"memory: {len(samples)} samples, too few for a slope"
    if smoke:
        mem_text += " — not judged in a smoke run"
        mem_ok = True
    checks.append((bool(mem_ok), mem_text))
    # RSS steps (> 2 MiB between two samples) and the largest flush around each: growth that
    # comes in steps at the biggest flushes is buffers and heap sized by the largest flush; a
    # leak grows with every segment's new series.
    steps = []
    for p, q in zip(samples, samples[1:]):
        if q["rss_kb"] - p["rss_kb"] > 2048:
            near = [r for r in recs if "error" not in r and p["t"] - interval - 1 <= r["t_end"] <= q["t"] + 1]
            steps.append((q["t"] - t0, (q["rss_kb"] - p["rss_kb"]) / 1024,
                          max((r["self"].get("meterd.series.active", 0) for r in near), default=0),
                          max((r["bytes"] for r in near), default=0)))
    biggest = max((r["bytes"] for r in regular), default=0)
    at_biggest = sum(1 for st in steps if st[3] >= 0.95 * biggest)
    if steps and len(samples) >= 2:
        last_step = steps[-1][0]
        tail = [sm for sm in samples if sm["t"] - t0 >= last_step]
        series_per_s = float(meta["series"]) / float(meta["segment"])
        step_text = (f"RSS grew in {len(steps)} steps of more than 2 MiB between samples: "
                     + ", ".join(f"+{d:.1f} MiB at {t:.0f} s ({n(sa)} series flushed, {b / 1e6:.1f} MB)" for t, d, sa, b in steps)
                     + f"; {at_biggest} of them next to a flush of the largest size seen ({biggest / 1e6:.1f} MB)."
                     + f" After the last step, {(tail[-1]['rss_kb'] - tail[0]['rss_kb']) / 1024:+.1f} MiB over"
                     f" {(tail[-1]['t'] - tail[0]['t']):.0f} s while about {n(round(series_per_s * (tail[-1]['t'] - tail[0]['t']), -3))} new series came and went.")
    else:
        step_text = "RSS grew in no step of more than 2 MiB between samples."
    checks.append((meta["meterd_exit"] == "0", f"meterd exited with status {meta['meterd_exit']} after SIGTERM"))

    # CPU and scheduling of meterd over the soak.
    pf, pl = first.get("proc", {}), last.get("proc", {})
    wall = last["t"] - first["t"]
    cpu = (pl.get("cpu_s", 0) - pf.get("cpu_s", 0)) / wall if wall > 0 else 0
    run = pl.get("sched_run_s", 0) - pf.get("sched_run_s", 0)
    wait = pl.get("sched_wait_s", 0) - pf.get("sched_wait_s", 0)
    on_cpu = run / (run + wait) if run + wait > 0 else 0

    if len(samples) >= 2:
        p, q = samples[0], samples[-1]
        dt = q["t"] - p["t"]
        other_all = max(0.0, (q["cpu_busy_s"] - p["cpu_busy_s"]) - (q["cpu_s"] - p["cpu_s"])) / dt if dt > 0 else 0.0
        rw = q["reader_wait_s"] - p["reader_wait_s"]
        rr = q["reader_run_s"] - p["reader_run_s"]
        reader_wait_all = rw / (rw + rr) if rw + rr > 0 else 0.0
    else:
        other_all = reader_wait_all = 0.0

    probe = json.loads(meta["probe"]) if meta.get("probe") else None
    ok_all = all(ok for ok, _ in checks)
    L = []
    L.append(f"\n## Soak, {meta['date']}\n")
    L.append(f"Command: `{meta['command']}` (meterd {meta['commit']}).")
    L.append(f"Machine: nproc {meta['nproc']}, CPU \"{meta['cpu']}\", kernel {meta['kernel']}; load average"
             f" {meta['load_start']} at the start, {meta['load_end']} at the end (a shared machine).")
    if probe:
        lim = " (generator-limited: no kernel drops, so capacity is at least this)" if probe["generator_limited"] else ""
        L.append(f"Capacity probe: a fresh meterd, same config and sinks, flooded by meterd-load flat out for"
                 f" {meta['probe_secs']} s ({n(probe['sent_rate'])} lines/s offered) processed"
                 f" {n(probe['processed_rate'])} lines/s{lim}; soak rate = half = {n(int(meta['rate']))} lines/s"
                 + (f" (capped at {n(int(meta['rate_cap']))} for the smoke run)" if meta["rate_cap"] != "0" else "") + ".")
    else:
        L.append(f"Rate: {n(int(meta['rate']))} lines/s, given with --rate (no capacity probe).")
    L.append(f"Workload: `meterd-load --workload {meta['workload']} --series {meta['series']} --rate {meta['rate']}`"
             f" in {meta['segments']} consecutive segments of up to {meta['segment']} s, each with a new prefix"
             f" (`--prefix soak0000`, `soak0001`, …): every segment's {n(int(meta['series']))} series are new and the"
             f" previous segment's stop ({n(len(want_c) + len(want_t) + len(want_g))} distinct series in all);"
             f" {n(achieved)} lines/s achieved while sending.")
    L.append(f"Sinks (benches/soak_sink.py): `capture` answers 200 and records every document; `flaky` answers 500"
             f" to {float(meta['fail_rate']) * 100:.0f} % of requests and holds {float(meta['hang_rate']) * 100:.0f} %"
             f" for {meta['hang_secs']} s, past its {int(meta['sink_timeout_ms'])} ms timeout."
             f" meterd on CPU {meta['meterd_cpu']}, meterd-load and the sinks on CPU {meta['load_cpu']} (taskset);"
             f" meterd used {cpu * 100:.0f} % of its CPU; other work took {other_all * 100:.0f} % of that CPU, and meterd's"
             f" UDP reader waited for it {reader_wait_all * 100:.1f} % of the time it was runnable (all meterd threads:"
             f" {(1 - on_cpu) * 100:.0f} %).")
    L.append("\nmeterd config:\n")
    L.append("```toml")
    L.append(open(os.path.join(W, "soak.toml")).read().rstrip())
    L.append("```\n")
    L.append("| result | |")
    L.append("| --- | --- |")
    L.append(f"| lines sent → received | {n(sent)} → {n(received)}: **loss {n(loss)}**"
             f" ({loss / sent * 100 if sent else 0:.4f} %) |")
    L.append(f"| invalid lines, kernel drops, send errors, series refused | {n(invalid)}, {n(kdrops)}, {n(send_errors)}, {n(sdropped)} |")
    L.append(f"| counters and timer counts at the capture sink vs sent, series by series |"
             f" {n(len(want_c) + len(want_t))} series, {mismatches} mismatches |")
    if slope_half is not None and slope_after is not None:
        L.append(f"| RSS first / last / peak (VmHWM) | {mib(rss[0])} / {mib(rss[-1])} / {mib(max(rss))} ({mib(hwm)}) |")
        L.append(f"| RSS slope (least squares), {len(pts)} samples every {meta['rss_every']} s |"
                 f" {slope_all:+,.0f} KiB/min over the run; {slope_after:+,.0f} KiB/min after the first {warm:.0f} s;"
                 f" **{slope_half:+,.0f} KiB/min** over the second half |")
    L.append(f"| flush latency: end of interval → document received by `capture` ({len(latency)} flushes) |"
             f" p50 {ms(pct(latency, .5))}, p90 {ms(pct(latency, .9))}, p99 {ms(pct(latency, .99))}, max {ms(max(latency, default=None))} |")
    L.append(f"| `meterd.flush.duration_ms` (swap, render, hand-off; {len(own_ms)} flushes) |"
             f" p50 {ms(pct(own_ms, .5))}, p90 {ms(pct(own_ms, .9))}, p99 {ms(pct(own_ms, .99))}, max {ms(max(own_ms, default=None))} |")
    if regular:
        L.append(f"| series per flush (`meterd.series.active`), flush document size |"
                 f" {n(min(series_active))}–{n(max(series_active))}; up to {max(r['bytes'] for r in regular) / 1e6:.1f} MB |")
    L.append(f"| sink `capture` | {n(sink('capture', 'sent'))} points delivered, {n(sink('capture', 'errors'))} failed attempts, {n(sink('capture', 'dropped'))} dropped |")
    L.append(f"| sink `flaky` | {fl['requests']} requests: {fl['failed_500']} × 500, {fl['hung']} held; meterd:"
             f" {n(sink('flaky', 'errors'))} failed attempts, {n(sink('flaky', 'sent'))} points delivered, {n(sink('flaky', 'dropped'))} dropped |")
    # Where the time went, per window between samples and per row (a minute, or a tenth of a
    # short run): RSS, lines received, kernel drops, other work on meterd's CPU (its busy time
    # minus meterd's own CPU time) and the share of its runnable time the UDP reader waited.
    step = 60 if float(meta["duration"]) >= 180 else max(float(meta["rss_every"]), float(meta["duration"]) / 10)

    def window(p, q):
        dt = q["t"] - p["t"]
        rw = q.get("reader_wait_s", 0) - p.get("reader_wait_s", 0)
        rr = q.get("reader_run_s", 0) - p.get("reader_run_s", 0)
        return {"dt": dt, "lines": (q.get("lines") or 0) - (p.get("lines") or 0),
                "drops": q.get("udp_drops", 0) - p.get("udp_drops", 0),
                "other": max(0.0, (q["cpu_busy_s"] - p["cpu_busy_s"]) - (q["cpu_s"] - p["cpu_s"])),
                "reader_wait": rw, "reader_all": rw + rr}

    wins = [window(p, q) for p, q in zip(samples, samples[1:])]
    share = lambda ws, k, base: sum(w[k] for w in ws) / sum(w[base] for w in ws) if ws and sum(w[base] for w in ws) > 0 else 0.0
    rows, nxt, prev = [], step, samples[0] if samples else None
    for s in samples[1:]:
        if s["t"] - t0 + 1e-6 >= nxt or s is samples[-1]:
            w = window(prev, s)
            rows.append(f"| {s['t'] - t0:.0f} s | {mib(s['rss_kb'])} | {n(w['lines'] / w['dt'] if w['dt'] > 0 else 0)} |"
                        f" {n(w['drops'])} | {w['other'] / w['dt'] * 100 if w['dt'] > 0 else 0:.0f} % |"
                        f" {share([w], 'reader_wait', 'reader_all') * 100:.0f} % | {s['loadavg'][0]} |")
            prev, nxt = s, nxt + step
    if rows:
        L.append(f"\n| time | RSS | lines/s received | kernel drops (datagrams) | other work on meterd's CPU |"
                 f" UDP reader waiting for a CPU | load (1 min) |")
        L.append("| --- | --- | --- | --- | --- | --- | --- |")
        L.extend(rows)
        with_d = [w for w in wins if w["drops"] > 0]
        without = [w for w in wins if w["drops"] == 0]
        if with_d:
            L.append(f"\nKernel drops fell in {len(with_d)} of {len(wins)} sampling windows of {meta['rss_every']} s."
                     f" In those, other work took {share(with_d, 'other', 'dt') * 100:.0f} % of meterd's CPU and the"
                     f" reader waited {share(with_d, 'reader_wait', 'reader_all') * 100:.0f} % of its runnable time;"
                     f" in the others {share(without, 'other', 'dt') * 100:.0f} % and"
                     f" {share(without, 'reader_wait', 'reader_all') * 100:.0f} %.")
    L.append(f"\n{step_text}")
    L.append("\nChecks:\n")
    for ok, text in checks:
        L.append(f"- {'ok' if ok else '**FAILED**'}: {text}")
    L.append(f"\nVerdict: {'as expected' if ok_all else 'NOT as expected (see the failed checks)'}.")
    print("\n".join(L))
    sys.exit(0 if ok_all else 1)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ready")
    p.add_argument("--log", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--timeout", type=float, default=30)
    p = sub.add_parser("drain")
    p.add_argument("--http", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--timeout", type=float, default=60)
    p = sub.add_parser("snapshot")
    p.add_argument("--http", required=True)
    p.add_argument("--pid", type=int, default=0)
    p = sub.add_parser("sample")
    p.add_argument("--http", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--every", type=float, required=True)
    p.add_argument("--until", type=float, required=True)
    p.add_argument("--stop-file", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cpu", type=int, required=True)
    p = sub.add_parser("probe")
    p.add_argument("--before", required=True)
    p.add_argument("--after", required=True)
    p.add_argument("--totals", required=True)
    p.add_argument("--sent-end", type=float, required=True)
    p.add_argument("--drained", type=float, required=True)
    p = sub.add_parser("report")
    p.add_argument("--work", required=True)
    p.add_argument("--meta", required=True)
    a = ap.parse_args()
    {"ready": cmd_ready, "drain": cmd_drain, "snapshot": cmd_snapshot, "sample": cmd_sample,
     "probe": cmd_probe, "report": cmd_report}[a.cmd](a)


main()
PY
export PYTHONPATH="$ROOT/benches${PYTHONPATH:+:$PYTHONPATH}" # bench_common.py
HELPER=(timeout 120 python3 "$WORK/soak.py")

meta() { printf '%s\t%s\n' "$1" "$2" >>"$WORK/meta.tsv"; }
now() { date +%s.%N; }

# ---------------------------------------------------------------------------------------------
# Binaries: copied, so that a rebuild by someone else cannot swap them mid-run.
if [[ $BUILD == 1 ]]; then
  log "building release binaries (cargo build --release --workspace --bins)"
  (cd "$ROOT" && timeout 1800 cargo build --release --workspace --bins --quiet)
fi
cp "$TARGET_DIR/release/meterd" "$TARGET_DIR/release/meterd-load" "$WORK/"
LOAD="$WORK/meterd-load"

start_sinks() { # TAG: the capture and flaky sinks; sets CAPTURE_PORT, FLAKY_PORT, SINK_PIDS
  local tag=$1 i
  taskset -c "$LOAD_CPU" python3 "$ROOT/benches/soak_sink.py" capture --max-secs "$LIMIT" \
    --port-file "$WORK/$tag-capture.port" --summary "$WORK/$tag-capture.json" --records "$WORK/$tag-capture.jsonl" \
    --series-re '^soak[0-9]{4}\.(?P<type>c|g|s|ms|h|d)\.m[0-9]+(?P<rest>(\.[a-z0-9_]+)?)$' 2>>"$WORK/$tag-sinks.log" &
  SINK_PIDS=("$!")
  taskset -c "$LOAD_CPU" python3 "$ROOT/benches/soak_sink.py" flaky --max-secs "$LIMIT" \
    --port-file "$WORK/$tag-flaky.port" --summary "$WORK/$tag-flaky.json" \
    --fail-rate "$FAIL_RATE" --hang-rate "$HANG_RATE" --hang-secs "$HANG_SECS" --seed 7 2>>"$WORK/$tag-sinks.log" &
  SINK_PIDS+=("$!")
  PIDS+=("${SINK_PIDS[@]}")
  for ((i = 0; i < 100; i++)); do
    [[ -s $WORK/$tag-capture.port && -s $WORK/$tag-flaky.port ]] && break
    sleep 0.1
  done
  [[ -s $WORK/$tag-capture.port && -s $WORK/$tag-flaky.port ]] || { echo "soak.sh: the sinks did not start:" >&2; cat "$WORK/$tag-sinks.log" >&2; exit 1; }
  CAPTURE_PORT=$(cat "$WORK/$tag-capture.port")
  FLAKY_PORT=$(cat "$WORK/$tag-flaky.port")
}

stop_sinks() { # TAG: SIGTERM; each writes its summary
  local p
  for p in "${SINK_PIDS[@]}"; do stop_pid "$p" 70; done
  [[ -s $WORK/$1-capture.json && -s $WORK/$1-flaky.json ]] || { echo "soak.sh: a sink wrote no summary:" >&2; cat "$WORK/$1-sinks.log" >&2; exit 1; }
}

write_config() { # FILE
  cat >"$1" <<EOF
hostname = "soak"
interval = "${INTERVAL}s"
shutdown_timeout = "5s"

[ingest]
statsd_udp = ["127.0.0.1:0"]
readers = 1

[http]
listen = "127.0.0.1:0"

[[sinks]]
type = "http"
name = "capture"
url = "http://127.0.0.1:$CAPTURE_PORT/ingest"
timeout = "${SINK_TIMEOUT_MS}ms"

[[sinks]]
type = "http"
name = "flaky"
url = "http://127.0.0.1:$FLAKY_PORT/ingest"
timeout = "${SINK_TIMEOUT_MS}ms"
EOF
}

start_meterd() { # TAG: sets METERD_PID, METERD_WRAPPER, UDP_ADDR, UDP_PORT, HTTP_ADDR
  local tag=$1 i addrs
  write_config "$WORK/$tag.toml"
  timeout -s TERM -k 10 "$LIMIT" taskset -c "$METERD_CPU" "$WORK/meterd" --config "$WORK/$tag.toml" \
    >"$WORK/$tag-meterd.out" 2>"$WORK/$tag-meterd.log" &
  METERD_WRAPPER=$!
  PIDS+=("$METERD_WRAPPER")
  METERD_PID=""
  for ((i = 0; i < 100; i++)); do # the child of `timeout` is meterd (taskset execs it)
    METERD_PID=$(awk '{print $1}' "/proc/$METERD_WRAPPER/task/$METERD_WRAPPER/children" 2>/dev/null) || true
    [[ -n $METERD_PID ]] && break
    sleep 0.05
  done
  [[ -n $METERD_PID ]] || { echo "soak.sh: meterd did not start" >&2; exit 1; }
  addrs=$("${HELPER[@]}" ready --log "$WORK/$tag-meterd.log" --pid "$METERD_PID")
  UDP_ADDR=${addrs% *}
  HTTP_ADDR=${addrs#* }
  UDP_PORT=${UDP_ADDR##*:}
}

stop_meterd() { # sets METERD_EXIT: meterd's status after SIGTERM (final flush, then exit)
  METERD_EXIT=0
  kill -TERM "$METERD_PID" 2>/dev/null || true
  local i
  for ((i = 0; i < 300; i++)); do
    kill -0 "$METERD_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$METERD_PID" 2>/dev/null; then
    echo "soak.sh: meterd did not exit within 30 s of SIGTERM; killed" >&2
    kill -KILL "$METERD_PID" 2>/dev/null || true
  fi
  wait "$METERD_WRAPPER" || METERD_EXIT=$?
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p == "$METERD_WRAPPER" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
  METERD_PID=""
}

run_load() { # TOTALS SECS ARGS...: meterd-load in the background (so signals reach the trap)
  local totals=$1 secs=$2 pid rc=0
  shift 2
  timeout -k 5 $(( secs + 30 )) "$LOAD" --to "$UDP_ADDR" --workload "$WORKLOAD" --series "$SERIES" \
    --cpu "$LOAD_CPU" --quiet --totals "$totals" --duration "$secs" "$@" &
  pid=$!
  PIDS+=("$pid")
  wait "$pid" || rc=$?
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
  (( rc == 0 )) || { echo "soak.sh: meterd-load failed (status $rc)" >&2; exit 1; }
}

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)
if ! git -C "$ROOT" diff --quiet HEAD -- src tools Cargo.toml Cargo.lock 2>/dev/null; then COMMIT="$COMMIT + uncommitted changes"; fi
meta smoke "$SMOKE"
meta command "benches/soak.sh${ARGV[*]:+ ${ARGV[*]}}"
meta commit "$COMMIT"
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta nproc "$(nproc)"
meta cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
meta kernel "$(uname -r)"
meta load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
for v in DURATION SEGMENT SERIES WORKLOAD INTERVAL FAIL_RATE HANG_RATE HANG_SECS PROBE_SECS RSS_EVERY \
  LOAD_CPU METERD_CPU SINK_TIMEOUT_MS RATE_CAP; do
  meta "${v,,}" "${!v}"
done

# ---------------------------------------------------------------------------------------------
# Capacity probe: a fresh meterd with the same config and sinks, flooded flat out.
if [[ -z $RATE ]]; then
  log "capacity probe: meterd-load flat out for $PROBE_SECS s"
  start_sinks probe
  start_meterd probe
  "${HELPER[@]}" snapshot --http "$HTTP_ADDR" >"$WORK/probe-before.json"
  run_load "$WORK/probe-totals.json" "$PROBE_SECS" --prefix probe --rate 0
  sent_end=$(now)
  drained=$("${HELPER[@]}" drain --http "$HTTP_ADDR" --port "$UDP_PORT" --pid "$METERD_PID")
  "${HELPER[@]}" snapshot --http "$HTTP_ADDR" >"$WORK/probe-after.json"
  PROBE=$("${HELPER[@]}" probe --before "$WORK/probe-before.json" --after "$WORK/probe-after.json" \
    --totals "$WORK/probe-totals.json" --sent-end "$sent_end" --drained "$drained")
  stop_meterd
  stop_sinks probe
  RATE=$(python3 -c "import json,sys; r=json.loads(sys.argv[1])['processed_rate']/2; print(int(float(f'{r:.3g}')))" "$PROBE")
  if (( RATE_CAP > 0 && RATE > RATE_CAP )); then RATE=$RATE_CAP; fi
  meta probe "$PROBE"
  log "capacity probe: $(python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(f\"{r['processed_rate']:,.0f} lines/s processed ({r['sent_rate']:,.0f} offered, {r['kernel_drops']:,.0f} datagrams dropped by the kernel)\")" "$PROBE"); soaking at $RATE lines/s"
fi
(( RATE > 0 )) || { echo "soak.sh: the rate is 0" >&2; exit 1; }
meta rate "$RATE"

# ---------------------------------------------------------------------------------------------
# The soak.
SEGMENTS=$(( (DURATION + SEGMENT - 1) / SEGMENT ))
WARMUP=$(( DURATION / 10 > 2 * SEGMENT ? DURATION / 10 : 2 * SEGMENT )) # reported, not judged
if (( WARMUP * 2 > DURATION )); then WARMUP=$(( DURATION / 4 )); fi
meta segments "$SEGMENTS"
meta warmup "$WARMUP"
start_sinks soak
start_meterd soak
"${HELPER[@]}" snapshot --http "$HTTP_ADDR" --pid "$METERD_PID" >"$WORK/soak-start.json"
T_START=$(now)
meta t_soak_start "$T_START"
log "soak: $DURATION s at $RATE lines/s, $SEGMENTS segments of $SERIES $WORKLOAD series, flushes every $INTERVAL s; meterd pid $METERD_PID, UDP $UDP_ADDR, HTTP $HTTP_ADDR"
timeout -k 5 $(( DURATION + 200 )) python3 "$WORK/soak.py" sample --http "$HTTP_ADDR" --pid "$METERD_PID" \
  --every "$RSS_EVERY" --until "$(python3 -c "print($T_START + $DURATION + 120)")" \
  --stop-file "$WORK/stop-sampling" --out "$WORK/soak-samples.jsonl" --port "$UDP_PORT" --cpu "$METERD_CPU" &
SAMPLER=$!
PIDS+=("$SAMPLER")
left=$DURATION
for ((seg = 0; seg < SEGMENTS; seg++)); do
  secs=$(( left < SEGMENT ? left : SEGMENT ))
  prefix=$(printf 'soak%04d' "$seg")
  run_load "$WORK/totals-$prefix.json" "$secs" --prefix "$prefix" --rate "$RATE" --seed $(( seg + 1 ))
  left=$(( left - secs ))
  kill -0 "$METERD_PID" 2>/dev/null || { echo "soak.sh: meterd died during segment $prefix" >&2; KEEP=1; exit 1; }
  log "$(python3 - "$WORK/totals-$prefix.json" "$METERD_PID" "$seg" "$SEGMENTS" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
rss = next(int(r.split()[1]) for r in open(f"/proc/{sys.argv[2]}/status") if r.startswith("VmRSS:"))
load = open("/proc/loadavg").read().split()[0]
print(f"segment {int(sys.argv[3]) + 1}/{sys.argv[4]} {t['workload']['prefix']}: sent {t['lines']:,} lines at "
      f"{t['lines_per_s']:,.0f}/s, {t['send_errors']} send errors; meterd RSS {rss / 1024:.1f} MiB; load {load}")
PY
)"
done
T_SENT_END=$(now)
meta t_sent_end "$T_SENT_END"
"${HELPER[@]}" drain --http "$HTTP_ADDR" --port "$UDP_PORT" --pid "$METERD_PID" >/dev/null
"${HELPER[@]}" snapshot --http "$HTTP_ADDR" --pid "$METERD_PID" >"$WORK/soak-end.json"
meta load_end "$(cut -d' ' -f1-3 /proc/loadavg)"
touch "$WORK/stop-sampling"
stop_pid "$SAMPLER" 10
meta t_term "$(now)"
stop_meterd
meta meterd_exit "$METERD_EXIT"
stop_sinks soak

# ---------------------------------------------------------------------------------------------
rc=0
"${HELPER[@]}" report --work "$WORK" --meta "$WORK/meta.tsv" >"$WORK/report.md" || rc=$?
if [[ ! -s $WORK/report.md ]]; then echo "soak.sh: the report failed" >&2; KEEP=1; exit 1; fi
cat "$WORK/report.md"
if [[ -n $OUT ]]; then
  cp "$WORK/report.md" "$OUT"
  log "written to $OUT"
fi
if (( rc != 0 )); then
  log "soak: NOT as expected (work directory kept: $WORK)"
  KEEP=1
  exit 1
fi
log "soak: as expected"
