#!/usr/bin/env python3
"""HTTP sinks for benches/soak.sh, two kinds of `[[sinks]] type = "http"` endpoint:

  capture  answers 200 at once, then records each flush document meterd POSTs: when it arrived
           (headers and last body byte), its size, its timestamp, meterd's own `meterd.*` points,
           and, summed over the whole run, the counter values and timer `.count`s of every load
           series (names matching --series-re) plus the gauge series seen. A document whose
           timestamp was already seen (a retry after a timeout) is counted, not summed again.
  flaky    reads each body, then answers 500 on a --fail-rate share of requests and, on a
           --hang-rate share, sleeps --hang-secs (past meterd's sink timeout) before answering;
           the rest get 200. Seeded, so a run's decisions are reproducible given the requests.

Both bind 127.0.0.1 port 0 and write the port to --port-file once listening. On SIGTERM or
SIGINT, or after --max-secs at the latest, they stop, write their summary (--summary) and exit 0.
Only the standard library: python3 is on every machine this runs on.
"""
import argparse
import http.server
import json
import os
import random
import re
import signal
import sys
import threading
import time

# Self-metrics kept per flush: name -> tag key whose value splits it (None: summed over tags).
SELF_METRICS = {
    "meterd.lines.received": None,
    "meterd.packets.received": None,
    "meterd.lines.invalid": None,
    "meterd.udp.kernel_drops": None,
    "meterd.flush.duration_ms": None,
    "meterd.series.active": None,
    "meterd.series.dropped": None,
    "meterd.sink.sent": "sink",
    "meterd.sink.errors": "sink",
    "meterd.sink.dropped": "sink",
}


def read_body(handler):
    """The request body (Content-Length or chunked)."""
    length = handler.headers.get("Content-Length")
    if length is not None:
        return handler.rfile.read(int(length))
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                handler.rfile.readline()
                break
            parts.append(handler.rfile.read(size))
            handler.rfile.readline()
        return b"".join(parts)
    return b""


def answer(handler, status, body=b"{}"):
    """Sends a JSON answer; a client that gave up (timeout) is not an error here."""
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        handler.wfile.flush()
    except OSError:
        pass


class Capture:
    """What the capture sink has seen; every method runs under `lock`."""

    def __init__(self, a):
        self.lock = threading.Lock()
        self.series_re = re.compile(a.series_re)
        self.records = open(a.records, "a", buffering=1)
        self.counters, self.timers, self.gauges = {}, {}, set()
        self.seen_ts = set()
        self.docs = self.duplicates = self.bad = 0
        self.inflight = 0
        self.idle = threading.Condition(self.lock)

    def begin(self):
        with self.lock:
            self.inflight += 1

    def end(self):
        with self.lock:
            self.inflight -= 1
            self.idle.notify_all()

    def wait_idle(self, timeout):
        """Until no document is being parsed (the last one may arrive just before SIGTERM)."""
        deadline = time.time() + timeout
        with self.lock:
            while self.inflight > 0 and time.time() < deadline:
                self.idle.wait(max(0.0, deadline - time.time()))

    def add(self, t_start, t_end, body):
        try:
            doc = json.loads(body)
            metrics = doc["metrics"]
        except (ValueError, KeyError, TypeError) as e:
            with self.lock:
                self.bad += 1
                self.records.write(json.dumps({"t_start": t_start, "t_end": t_end, "bytes": len(body),
                                               "error": str(e)[:200]}) + "\n")
            return
        stamps = {}
        for m in metrics:
            stamps[m.get("timestamp")] = stamps.get(m.get("timestamp"), 0) + 1
        ts = max(stamps, key=stamps.get) if stamps else None
        own, load_points = {}, 0
        counters, timers, gauges = {}, {}, set()
        for m in metrics:
            name = m.get("name", "")
            if name.startswith("meterd."):
                if name in SELF_METRICS:
                    split = SELF_METRICS[name]
                    key = name
                    if split:
                        tag = next((t.split(":", 1)[1] for t in m.get("tags") or [] if t.startswith(split + ":")), "")
                        key = f"{name}{{{tag}}}"
                    own[key] = own.get(key, 0) + m.get("value", 0)
                continue
            g = self.series_re.match(name)
            if not g:
                continue
            load_points += 1
            tags = sorted(m.get("tags") or [])
            suffix = "|#" + ",".join(tags) if tags else ""
            kind, rest = g.group("type"), g.group("rest")
            if kind == "c" and not rest and m.get("kind") == "counter":
                k = name + suffix
                counters[k] = counters.get(k, 0.0) + m["value"]
            elif kind in ("ms", "h", "d") and rest == ".count":
                k = name[: -len(rest)] + suffix
                timers[k] = timers.get(k, 0.0) + m["value"]
            elif kind == "g" and not rest:
                gauges.add(name + suffix)
        with self.lock:
            self.docs += 1
            dup = ts in self.seen_ts
            if dup:
                self.duplicates += 1
            else:
                self.seen_ts.add(ts)
                for k, v in counters.items():
                    self.counters[k] = self.counters.get(k, 0.0) + v
                for k, v in timers.items():
                    self.timers[k] = self.timers.get(k, 0.0) + v
                self.gauges |= gauges
            self.records.write(json.dumps({
                "t_start": t_start, "t_end": t_end, "t_parsed": time.time(), "bytes": len(body),
                "timestamp": ts, "timestamps": len(stamps), "duplicate": dup, "metrics": len(metrics),
                "load_points": load_points, "self": own}) + "\n")

    def summary(self):
        with self.lock:
            return {"documents": self.docs, "duplicates": self.duplicates, "bad": self.bad,
                    "counters": self.counters, "timers": self.timers, "gauges": sorted(self.gauges)}


