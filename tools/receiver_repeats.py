#!/usr/bin/env python3
"""What a receiver does with a request it gets twice: the table in docs/sinks.md
("Retries and duplicates") comes from this script's output.

    python3 tools/receiver_repeats.py

Starts the receivers the end-to-end tests use (prometheus, victoria-metrics, influxd from Debian;
.ci/run installs them) on loopback ports in a temporary directory, posts the same remote-write,
Influx line protocol and Datadog series request twice to each (and a different value at the same
timestamp), and prints what each stored: Prometheus's count_over_time and raw samples,
VictoriaMetrics' /api/v1/export without and with -dedup.minScrapeInterval, InfluxDB's count and
last value. Every process is killed and the temporary directory removed at the end.
"""
import json, os, shutil, socket, struct, subprocess, tempfile, time, urllib.error, urllib.parse, urllib.request

ROOT = tempfile.mkdtemp(prefix="receiver-repeats.")

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def req(method, url, body=None, headers=None):
    r = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")

def wait_ready(url, status):
    for _ in range(200):
        try:
            if req("GET", url)[0] == status: return
        except Exception: pass
        time.sleep(0.05)
    raise SystemExit("not ready " + url)

def varint(n):
    out = b""
    while True:
        b = n & 0x7f; n >>= 7
        if n: out += bytes([b | 0x80])
        else: return out + bytes([b])

def snappy(raw):
    out = varint(len(raw))
    for i in range(0, len(raw), 60):
        chunk = raw[i:i+60]
        out += bytes([(len(chunk) - 1) << 2]) + chunk
    return out

def field(num, wt, payload):
    return varint(num << 3 | wt) + payload

def ld(num, b):
    return field(num, 2, varint(len(b)) + b)

def write_request(labels, value, ts_ms):
    ts = b"".join(ld(1, ld(1, k.encode()) + ld(2, v.encode())) for k, v in labels)
    sample = field(1, 1, struct.pack("<d", value)) + field(2, 0, varint(ts_ms))
    return ld(1, ts + ld(2, sample))

def rw(base, value, ts_ms, name):
    body = snappy(write_request([("__name__", name), ("host", "h")], value, ts_ms))
    return req("POST", base + "/api/v1/write", body, {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf", "X-Prometheus-Remote-Write-Version": "0.1.0"})

procs = []
def start(args, ready, status):
    d = tempfile.mkdtemp(dir=ROOT)
    port = free_port()
    argv = [a.format(port=port, dir=d) for a in args]
    log = open(os.path.join(d, "log"), "w")
    p = subprocess.Popen(argv, cwd=d, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    procs.append(p)
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + ready, status)
    return base, d

now = int(time.time())
try:
    print("== Prometheus", subprocess.run(["prometheus", "--version"], capture_output=True, text=True).stdout.splitlines()[0])
    d = tempfile.mkdtemp(dir=ROOT); open(d + "/p.yml", "w").write("global:\n  scrape_interval: 1s\n")
    base, _ = start(["prometheus", f"--config.file={d}/p.yml", "--storage.tsdb.path={dir}/data", "--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver", "--log.level=warn"], "/-/ready", 200)
    ts = (now - 5) * 1000
    print("first write", rw(base, 5.0, ts, "dup_test"))
    print("same sample again", rw(base, 5.0, ts, "dup_test"))
    print("other value, same timestamp", rw(base, 6.0, ts, "dup_test"))
    q = urllib.parse.quote("count_over_time(dup_test[1m])")
    print("count_over_time", req("GET", f"{base}/api/v1/query?query={q}&time={now}")[1])
    q = urllib.parse.quote("dup_test[1m]")
    print("raw", req("GET", f"{base}/api/v1/query?query={q}&time={now}")[1])

    for dedup in ["", "-dedup.minScrapeInterval=1ms"]:
        print("== VictoriaMetrics", dedup or "(no dedup)")
        args = ["victoria-metrics", "-httpListenAddr=127.0.0.1:{port}", "-storageDataPath={dir}/data", "-search.latencyOffset=0s", "-search.disableCache", "-loggerLevel=ERROR"]
        if dedup: args.append(dedup)
        base, _ = start(args, "/health", 200)
        ts = (now - 5) * 1000
        print("rw twice", rw(base, 5.0, ts, "rw_dup"), rw(base, 5.0, ts, "rw_dup"))
        line = f"influx_dup,host=h value=5 {now-5}\n".encode()
        print("influx twice", req("POST", base + "/write?precision=s", line), req("POST", base + "/write?precision=s", line))
        dd = json.dumps({"series": [{"metric": "dd.dup", "type": "gauge", "points": [[now - 5, 5.0]], "host": "h", "tags": []}]}).encode()
        print("datadog twice", req("POST", base + "/datadog/api/v1/series", dd, {"Content-Type": "application/json"}), req("POST", base + "/datadog/api/v1/series", dd, {"Content-Type": "application/json"}))
        req("GET", base + "/internal/force_flush")
        for m in ["rw_dup", "influx_dup_value", "dd.dup"]:
            sel = urllib.parse.quote('{__name__="%s"}' % m)
            print(m, "export:", req("GET", f"{base}/api/v1/export?match[]={sel}")[1].strip())
            q = urllib.parse.quote('count_over_time({__name__="%s"}[1m])' % m)
            print(m, "count_over_time:", req("GET", f"{base}/api/v1/query?query={q}&time={now}")[1])

    print("== InfluxDB", subprocess.run(["influxd", "version"], capture_output=True, text=True).stdout.strip())
    rpc = free_port()
    d = tempfile.mkdtemp(dir=ROOT)
    port = free_port()
    open(d + "/i.conf", "w").write(f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc}"\n[meta]\n  dir = "{d}/meta"\n[data]\n  dir = "{d}/data"\n  wal-dir = "{d}/wal"\n[http]\n  enabled = true\n  bind-address = "127.0.0.1:{port}"\n  log-enabled = false\n[monitor]\n  store-enabled = false\n')
    log = open(d + "/log", "w")
    p = subprocess.Popen(["influxd", "run", "-config", d + "/i.conf"], cwd=d, stdout=log, stderr=log, stdin=subprocess.DEVNULL); procs.append(p)
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + "/ping", 204)
    print(req("POST", base + "/query?q=CREATE%20DATABASE%20t"))
    line = f"dup,host=h value=5 {now-5}\n".encode()
    print("twice", req("POST", base + "/write?db=t&precision=s", line), req("POST", base + "/write?db=t&precision=s", line))
    q = urllib.parse.quote("SELECT count(value), last(value) FROM dup")
    print("count", req("GET", f"{base}/query?db=t&q={q}")[1])
    print("other value", req("POST", base + "/write?db=t&precision=s", f"dup,host=h value=6 {now-5}\n".encode()))
    print("count", req("GET", f"{base}/query?db=t&q={q}")[1])
finally:
    for p in procs:
        p.kill(); p.wait()
    shutil.rmtree(ROOT, ignore_errors=True)
