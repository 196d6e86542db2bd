"""TLS on the public socket (--tls-cert/--tls-key) with a certificate this test makes (openssl):
https for the API and the page, wss for both protocols with a large upload and a >1 MB result,
the Python client over https/wss, keys over TLS, clients that speak plain HTTP, garbage, half a
handshake or nothing at all to the TLS port (closed, counted, no harm to others), many TLS
sockets at once, SIGHUP reloading the certificate (a broken one keeps the old), and refused
start-ups (a key without its certificate, a key that does not match)."""
import asyncio
import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import websockets

from harness import (REPO, SERVER, Server, check, finish, generate, glb_info, make_image, recv_json, run,
                     send_image, validate_glb)

tmp = tempfile.mkdtemp(prefix="da3-tls-")


def make_cert(name, cn):
    """A self-signed P-256 certificate for 127.0.0.1; returns (cert path, key path)."""
    cert, key = os.path.join(tmp, name + ".crt"), os.path.join(tmp, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={cn}",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


CERT, KEY = make_cert("a", "da3-test-a")
CERT_B, KEY_B = make_cert("b", "da3-test-b")
# The server reads these paths; SIGHUP reloads whatever they hold then.
LIVE_CERT, LIVE_KEY = os.path.join(tmp, "live.crt"), os.path.join(tmp, "live.key")
for src, dst in ((CERT, LIVE_CERT), (KEY, LIVE_KEY)):
    with open(src, "rb") as f, open(dst, "wb") as g:
        g.write(f.read())
# Both certificates verify: the test checks which one the server presents, not trust.
BOTH_CA = os.path.join(tmp, "both.pem")
with open(BOTH_CA, "w") as f:
    f.write(open(CERT).read() + open(CERT_B).read())

srv = Server("--tls-cert", LIVE_CERT, "--tls-key", LIVE_KEY, "--request-timeout", "2", tls_ca=BOTH_CA)


def metric(name):
    st, text = srv.http("GET", "/metrics")
    text = text.decode() if isinstance(text, bytes) else str(text)
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def presented_cn():
    """The CN of the certificate the server presents to a new connection."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        with srv.ssl_ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            subj = dict(x[0] for x in t.getpeercert()["subject"])
            return subj.get("commonName")


def raw_peer(data, wait_close=8.0):
    """Sends raw bytes to the TLS port; returns (what came back, seconds until the server closed,
    or None if it kept the connection open for wait_close)."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=wait_close) as s:
        t0 = time.monotonic()
        if data:
            s.sendall(data)
        got = b""
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    return got, time.monotonic() - t0
                got += b
        except (socket.timeout, TimeoutError):
            return got, None
        except ConnectionResetError:
            return got, time.monotonic() - t0


async def https_and_wss():
    st, info = srv.http("GET", "/status")
    check(st == 200 and info["workers"]["ready"] >= 1, f"GET /status over https: {st}")
    st, page = srv.http("GET", "/")
    check(st == 200 and b"<html" in page.lower(), f"the page over https: {st}")
    # v1 over wss: a large binary upload (its payload read straight into the message over TLS),
    # base64 uploads, and a result of more than 1 MB written through partial TLS writes.
    sid = srv.create("process_res=210&num_max_points=100000")
    ws = await websockets.connect(f"{srv.ws_base}/ws/reconstruct/{sid}", ssl=srv.ssl_ctx, max_size=None,
                                  ping_interval=None, open_timeout=30)
    first = await recv_json(ws, 30)
    check(first.get("type") == "connected", f"wss connected: {first}")
    big = make_image(1600, 1200, seed=3, quality=98)
    a = await send_image(ws, big, binary=True)
    check(a.get("type") == "ack" and a.get("image_count") == 1, f"{len(big)} B binary upload over TLS: {a}")
    for seed in (4, 5):
        a = await send_image(ws, make_image(640, 480, seed=seed))
        check(a.get("type") == "ack", f"base64 upload over TLS: {a}")
    progress, res = await generate(ws)
    check(res.get("type") == "complete" and res.get("image_count") == 3, f"generate over wss: {str(res)[:200]}")
    glb = base64.b64decode(res.get("glb_base64", ""))
    _, points, _ = glb_info(glb)
    check(len(res.get("glb_base64", "")) > 1_000_000 and points > 30000, f"a >1 MB result over TLS: {len(res.get('glb_base64', ''))} B, {points} points")
    check(validate_glb(glb, "tls"), "the GLB received over TLS validates")
    await ws.close()
    # v2 over wss
    ws = await websockets.connect(f"{srv.ws_base}/ws/reconstruct", ssl=srv.ssl_ctx, ping_interval=None, open_timeout=30)
    await ws.send(json.dumps({"type": "init", "process_res": 70}))
    m = await recv_json(ws, 30)
    check(m.get("type") == "session_created", f"v2 init over wss: {m}")
    await ws.close()
    # a plain ws:// client on the TLS port is refused by the handshake
    try:
        await websockets.connect(f"ws://127.0.0.1:{srv.port}/ws/reconstruct", open_timeout=10)
        check(False, "a plain ws:// client on the TLS port gets no WebSocket")
    except Exception as e:
        check(True, str(e))


def python_client():
    img = os.path.join(tmp, "view.jpg")
    with open(img, "wb") as f:
        f.write(make_image(140, 105, seed=7))
    out = os.path.join(tmp, "client.glb")
    env = dict(os.environ, SSL_CERT_FILE=BOTH_CA, PYTHONPATH=os.path.join(REPO, "clients", "python"))
    r = subprocess.run([sys.executable, os.path.join(REPO, "clients", "python", "da3-client"), "--base-url",
                        f"https://127.0.0.1:{srv.port}", "--images", img, img, "--process-res", "70", "--output", out,
                        "--quiet"], capture_output=True, text=True, timeout=300, env=env)
    check(r.returncode == 0 and os.path.getsize(out) > 1000, f"da3-client over https/wss: {r.returncode} {r.stderr[-300:]}")
    r = subprocess.run([sys.executable, os.path.join(REPO, "clients", "python", "da3-client"), "--base-url",
                        f"https://127.0.0.1:{srv.port}", "--images", img, "--quiet"],
                       capture_output=True, text=True, timeout=120, env=dict(env, SSL_CERT_FILE=os.devnull))
    check(r.returncode == 3 and "certificate" in r.stderr.lower(), f"an untrusted certificate is a connection error: {r.returncode} {r.stderr[-300:]}")


async def hostile_peers():
    failed0 = metric("da3_tls_handshake_failures_total") or 0
    # A working socket kept open meanwhile: none of the peers below may disturb it.
    sid = srv.create("process_res=70")
    ws = await websockets.connect(f"{srv.ws_base}/ws/reconstruct/{sid}", ssl=srv.ssl_ctx, ping_interval=None)
    await recv_json(ws, 30)
    got, dt = raw_peer(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    check(dt is not None and b"HTTP/1.1 200" not in got, f"plain HTTP on the TLS port: closed after {dt} s, {got[:60]!r}")
    got, dt = raw_peer(os.urandom(3000))
    check(dt is not None and dt < 3, f"garbage on the TLS port: closed after {dt} s")
    got, dt = raw_peer(b"")
    check(dt is not None and 1.5 < dt < 6, f"a silent TCP peer is closed after --request-timeout: {dt} s")
    # Half a ClientHello: the record header promises 512 bytes, 40 come, then silence.
    got, dt = raw_peer(bytes([0x16, 0x03, 0x01, 0x02, 0x00]) + b"\x01" + os.urandom(39))
    check(dt is not None and 1.5 < dt < 6, f"half a handshake then silence: closed after {dt} s")
    # A finished handshake that sends nothing more: the request-head deadline applies.
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=8) as s:
        with srv.ssl_ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            try:
                closed = t.recv(100) == b""
            except (ssl.SSLError, ConnectionResetError, OSError):
                closed = True
    check(closed and time.monotonic() - t0 < 6, f"TLS up, no request: closed after {time.monotonic() - t0:.1f} s")
    await ws.send(json.dumps({"type": "ping"}))
    m = await recv_json(ws, 10)
    check(m.get("type") == "pong", f"the other client is unaffected: {m}")
    await ws.close()
    failed = (metric("da3_tls_handshake_failures_total") or 0) - failed0
    check(failed >= 4, f"failed handshakes are counted: {failed}")
    check((metric("da3_tls_handshakes_total") or 0) >= 5, "completed handshakes are counted")


def ws_frame(opcode, payload):
    """A masked client frame."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_frames(t, want):
    """Reads server frames from TLS socket t until `want` text frames came; returns their texts."""
    buf, texts = b"", []
    while len(texts) < want:
        b = t.recv(65536)
        if not b:
            break
        buf += b
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            off = 2
            if n == 126:
                n, off = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                n, off = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < off + n:
                break
            op, payload, buf = buf[0] & 0x0F, buf[off:off + n], buf[off + n:]
            if op == 1:
                texts.append(payload.decode())
            elif op == 10:
                texts.append("PONG")
    return texts


def frames_across_records():
    """Frame boundaries inside TLS records: a large image, a ping and a text message written in one
    go, so a frame ends mid-record and the rest waits decrypted inside OpenSSL (no epoll event
    announces it): every frame must still be answered."""
    sid = srv.create("process_res=70")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        with srv.ssl_ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            key = base64.b64encode(os.urandom(16)).decode()
            t.sendall((f"GET /ws/reconstruct/{sid} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                       f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += t.recv(1)
            check(head.startswith(b"HTTP/1.1 101"), f"raw TLS upgrade: {head[:40]!r}")
            first = read_frames(t, 1)
            img = make_image(900, 700, seed=11, quality=97)
            batch = (ws_frame(2, img) + ws_frame(9, b"x") + ws_frame(1, b'{"type":"ping"}') + ws_frame(2, img) +
                     ws_frame(1, b'{"type":"ping"}'))
            t.sendall(batch)
            texts = read_frames(t, 5)
    kinds = [("PONG" if x == "PONG" else json.loads(x).get("type")) for x in texts]
    check(len(first) == 1 and kinds == ["ack", "PONG", "pong", "ack", "pong"],
          f"{len(img)} B image + ping + text + image + text in one TLS write: {kinds}")


async def many_sockets(n=24):
    async def one(i):
        ws = await websockets.connect(f"{srv.ws_base}/ws/reconstruct", ssl=srv.ssl_ctx, ping_interval=None, open_timeout=60)
        for _ in range(5):
            await ws.send(json.dumps({"type": "ping"}))
            m = await recv_json(ws, 30)
            if m.get("type") != "pong":
                return False
        await ws.close()
        return True
    oks = await asyncio.gather(*(one(i) for i in range(n)))
    check(all(oks), f"{n} TLS WebSockets at once: {sum(oks)} ok")


async def reload():
    check(presented_cn() == "da3-test-a", "certificate A before the reload")
    ws = await websockets.connect(f"{srv.ws_base}/ws/reconstruct", ssl=srv.ssl_ctx, ping_interval=None)
    for src, dst in ((CERT_B, LIVE_CERT), (KEY_B, LIVE_KEY)):
        with open(src, "rb") as f, open(dst, "wb") as g:
            g.write(f.read())
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while time.time() < deadline and "TLS certificate reloaded" not in srv.log_text():
        time.sleep(0.1)
    check(presented_cn() == "da3-test-b", "certificate B for new connections after SIGHUP")
    await ws.send(json.dumps({"type": "ping"}))
    check((await recv_json(ws, 10)).get("type") == "pong", "a socket opened before the reload keeps working")
    await ws.close()
    with open(LIVE_CERT, "w") as g:
        g.write("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while time.time() < deadline and "TLS certificate not reloaded" not in srv.log_text():
        time.sleep(0.1)
    check("TLS certificate not reloaded" in srv.log_text(), "a broken certificate file is reported")
    check(presented_cn() == "da3-test-b", "and the previous certificate stays in use")


def handshake_flood():
    """With TLS each new connection is charged to its address's --client-http-rate bucket before
    the handshake: a flood of connections from one address is closed at accept (no handshake
    CPU spent), counted, and the address is served again once its bucket refills."""
    lim = Server("--tls-cert", CERT, "--tls-key", KEY, "--client-http-rate", "5", tls_ca=BOTH_CA)
    try:
        time.sleep(2.2)  # the readiness polls spent part of the burst
        ok = refused = 0
        for _ in range(40):
            try:
                with socket.create_connection(("127.0.0.1", lim.port), timeout=10) as s:
                    with lim.ssl_ctx.wrap_socket(s, server_hostname="127.0.0.1"):
                        ok += 1
            except (ssl.SSLError, ConnectionResetError, OSError):
                refused += 1
        check(ok >= 8 and refused >= 20, f"40 TLS connections at once at 5/s (burst 10): {ok} handshakes, {refused} refused")
        time.sleep(2.2)
        st, text = lim.http("GET", "/metrics")
        text = text.decode() if isinstance(text, bytes) else str(text)
        n = next((float(l.split()[1]) for l in text.splitlines() if l.startswith("da3_tls_connections_refused_total ")), 0)
        check(st == 200 and n >= refused, f"served again after the refill, refusals counted: {st}, {n}")
    finally:
        lim.cleanup()


def refused_startups():
    r = subprocess.run([SERVER, "--port", "0", "--tls-key", KEY], capture_output=True, text=True, timeout=30)
    check(r.returncode == 2 and "go together" in r.stderr, f"--tls-key alone: {r.returncode} {r.stderr[-200:]}")
    r = subprocess.run([SERVER, "--port", "0", "--tls-cert", CERT, "--tls-key", KEY_B,
                        "--data-dir", os.path.join(tmp, "d")], capture_output=True, text=True, timeout=30)
    check(r.returncode == 2 and "does not belong" in (r.stdout + r.stderr), f"mismatched key: {r.returncode} {(r.stdout + r.stderr)[-300:]}")
    r = subprocess.run([SERVER, "--port", "0", "--tls-cert", os.path.join(tmp, "missing.crt"), "--tls-key", KEY,
                        "--data-dir", os.path.join(tmp, "d")], capture_output=True, text=True, timeout=30)
    check(r.returncode == 2 and "--tls-cert" in (r.stdout + r.stderr), f"missing certificate: {r.returncode}")


try:
    run(https_and_wss())
    python_client()
    frames_across_records()
    run(hostile_peers())
    run(many_sockets())
    run(reload())
    handshake_flood()
    refused_startups()
finally:
    srv.cleanup()
finish("test_tls")