class Flaky:
    """The flaky sink's decisions and counts."""

    def __init__(self, a):
        self.lock = threading.Lock()
        self.rng = random.Random(a.seed)
        self.fail, self.hang, self.hang_secs = a.fail_rate, a.hang_rate, a.hang_secs
        self.counts = {"requests": 0, "ok": 0, "failed_500": 0, "hung": 0, "bytes": 0}

    def decide(self, n_bytes):
        with self.lock:
            r = self.rng.random()
            self.counts["requests"] += 1
            self.counts["bytes"] += n_bytes
            if r < self.fail:
                self.counts["failed_500"] += 1
                return "fail"
            if r < self.fail + self.hang:
                self.counts["hung"] += 1
                return "hang"
            self.counts["ok"] += 1
            return "ok"

    def summary(self):
        with self.lock:
            return dict(self.counts, fail_rate=self.fail, hang_rate=self.hang, hang_secs=self.hang_secs)


def make_handler(state, mode):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # no per-request lines on stderr
            pass

        def do_POST(self):
            t_start = time.time()
            try:
                body = read_body(self)
            except (OSError, ValueError):
                self.close_connection = True
                return
            t_end = time.time()
            if mode == "capture":
                state.begin()
                try:
                    answer(self, 200)
                    state.add(t_start, t_end, body)
                finally:
                    state.end()
                return
            what = state.decide(len(body))
            if what == "fail":
                answer(self, 500, b'{"error":"flaky sink: injected failure"}')
            elif what == "hang":
                time.sleep(state.hang_secs)
                self.close_connection = True
                answer(self, 200)
            else:
                answer(self, 200)

        def do_GET(self):
            answer(self, 200, b'{"status":"ok"}')

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    for mode in ("capture", "flaky"):
        p = sub.add_parser(mode)
        p.add_argument("--port-file", required=True, help="written with the bound port")
        p.add_argument("--summary", required=True, help="JSON summary written at exit")
        p.add_argument("--max-secs", type=float, default=3600, help="lifetime bound")
        if mode == "capture":
            p.add_argument("--records", required=True, help="one JSON line per document")
            p.add_argument("--series-re", default=r"^load\d*\.(?P<type>c|g|s|ms|h|d)\.m\d+(?P<rest>(\.[a-z0-9_]+)?)$",
                           help="load series names (groups: type, rest)")
        else:
            p.add_argument("--fail-rate", type=float, default=0.2)
            p.add_argument("--hang-rate", type=float, default=0.05)
            p.add_argument("--hang-secs", type=float, default=1.5)
            p.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.mode == "flaky" and not (0 <= a.fail_rate and 0 <= a.hang_rate and a.fail_rate + a.hang_rate <= 1):
        sys.exit("soak_sink.py: --fail-rate + --hang-rate must be within [0, 1]")
    state = Capture(a) if a.mode == "capture" else Flaky(a)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state, a.mode))
    server.daemon_threads = True
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{server.server_address[1]}\n")
    os.replace(tmp, a.port_file)
    stop.wait(a.max_secs)
    server.shutdown()
    if isinstance(state, Capture):
        state.wait_idle(60)
    tmp = a.summary + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state.summary(), f)
    os.replace(tmp, a.summary)


if __name__ == "__main__":
    main()
