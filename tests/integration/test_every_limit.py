"""Connections opened until every limit is hit, one after another, on ONE server with small limits:
each refusal has its documented status or message, and a bystander client (its own address, its
own session, a socket open throughout) is unaffected after each one.

Each limit is only triggered here, to show that they hold together on one server; the limits'
details are tested where they live: --max-sessions in test_http_api.py (503, no eviction),
--max-websockets in test_hostile_ws.py (503 before the upgrade, room again after a close),
--max-ws-per-client / --max-sessions-per-client / --client-msg-rate / --max-session-mb in
test_limits.py, --max-images in test_python_client.py, --max-message-mb in test_ws_protocol.py
(1009, images kept) and test_hostile_ws.py (gigabyte headers), silent and non-reading peers in
test_hostile_ws.py. What no other test does is checked in full here: the per-image pixel limit
on the real server, a full job queue ("server busy ... retry in N s": 256 jobs, made possible by a
worker stopped at a fault point) and a WebSocket frame sent half and then left silent.

Addresses: --trust-proxy, so each X-Real-IP is a client address of its own."""
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import struct
import tempfile
import time

import websockets

from harness import Server, check, finish, make_image, recv_json, run, send_image

MAX_SESSIONS = 270
tmp = tempfile.mkdtemp(prefix="da3-limits-")
marker = os.path.join(tmp, "once")
open(marker, "w").close()  # the fault point is disarmed until the queue is filled
env = dict(os.environ, DA3_FAULT="worker_glb_write", DA3_FAULT_ONCE=marker)
srv = Server("--max-sessions", str(MAX_SESSIONS), "--max-websockets", "12", "--max-ws-per-client", "4",
             "--max-sessions-per-client", "3", "--client-msg-rate", "20", "--max-images", "5",
             "--max-session-mb", "1", "--max-message-mb", "1", "--ws-ping-interval", "1", "--request-timeout", "2",
             "--trust-proxy", env=env)
T0 = time.time()
# Made before any socket opens: the server pings every second (--ws-ping-interval 1) and drops a
# socket silent for 2 s, and under ASan each make_jpeg run blocks this event loop for ~1.6 s.
BIG = [make_image(560, 420, seed=200 + i, quality=100) for i in range(5)]
for seed in [*range(900, 916), *range(300, 307), 1, 2]:  # the small ones too (make_image caches)
    make_image(70, 52, seed=seed)
make_image(32, 24, seed=1)


def ip(n):
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def create(addr, query="process_res=70&num_max_points=500"):
    return srv.http("POST", "/ws/session/create?" + query, headers={"X-Real-IP": addr})


async def acreate(addr):
    """create() off the event loop: the bystander's socket must keep answering the server's pings."""
    return await asyncio.to_thread(create, addr)


async def adelete(sid, addr):
    return await asyncio.to_thread(srv.http, "DELETE", f"/ws/session/{sid}", None, {"X-Real-IP": addr})


async def ws_open(addr, path="/ws/reconstruct"):
    return await websockets.connect(srv.ws_base + path, max_size=None, ping_interval=None, open_timeout=10,
                                    extra_headers={"X-Real-IP": addr})


async def attach(addr, sid):
    ws = await ws_open(addr, f"/ws/reconstruct/{sid}")
    first = await recv_json(ws, 10)
    return ws, first


async def refused_status(addr, path="/ws/reconstruct"):
    try:
        ws = await ws_open(addr, path)
        await ws.close()
        return 101
    except websockets.exceptions.InvalidStatusCode as e:
        return e.status_code


class Bystander:
    """A client well under every limit: after each limit is hit it must still be served."""

    async def start(self):
        self.addr = "10.250.0.1"
        st, js = create(self.addr)
        self.sid = js["session_id"]
        self.ws, _ = await attach(self.addr, self.sid)
        self.images = 0

    async def ok(self, after, upload=False):
        t = time.time()
        await self.ws.send(json.dumps({"type": "ping"}))
        m = await recv_json(self.ws, 10)
        good = m.get("type") == "pong" and time.time() - t < 2
        if good and upload:
            a = await send_image(self.ws, make_image(70, 52, seed=900 + self.images), binary=True)
            good = a.get("type") == "ack" and a.get("image_count") == self.images + 1
            self.images += good
        check(good, f"the bystander is served after {after}: {m}")


def section(name):
    print(f"  [{time.time() - T0:5.1f} s] {name}", flush=True)


