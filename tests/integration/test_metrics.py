"""Observability against the real server: GET /metrics parsed with Debian's prometheus_client
parser (names, types, units, histogram shape), counters that move with real traffic (sessions,
WebSockets, bytes, jobs by outcome, queue wait and stage histograms, worker restarts, the model
info labels), HEAD and 405, /healthz and /readyz (503 while no worker has its model, 200 after),
and the one log line each job ends with."""
import asyncio
import json
import os
import re
import signal
import time

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # scripts/install-deps.sh --test installs it
    raise SystemExit("test_metrics: needs python3-prometheus-client (apt-get install -y python3-prometheus-client)")

from harness import (Server, check, finish, generate, make_image, raw_http, run, session_with_images, wait_new_worker)


class UnwaitedServer(Server):
    """A server whose start does not wait for the workers' models."""

    def wait_ready(self, timeout=120):
        return None


def scrape(srv):
    """(families by name, raw text, Content-Type) of one GET /metrics."""
    import urllib.request
    with urllib.request.urlopen(srv.base + "/metrics", timeout=30) as r:
        ctype, text = r.headers.get("Content-Type", ""), r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}, text, ctype


def value(fams, family, sample=None, **labels):
    """The value of one sample (sample name defaults to the family's), or None."""
    f = fams.get(family)
    if not f:
        return None
    for s in f.samples:
        if s.name == (sample or family) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


def hist_count(fams, family, **labels):
    return value(fams, family, family + "_count", **labels)


STAGES = ["decode", "model", "fusion", "glb", "encode", "send"]
# Family names as the parser reports them (a counter's without its _total) and their types.
EXPECTED = {
    "da3_model_info": "gauge", "da3_uptime_seconds": "gauge",
    "da3_sessions": "gauge", "da3_sessions_max": "gauge", "da3_sessions_created": "counter",
    "da3_connections_open": "gauge", "da3_websocket_connections": "gauge",
    "da3_websocket_connections_opened": "counter",
    "da3_received_bytes": "counter", "da3_sent_bytes": "counter",
    "da3_inbound_bytes": "gauge", "da3_inbound_limit_bytes": "gauge", "da3_connection_send_queue_limit_bytes": "gauge",
    "da3_job_queue_depth": "gauge", "da3_job_queue_capacity": "gauge",
    "da3_jobs_submitted": "counter", "da3_jobs_rejected": "counter", "da3_jobs": "counter",
    "da3_job_queue_wait_seconds": "histogram", "da3_job_stage_duration_seconds": "histogram",
    "da3_workers_configured": "gauge", "da3_workers": "gauge", "da3_worker_restarts": "counter",
    "da3_arena_used_bytes": "gauge", "da3_arena_size_bytes": "gauge",
}


