#!/usr/bin/python3
"""What TLS in the front (--tls-cert) costs, printed (nothing asserted): two servers from one build,
plain and TLS (a P-256 certificate made here with openssl), measured the same way.
  - handshakes: sequential connect + TLS handshake + close, median ms, and connections per second
    with 8 client threads (the client's own handshake CPU is on this machine too);
  - idle connections: the front's RSS growth per open connection (TLS: handshake done, no request);
  - uploads: one WebSocket sending 1600x1200 JPEGs as binary frames, acks per second and MB/s.
Usage: bench_tls.py BUILD_DIR"""
import asyncio
import os
import re
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import websockets

BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
tmp = tempfile.mkdtemp(prefix="da3-bench-tls-")
cert, key = os.path.join(tmp, "c.crt"), os.path.join(tmp, "c.key")
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                key, "-out", cert, "-days", "1", "-subj", "/CN=bench", "-addext", "subjectAltName=IP:127.0.0.1"],
               check=True, capture_output=True)
ctx = ssl.create_default_context(cafile=cert)


def start(tls):
    log = open(os.path.join(tmp, f"server-{int(tls)}.log"), "w+")
    args = [os.path.join(BUILD, "da3-server"), "--port", "0", "--model", "demo", "--workers", "1", "--worker-threads", "1",
            "--data-dir", os.path.join(tmp, f"data-{int(tls)}"), "--web-dir", os.path.join(REPO, "web"),
            "--request-timeout", "120", "--client-http-rate", "0", "--client-msg-rate", "0", "--max-ws-per-client", "0",
            "--max-images", "1000", "--log-level", "info"]
    if tls:
        args += ["--tls-cert", cert, "--tls-key", key]
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(600):
        log.seek(0)
        m = re.findall(r"listening on https?://127\.0\.0\.1:(\d+)/", log.read())
        if m:
            return p, int(m[-1])
        time.sleep(0.1)
    raise RuntimeError("server did not start")


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid):
    """User + system CPU seconds of every thread of pid so far."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def one_connection(port, tls):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    if tls:
        s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
    return s


def handshakes(port, tls, n=300):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        one_connection(port, tls).close()
        times.append((time.perf_counter() - t0) * 1e3)
    done = [0]
    stop = time.monotonic() + 3.0

    def worker():
        while time.monotonic() < stop:
            one_connection(port, tls).close()
            done[0] += 1
    threads = [threading.Thread(target=worker) for _ in range(8)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statistics.median(times), done[0] / (time.monotonic() - t0)


def idle_cost(pid, port, tls, n=400):
    before = rss_kb(pid)
    socks = [one_connection(port, tls) for _ in range(n)]
    time.sleep(0.5)
    after = rss_kb(pid)
    for s in socks:
        s.close()
    return (after - before) / n


async def uploads(pid, port, tls, img, n=40):
    scheme = "https" if tls else "http"
    import json
    import urllib.request
    req = urllib.request.Request(f"{scheme}://127.0.0.1:{port}/ws/session/create?process_res=70&max_images=1000", method="POST")
    with urllib.request.urlopen(req, context=ctx if tls else None) as r:
        sid = json.loads(r.read())["session_id"]
    ws = await websockets.connect(f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/ws/reconstruct/{sid}",
                                  ssl=ctx if tls else None, max_size=None, ping_interval=None)
    await ws.recv()
    await ws.send(img)  # warm-up
    await ws.recv()
    t0, c0 = time.perf_counter(), cpu_s(pid)
    for _ in range(n):
        await ws.send(img)
        await ws.recv()
    dt, cpu = time.perf_counter() - t0, cpu_s(pid) - c0
    await ws.close()
    return n / dt, n * len(img) / dt / 1e6, cpu / n * 1e3


img_path = os.path.join(tmp, "big.jpg")
subprocess.run([os.path.join(BUILD, "tools", "make_jpeg"), img_path, "1600", "1200", "5", "95"], check=True)
img = open(img_path, "rb").read()
rows = {}
for tls in (False, True):
    p, port = start(tls)
    try:
        time.sleep(1.0)
        hs_ms, hs_rate = handshakes(port, tls)
        kb = idle_cost(p.pid, port, tls)
        acks, mbs, cpu_ms = asyncio.run(uploads(p.pid, port, tls, img))
        rows[tls] = (hs_ms, hs_rate, kb, acks, mbs, cpu_ms)
    finally:
        p.terminate()
        p.wait()
print(f"{'':8} {'connect ms (median)':>20} {'connects/s (8 thr)':>19} {'idle KB/conn':>13} "
      f"{'acks/s':>8} {'upload MB/s':>12} {'front CPU ms/upload':>20}   ({len(img) / 1e6:.2f} MB JPEG, 1600x1200)")
for tls, name in ((False, "plain"), (True, "TLS")):
    hs_ms, hs_rate, kb, acks, mbs, cpu_ms = rows[tls]
    print(f"{name:8} {hs_ms:20.2f} {hs_rate:19.0f} {kb:13.1f} {acks:8.1f} {mbs:12.1f} {cpu_ms:20.1f}")
print(f"TLS / plain: connect time x{rows[True][0] / rows[False][0]:.1f}, upload rate x{rows[True][3] / rows[False][3]:.2f}, "
      f"front CPU per upload +{rows[True][5] - rows[False][5]:.1f} ms"
      f"; TLS {ssl.OPENSSL_VERSION}, ECDSA P-256, TLS 1.3")
