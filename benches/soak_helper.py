"""The helper of benches/soak.sh: readiness, drains, /metrics snapshots, sampling, the capacity
probe, per-segment lines and the report.

Run by the script, one subcommand at a time: `python3 benches/soak_helper.py CMD ...` (ready,
drain, snapshot, sample, probe, probe-rate, probe-summary, segment, report).
"""
import argparse, glob, json, math, os, re, sys, time, urllib.request

from bench_common import CLK, loadavg, proc, say, threads, udp_stat

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Bytes per remembered gauge at most (README, "memory budget": 30-60, up to twice that just
# after a table doubles).
GAUGE_BYTES = 120
# Share of meterd-load's series that are gauges, per preset (its type weights).
GAUGE_SHARE = {"dogstatsd": 2 / 10, "plain": 2 / 10}


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
                rec["gauges"] = m.get("meterd_gauges_remembered")
                rec["gauge_kb"] = (m.get("meterd_gauges_remembered_bytes") or 0) / 1024
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
    # The gauge memory (last values kept an hour for +N; meterd_gauges_remembered_bytes) grows
    # for an hour under churning gauge names, then levels off: it is judged against its
    # documented bound (GAUGE_BYTES per remembered gauge), and the rest of RSS must be flat.
    gkb = [s.get("gauge_kb") for s in samples]
    has_gauges = bool(samples) and all(g is not None for g in gkb)
    gpts = [((s["t"] - t0) / 60, s["gauge_kb"]) for s in samples] if has_gauges else []
    rest = [((s["t"] - t0) / 60, s["rss_kb"] - s["gauge_kb"]) for s in samples] if has_gauges else pts
    rest_half = [(x, y) for x, y in rest if x >= rest[-1][0] / 2] if rest else []
    slope_rest = fit(rest_half)
    slope_gauges = fit([(x, y) for x, y in gpts if x >= gpts[-1][0] / 2]) if gpts else None
    gauges_last = samples[-1].get("gauges") or 0 if samples else 0
    gauges_peak = max((s.get("gauges") or 0 for s in samples), default=0)
    gauge_kb_last = gpts[-1][1] if gpts else 0.0
    gauge_ok = not has_gauges or gauge_kb_last * 1024 <= GAUGE_BYTES * max(gauges_peak, 1) + 64 * 1024
    mem_ok = None
    # Flat = the second half's slope (of RSS less the gauge memory), kept up for an hour, adds
    # at most 10 % of that half's mean RSS (or 2 MiB); a falling RSS (memory returned after an
    # early peak) is not growth. The second half, not the whole run: buffers sized by the
    # largest flush and the allocator settle during the first minutes, and a leak shows as a
    # slope that persists.
    if slope_half is not None and slope_after is not None and slope_rest is not None:
        mean = sum(y for _, y in half) / len(half)
        per_hour = slope_rest * 60
        mem_ok = per_hour <= max(0.10 * mean, 2048) and gauge_ok
        mem_text = (f"memory: RSS {mib(rss[0])} first, {mib(rss[-1])} last, {mib(max(rss))} peak (VmHWM {mib(hwm)});"
                    f" slope {slope_all:+,.0f} KiB/min over the run, {slope_after:+,.0f} KiB/min after the first"
                    f" {warm:.0f} s, {slope_half:+,.0f} KiB/min over the second half")
        if has_gauges:
            mem_text += (f"; of which the gauge memory {slope_gauges:+,.0f} KiB/min ({n(gauges_last)} gauges remembered"
                         f" in {mib(gauge_kb_last)}, {gauge_kb_last * 1024 / max(gauges_last, 1):.0f} B each,"
                         f" {'within' if gauge_ok else 'beyond'} the documented {GAUGE_BYTES} B per gauge at its peak"
                         f" of {n(gauges_peak)}), the rest {slope_rest:+,.0f} KiB/min")
        mem_text += (f" ({per_hour / 1024:+.1f} MiB per hour, {'within' if per_hour <= max(0.10 * mean, 2048) else 'beyond'}"
                     f" +10 % of the mean RSS {mib(mean)})")
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
    if has_gauges and slope_rest is not None:
        per_hour_g = float(meta["series"]) * GAUGE_SHARE.get(meta["workload"], 0) * 3600 / float(meta["segment"])
        L.append(f"| gauge memory (`meterd_gauges_remembered_bytes`: last values kept an hour for `+N`) |"
                 f" {n(gauges_last)} gauges in {mib(gauge_kb_last)} at the end; second-half slope {slope_gauges:+,.0f} KiB/min;"
                 f" at this churn (~{n(per_hour_g)} new gauge series an hour) it levels off after an hour at"
                 f" ≤ {per_hour_g * GAUGE_BYTES / 2**20:.0f} MiB ({GAUGE_BYTES} B per gauge) |")
        L.append(f"| RSS less the gauge memory, slope over the second half | **{slope_rest:+,.0f} KiB/min** |")
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
            rows.append(f"| {s['t'] - t0:.0f} s | {mib(s['rss_kb'])} | {mib(s.get('gauge_kb') or 0)} | {n(w['lines'] / w['dt'] if w['dt'] > 0 else 0)} |"
                        f" {n(w['drops'])} | {w['other'] / w['dt'] * 100 if w['dt'] > 0 else 0:.0f} % |"
                        f" {share([w], 'reader_wait', 'reader_all') * 100:.0f} % | {s['loadavg'][0]} |")
            prev, nxt = s, nxt + step
    if rows:
        L.append(f"\n| time | RSS | of which gauge memory | lines/s received | kernel drops (datagrams) | other work on meterd's CPU |"
                 f" UDP reader waiting for a CPU | load (1 min) |")
        L.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
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


def cmd_probe_rate(a):
    """The soak's rate from the probe's result: half the processed rate, to 3 significant digits."""
    r = json.loads(a.probe)["processed_rate"] / 2
    print(int(float(f"{r:.3g}")))


def cmd_probe_summary(a):
    """One line about the probe's result, for the log."""
    r = json.loads(a.probe)
    print(f"{r['processed_rate']:,.0f} lines/s processed ({r['sent_rate']:,.0f} offered, "
          f"{r['kernel_drops']:,.0f} datagrams dropped by the kernel)")


def cmd_segment(a):
    """One line about a finished segment: what meterd-load sent, meterd's RSS, the load."""
    t = json.load(open(a.totals))
    rss = next(int(r.split()[1]) for r in open(f"/proc/{a.pid}/status") if r.startswith("VmRSS:"))
    load = open("/proc/loadavg").read().split()[0]
    print(f"segment {int(a.seg) + 1}/{a.segments} {t['workload']['prefix']}: sent {t['lines']:,} lines at "
          f"{t['lines_per_s']:,.0f}/s, {t['send_errors']} send errors; meterd RSS {rss / 1024:.1f} MiB; load {load}")


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
    p = sub.add_parser("probe-rate")
    p.add_argument("probe")
    p = sub.add_parser("probe-summary")
    p.add_argument("probe")
    p = sub.add_parser("segment")
    p.add_argument("totals")
    p.add_argument("pid")
    p.add_argument("seg")
    p.add_argument("segments")
    a = ap.parse_args()
    {"ready": cmd_ready, "drain": cmd_drain, "snapshot": cmd_snapshot, "sample": cmd_sample,
     "probe": cmd_probe, "report": cmd_report, "probe-rate": cmd_probe_rate,
     "probe-summary": cmd_probe_summary, "segment": cmd_segment}[a.cmd](a)


if __name__ == "__main__":
    main()