def check_shape(fams, text, ctype):
    check(ctype.startswith("text/plain") and "version=0.0.4" in ctype, f"Content-Type of /metrics: {ctype!r}")
    for name, typ in EXPECTED.items():
        f = fams.get(name)
        check(f is not None and f.type == typ, f"{name} is a {typ}: {f and f.type}")
    for name, f in fams.items():
        check(name.startswith("da3_"), f"{name}: da3_ prefix")
        check(f.type != "untyped", f"{name}: typed (a sample outside its declared family parses as untyped)")
        check(bool(f.documentation), f"{name}: has HELP text")
        if f.type == "counter":
            check(all(s.name.endswith("_total") for s in f.samples), f"{name}: counter samples end in _total")
        if "bytes" in name:
            check(name.endswith("_bytes"), f"{name}: a bytes metric is named *_bytes[_total]")
        if f.type == "histogram":
            check(name.endswith("_seconds"), f"{name}: histograms are in seconds")
    # every counter line in the text really is NAME_total
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) counter$", line)
        if m:
            check(m.group(1).endswith("_total"), f"TYPE line of a counter names its _total sample: {line}")
    # histograms: fixed, increasing buckets, cumulative counts, +Inf == _count, for every label set
    for name in ("da3_job_queue_wait_seconds", "da3_job_stage_duration_seconds"):
        f = fams[name]
        series = {}
        for s in f.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            series.setdefault(key, {"buckets": [], "count": None, "sum": None})
            if s.name.endswith("_bucket"):
                series[key]["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                series[key]["count"] = s.value
            elif s.name.endswith("_sum"):
                series[key]["sum"] = s.value
        if name == "da3_job_stage_duration_seconds":
            check(sorted(dict(k)["stage"] for k in series) == sorted(STAGES), f"stages: {sorted(series)}")
        for key, sr in series.items():
            les = [le for le, _ in sr["buckets"]]
            counts = [c for _, c in sr["buckets"]]
            check(les == sorted(les) and les[-1] == float("inf") and len(les) >= 10, f"{name}{key}: buckets {les}")
            check(all(a <= b for a, b in zip(counts, counts[1:])), f"{name}{key}: cumulative counts {counts}")
            check(sr["count"] == counts[-1], f"{name}{key}: _count {sr['count']} == +Inf bucket {counts[-1]}")
            check(sr["sum"] is not None and sr["sum"] >= 0, f"{name}{key}: _sum {sr['sum']}")


# ---- 1. readiness while no worker can load its model ----------------------------------------
bad = UnwaitedServer("--model", "/nonexistent/model-dir")
try:
    st, js = bad.http("GET", "/healthz")
    check(st == 200 and js.get("status") == "ok", f"/healthz 200 while the front runs: {st} {js}")
    for _ in range(20):
        st, js = bad.http("GET", "/readyz")
        check(st == 503, f"/readyz 503 while no worker has loaded the model: {st} {js}")
        time.sleep(0.1)
    check(isinstance(js, dict) and "not ready" in js.get("detail", "") and js.get("workers", {}).get("ready") == 0
          and js["workers"].get("configured") == 1, f"/readyz 503 detail: {js}")
    status, headers, body = raw_http(bad, b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    check(status == 503 and headers.get("retry-after") and json.loads(body).get("detail"), f"raw /readyz: {status} {headers}")
    fams, text, ctype = scrape(bad)
    check(value(fams, "da3_workers", state="ready") == 0, "da3_workers{state=ready} 0 while the model cannot load")
    st, js = bad.http("GET", "/status")
    check(st == 200 and js["workers"]["ready"] == 0, f"/status agrees: {js.get('workers')}")
finally:
    bad.cleanup()

# ---- 2. a real server: readiness at start, then the scrape, then traffic ------------------------
srv = UnwaitedServer("--max-sessions", "10")
try:
    # Scraped at once: /readyz is 503 exactly while /status has fewer workers ready.
    st_ready, js_ready = srv.http("GET", "/readyz")
    workers_ready = srv.http("GET", "/status")[1]["workers"]["ready"]
    check(st_ready in (200, 503), f"/readyz answers 200 or 503 at start: {st_ready}")
    if workers_ready == 0:
        check(st_ready == 503, f"/readyz 503 before the worker has loaded its model: {st_ready} {js_ready}")
    print(f"  /readyz right after start: {st_ready} ({js_ready.get('detail', js_ready.get('status'))})", flush=True)
    Server.wait_ready(srv)  # the real wait (UnwaitedServer skips it at start)
    st, js = srv.http("GET", "/readyz")
    check(st == 200 and js.get("status") == "ready" and js["workers"] == {"configured": 1, "ready": 1, "starting": 0,
                                                                           "dead": 0}, f"/readyz 200 once ready: {st} {js}")
    st, js = srv.http("GET", "/healthz")
    check(st == 200 and js == {"status": "ok"}, f"/healthz 200: {st} {js}")
    for path in ("/metrics", "/healthz", "/readyz"):
        st, js = srv.http("POST", path, b"")
        check(st == 405, f"POST {path}: 405, got {st}")

    # HEAD: the headers (with the length GET would send), no body.
    status, headers, body = raw_http(srv, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    check(status == 200 and body == b"" and int(headers.get("content-length", "0")) > 1000
          and "version=0.0.4" in headers.get("content-type", ""), f"HEAD /metrics: {status} {headers} {body[:80]!r}")

    before, text, ctype = scrape(srv)
    check_shape(before, text, ctype)
    model_status = srv.http("GET", "/status")[1]["model"]
    info = [s for s in before["da3_model_info"].samples]
    check(len(info) == 1 and info[0].value == 1 and info[0].labels.get("trained") == "false"
          and info[0].labels.get("model") == model_status["name"] and info[0].labels["model"],
          f"da3_model_info{{model=..., trained=\"false\"}} 1 for the demo model: {info} vs {model_status}")
    check(value(before, "da3_workers", state="ready") == 1 and value(before, "da3_workers_configured") == 1,
          "one worker ready, one configured")
    check(value(before, "da3_job_queue_capacity") == 256, "queue capacity 256")
    check(value(before, "da3_job_queue_depth", state="queued") == 0
          and value(before, "da3_job_queue_depth", state="running") == 0, "queue depth 0 when idle")
    check(value(before, "da3_sessions") == 0 and value(before, "da3_sessions_max") == 10, "no sessions yet, max 10")
    check(value(before, "da3_connections_open") >= 1, "the scrape's own connection is open")
    check(value(before, "da3_arena_size_bytes") == 1024 << 20, "arena size = --arena-mb")
    check(value(before, "da3_inbound_limit_bytes") == 1024 << 20, "inbound budget = --max-inbound-mb")
    check(value(before, "da3_connection_send_queue_limit_bytes") == 2 * (64 << 20), "send queue cap = 2 x --max-message-mb")
    for o in ("completed", "failed", "cancelled"):
        check(value(before, "da3_jobs", "da3_jobs_total", outcome=o) == 0, f"no {o} jobs yet")

    images = [make_image(140, 105, 10 + i) for i in range(2)]

    async def traffic():
        sid, ws = await session_with_images(srv, 2)
        mid, _, _ = scrape(srv)
        _, final = await generate(ws)
        after, _, _ = scrape(srv)
        await ws.close()
        return sid, final, mid, after

    sid, final, mid, after = run(traffic())
    check(final.get("type") == "complete", f"generate completed: {final.get('type')} {final.get('message')}")
    result_len = len(json.dumps(final))

    def moved(name, sample=None, by=None, **labels):
        a, b = value(before, name, sample, **labels), value(after, name, sample, **labels)
        ok = a is not None and b is not None and (b - a == by if by is not None else b > a)
        check(ok, f"{sample or name}{labels or ''} moved{' by ' + str(by) if by is not None else ''}: {a} -> {b}")
        return (b or 0) - (a or 0)

    moved("da3_sessions_created", "da3_sessions_created_total", by=1)
    check(value(after, "da3_sessions") == 1, f"da3_sessions 1: {value(after, 'da3_sessions')}")
    check(value(mid, "da3_websocket_connections") == 1, f"da3_websocket_connections 1 while connected: "
          f"{value(mid, 'da3_websocket_connections')}")
    check(value(mid, "da3_connections_open") >= 2, "the WebSocket and the scrape are open connections")
    moved("da3_websocket_connections_opened", "da3_websocket_connections_opened_total", by=1)
    got_in = moved("da3_received_bytes", "da3_received_bytes_total")
    check(got_in >= sum(len(i) for i in images), f"received bytes cover the uploads: {got_in}")
    got_out = moved("da3_sent_bytes", "da3_sent_bytes_total")
    check(got_out >= result_len, f"sent bytes cover the result message ({result_len}): {got_out}")
    moved("da3_jobs_submitted", "da3_jobs_submitted_total", by=1)
    moved("da3_jobs", "da3_jobs_total", by=1, outcome="completed")
    moved("da3_jobs", "da3_jobs_total", by=0, outcome="failed")
    moved("da3_job_queue_wait_seconds", "da3_job_queue_wait_seconds_count", by=1)
    for stage in STAGES:
        moved("da3_job_stage_duration_seconds", "da3_job_stage_duration_seconds_count", by=1, stage=stage)
    model_sum = value(after, "da3_job_stage_duration_seconds", "da3_job_stage_duration_seconds_sum", stage="model")
    check(model_sum and model_sum > 0.001, f"model stage sum is the network's time in seconds: {model_sum}")
    time.sleep(0.3)  # the closed socket's teardown
    fams, _, _ = scrape(srv)
    check(value(fams, "da3_websocket_connections") == 0, "da3_websocket_connections back to 0 after close")

    # One log line for the job: session id, stage timings, outcome and delivery.
    log = srv.log_text()
    pat = re.compile(rf"session {sid}: complete \(job \d+, 2 images, attempt 1; queue \d+ ms, decode \d+, model \d+, "
                     rf"fusion \d+, glb \d+, encode \d+ ms, GLB \d+ B, message \d+ B\): delivered \(")
    check(len(pat.findall(log)) == 1, "one log line for the completed job:\n" +
          "\n".join(l for l in log.splitlines() if sid in l))

    # A cancelled job: B waits behind A on the one worker and its session is deleted.
    async def cancel_one():
        sid_a, ws_a = await session_with_images(srv, 2, seed=20)
        sid_b, ws_b = await session_with_images(srv, 1, seed=30)
        await ws_a.send(json.dumps({"type": "generate"}))
        await ws_b.send(json.dumps({"type": "generate"}))
        m = json.loads(await asyncio.wait_for(ws_b.recv(), 30))  # B's first progress: it is queued
        st, _ = srv.http("DELETE", f"/ws/session/{sid_b}")
        check(st == 200, f"delete B: {st}")
        while True:
            m = json.loads(await asyncio.wait_for(ws_a.recv(), 120))
            if m["type"] != "progress":
                break
        await ws_a.close()
        await ws_b.close()
        return sid_b, m

    before = after
    sid_b, final_a = run(cancel_one())
    check(final_a.get("type") == "complete", f"A completed: {final_a.get('type')}")
    after, _, _ = scrape(srv)
    moved("da3_jobs", "da3_jobs_total", by=1, outcome="completed")
    moved("da3_jobs", "da3_jobs_total", by=1, outcome="cancelled")
    check(re.search(rf"session {sid_b}: cancelled \(job \d+, 1 images, attempt \d; queue \d+ ms, decode \d+, "
                    rf"model \d+, fusion \d+, glb \d+, encode \d+ ms\): ", srv.log_text()),
          "one log line for the cancelled job")

    # A worker restart is counted.
    before = after
    old = srv.worker_pids()[0]
    os.kill(old, signal.SIGKILL)
    check(wait_new_worker(srv, old) is not None, "the worker was restarted")
    after, _, _ = scrape(srv)
    moved("da3_worker_restarts", "da3_worker_restarts_total", by=1)
    st, js = srv.http("GET", "/readyz")
    check(st == 200, f"/readyz 200 again after the restart: {st} {js}")
finally:
    srv.cleanup()

finish("test_metrics")