async def sockets_and_sessions(by):
    section("--max-ws-per-client 4, --max-websockets 12")
    held = [await ws_open("10.1.0.1") for _ in range(4)]
    check(await refused_status("10.1.0.1") == 429, "the 5th WebSocket from one address gets 429")
    await by.ok("--max-ws-per-client")
    held += [await ws_open("10.1.0.2") for _ in range(4)] + [await ws_open("10.1.0.3") for _ in range(3)]
    check(await refused_status("10.1.0.4") == 503, "the 13th WebSocket (12 + the bystander's) gets 503")
    await by.ok("--max-websockets")
    for w in held:
        await w.close()
    await asyncio.sleep(0.2)
    check(await refused_status("10.1.0.4") == 101, "room again once they are closed")

    section("--max-sessions-per-client 3")
    got = [create("10.1.1.1") for _ in range(4)]
    check([st for st, _ in got] == [200, 200, 200, 429] and "Too many sessions from your address" in str(got[3][1]),
          f"the 4th session from one address gets 429: {[st for st, _ in got]} {got[3][1]}")
    await by.ok("--max-sessions-per-client")
    for st, js in got[:3]:
        srv.http("DELETE", f"/ws/session/{js['session_id']}", headers={"X-Real-IP": "10.1.1.1"})


async def messages_and_images(by):
    section("--client-msg-rate 20 (bursts of 40)")
    ws = await ws_open("10.1.2.1")
    for _ in range(80):
        await ws.send(json.dumps({"type": "ping"}))
    replies = [await recv_json(ws, 10) for _ in range(80)]
    limited = [m for m in replies if m["type"] == "error" and m["message"].startswith("Too many messages")]
    check(limited and len(limited) + sum(m["type"] == "pong" for m in replies) == 80,
          f"over-rate messages refused in-band: {len(limited)} of 80")
    await ws.close()
    await by.ok("--client-msg-rate")

    section("--max-images 5, pixels per image")
    st, js = create("10.1.3.1")
    ws, _ = await attach("10.1.3.1", js["session_id"])
    for i in range(5):
        await send_image(ws, make_image(70, 52, seed=300 + i), binary=True)
    m = await send_image(ws, make_image(70, 52, seed=306), binary=True)
    check(m.get("type") == "error" and "maximum image limit (5)" in m.get("message", ""), f"6th image: {m}")
    await by.ok("--max-images")
    # A small JPEG whose frame header claims 9000x9000: refused from the header.
    jpg = bytearray(make_image(32, 24, seed=1))
    sof = jpg.index(b"\xff\xc0")
    jpg[sof + 5:sof + 9] = struct.pack(">HH", 9000, 9000)
    other = create("10.1.3.2")[1]["session_id"]
    ws2, _ = await attach("10.1.3.2", other)
    m = await send_image(ws2, bytes(jpg), binary=True)
    check(m.get("type") == "error" and "image too large: 9000x9000" in m.get("message", ""), f"9000x9000: {m}")
    st, info = srv.http("GET", f"/ws/session/{other}")
    check(info.get("image_count") == 0, f"nothing stored: {info}")
    await by.ok("the pixel limit")

    section("--max-session-mb 1")
    big = BIG
    fit = 0
    while sum(map(len, big[:fit + 1])) <= 1 << 20:
        fit += 1
    for i in range(fit):
        a = await send_image(ws2, big[i], binary=True)
        check(a.get("type") == "ack", f"upload {i} within 1 MB: {a}")
    m = await send_image(ws2, big[fit], binary=True)
    check(m.get("type") == "error" and "Session storage limit reached" in m.get("message", "")
          and "(--max-session-mb)" in m["message"], f"past 1 MB: {m}")
    await by.ok("--max-session-mb", upload=True)

    section("--max-message-mb 1")
    await ws2.send(b"\xff" * (1100 * 1024))
    e = await recv_json(ws2, 10)
    code = None
    try:
        await asyncio.wait_for(ws2.recv(), 10)
    except websockets.ConnectionClosed as ex:
        code = ex.code
    check(e.get("type") == "error" and "Message too large" in e.get("message", "") and code == 1009,
          f"a 1.1 MB message: {e}, close {code}")
    st, info = srv.http("GET", f"/ws/session/{other}")
    check(info.get("image_count") == fit, f"the session's images are kept: {info}")
    await by.ok("--max-message-mb")
    await ws.close()


def half_frame():
    """An upgrade, then a frame header announcing 1000 bytes with 100 of them, then silence."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(f"GET /ws/reconstruct HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nX-Real-IP: 10.1.4.1\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    check(head.startswith(b"HTTP/1.1 101"), f"upgraded: {head[:40]!r}")
    s.sendall(bytes([0x82, 0x80 | 126]) + struct.pack("!H", 1000) + os.urandom(4) + b"x" * 100)
    return s


def wait_closed(s, limit):
    t = time.time()
    s.settimeout(0.2)
    while time.time() - t < limit:
        try:
            if not s.recv(65536):
                return time.time() - t
        except socket.timeout:
            continue
        except OSError:
            return time.time() - t
    return None


async def silent_half_frame(by):
    section("a frame sent half, then silence (--ws-ping-interval 1, --request-timeout 2)")
    s = half_frame()
    t = time.time()
    await by.ok("a half-sent frame, while it is pending")
    loop = asyncio.get_running_loop()
    dt = await loop.run_in_executor(None, wait_closed, s, 8)
    s.close()
    check(dt is not None and time.time() - t < 4.5, f"the silent half-frame peer is dropped within ~3 s ({dt})")
    section(f"  dropped after {time.time() - t:.1f} s")
    await by.ok("the half-frame peer was dropped")


async def fill_queue(by):
    section("the job queue: 256 jobs (a worker stopped at a fault point), then 'server busy'")
    os.unlink(marker)  # armed: the first job stops its worker with the job claimed
    st, js = create("10.3.0.1")
    first = js["session_id"]
    ws, _ = await attach("10.3.0.1", first)
    await send_image(ws, make_image(70, 52, seed=1), binary=True)
    await ws.send(json.dumps({"type": "generate"}))
    deadline = time.time() + 30
    while "fault point worker_glb_write reached" not in srv.log_text() and time.time() < deadline:
        await asyncio.sleep(0.05)
    await ws.close()
    worker = srv.worker_pids()[0]
    filler = [first]
    img = make_image(70, 52, seed=2)

    async def one(n, final=False):
        """A session of its own address with one image and a generate: (id, the first answer, or
        with final the first that is not the progress sent before the job is submitted)."""
        addr = ip((4 << 16) + n)
        st, js = await acreate(addr)
        if st != 200:
            return st, None
        sid = js["session_id"]
        w, _ = await attach(addr, sid)
        await send_image(w, img, binary=True)
        await w.send(json.dumps({"type": "generate"}))
        m = await recv_json(w, 30)
        while final and m.get("type") == "progress":
            m = await recv_json(w, 30)
        await w.close()
        return sid, m

    n = 0
    for b in range(0, 255, 5):
        out = await asyncio.gather(*(one(n + k) for k in range(5)))
        n += 5
        filler += [sid for sid, _ in out if isinstance(sid, str)]
        bad = [m for _, m in out if not m or m.get("type") != "progress"]
        if bad:
            check(False, f"a job under the queue's capacity is queued: {bad[:2]}")
            break
    q = srv.http("GET", "/status")[1]["queue"]
    check(q["queued"] + q["running"] == q["capacity"] == 256, f"the job table is full: {q}")
    sid, m = await one(n, final=True)
    n += 1
    filler.append(sid)
    msg = m.get("message", "") if m else ""
    check(m and m.get("type") == "error" and "server busy: the job queue is full (256 jobs waiting or running); retry in"
          in msg, f"the 257th job: {m}")
    section(f"  the 257th: {msg}")
    st, info = srv.http("GET", f"/ws/session/{sid}")
    check(st == 200 and info.get("image_count") == 1 and info.get("status") == "active",
          f"the refused session is as it was: {info}")
    await by.ok("the full job queue", upload=True)

    section(f"--max-sessions {MAX_SESSIONS}")
    total = srv.http("GET", "/status")[1]["sessions"]["total"]
    for k in range(MAX_SESSIONS - total):
        st, js = await acreate(ip((5 << 16) + k))
        check(st == 200, f"session {total + k + 1} of {MAX_SESSIONS}: {st}")
        filler.append(js.get("session_id"))
    st, js = create(ip(6 << 16))
    check(st == 503 and "Maximum number of sessions" in js.get("detail", ""), f"one more session: {st} {js}")
    await by.ok("--max-sessions")

    # Everything given back: the queued jobs are cancelled with their sessions, the worker runs on.
    for k, sid in enumerate(filler):
        if sid:
            await adelete(sid, ip((7 << 16) + k))
    os.kill(worker, signal.SIGCONT)
    q = srv.http("GET", "/status")[1]["queue"]
    check(q["queued"] == 0, f"the queue is empty again: {q}")
    await by.ws.send(json.dumps({"type": "generate"}))
    while True:
        m = await recv_json(by.ws, 120)
        if m["type"] != "progress":
            break
    check(m.get("type") == "complete" and m.get("image_count") == by.images, f"the bystander's generate: {str(m)[:200]}")


async def main():
    by = Bystander()
    await by.start()
    await by.ok("nothing", upload=True)
    await sockets_and_sessions(by)
    await messages_and_images(by)
    await silent_half_frame(by)
    await fill_queue(by)
    await by.ws.close()


try:
    run(main())
    section("done")
finally:
    srv.cleanup()
    shutil.rmtree(tmp, ignore_errors=True)
finish("test_every_limit")
