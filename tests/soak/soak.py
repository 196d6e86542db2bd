#!/usr/bin/env python3
"""soak: minutes of mixed load on a real da3-server, watching for anything that grows.

`make soak` (scripts/soak.sh) runs this; docs/load-testing.md ("make soak") explains every
column and verdict. Not part of `make test` / CI: it takes minutes and wants a quiet machine.

It starts its own da3-server (demo model, small process_res, its own temporary --data-dir,
per-client limits off as in bench-load, short session expiry so abandoned sessions are reaped
within the run), then for SOAK_SECONDS runs concurrent clients of these kinds:

  full       create (v1 HTTP or v2 init), upload 1-3 images (binary or base64), generate (or
             auto_generate_after), receive and check the GLB, close, DELETE; again and again
  reconnect  upload one image per connection over several connections to one session, one of
             them dropped without a close frame, one taken over by a second socket; generate on
             the last, DELETE
  idle       hold a socket for 10-40 s pinging every 3 s (v1 and v2), close, DELETE
  abandon    walk away: half a binary frame then a dropped TCP connection, a generate then a
             dropped connection, a session created and never connected; some deleted, the rest
             left for the server's expiry
  noread     upload, then a generate every second while never reading (a 4 KB receive buffer)
             until the server drops the connection for not reading, or the client gives up;
             some deleted, some expired
  da3-load   every SOAK_DA3LOAD_EVERY s a short da3-load lifecycle and v2 upload+generate run

Every SOAK_INTERVAL s it prints one row (server process figures from /proc, counters from
/metrics, the client side's error count, the server log's warnings). After the load it waits for
the server to go idle (expired sessions reaped), then prints per series the first-third and
last-third medians of the load phase (after SOAK_WARMUP), the slope, the idle end value against the baseline, and a
verdict; it exits 1 when a series grows or does not come back, when well-behaved clients saw
errors, or when the log shows warnings no client of the soak explains.

Knobs (environment): see KNOBS below; BUILD is where the binaries are (default build).
"""
import asyncio
import base64
import collections
import concurrent.futures
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import websockets

# name: (default, meaning); read from the environment as SOAK_<NAME>.
KNOBS = {
    "SECONDS": (600, "load duration in seconds"),
    "INTERVAL": (10, "seconds between rows"),
    "WARMUP": (60, "first seconds of load left out of the verdicts (their rows say 'warm')"),
    "WORKERS": (2, "inference worker processes"),
    "PROCESS_RES": (140, "sessions' process_res (small: fast jobs)"),
    "FULL": (3, "full-cycle clients"),
    "RECONNECT": (1, "reconnecting clients"),
    "IDLE": (20, "clients holding a pinging socket"),
    "ABANDON": (1, "clients that walk away mid-upload / mid-generate / before connecting"),
    "NOREAD": (1, "clients that stop reading after generate"),
    "DA3LOAD_EVERY": (60, "seconds between da3-load bursts (0: none)"),
    "SESSION_TIMEOUT": (20, "server --session-timeout: abandoned sessions expire after it"),
    "CLEANUP_INTERVAL": (5, "server --cleanup-interval"),
    "SEND_TIMEOUT": (10, "server --send-timeout: a client reading nothing is dropped after it"),
    "THINK": (0.5, "most seconds a client waits between cycles"),
    "IMAGE": ("320x240", "uploaded JPEG size (4 seeds, one PNG)"),
    "RSS_TOL": (10, "RSS growth tolerated, percent (last-third vs first-third median)"),
    "FD_TOL": (5, "fds growth tolerated (last third vs first, and end vs baseline)"),
    "MAX_ERRORS": (0, "errors well-behaved clients may see before the soak fails"),
    "SEED": (1, "random seed of the clients' choices"),
    "KEEP": (0, "1: keep the temporary folder (server log, data dir)"),
}


def knob(name):
    default = KNOBS[name][0]
    v = os.environ.get("SOAK_" + name)
    if v is None or v == "":
        return default
    return type(default)(float(v)) if isinstance(default, (int, float)) else v


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# The server's per-client-address limits, all turned off (0) when its --help lists them.
PER_CLIENT_LIMITS = ("--max-sessions-per-client", "--max-ws-per-client", "--client-msg-rate",
                     "--client-byte-rate-mb", "--client-http-rate")
# Server log lines the soak's own hostile clients cause: a result for an abandoned session (no
# socket) or a non-reading one is not delivered; a connection that reads nothing is dropped. (A
# job whose session a client DELETEs while it runs is logged at info, not counted here.)
EXPECTED_LOG = [re.compile(p) for p in (r"NOT delivered", r"dropped, it read nothing")]


class Soak:
    """Shared state: the server, the clients' counters, the samples."""

    def __init__(self):
        self.port = 0
        self.front = None  # subprocess.Popen of da3-server
        self.tmp = ""
        self.data = ""
        self.log_path = ""
        self.images = []  # (bytes, is_png)
        self.stop_at = 0.0
        self.t0 = 0.0
        self.phase = "start"
        self.errors = collections.Counter()  # kind -> count (well-behaved clients' errors)
        self.events = collections.Counter()  # what the clients did (cycles, abandons...)
        self.error_details = []
        self.samples = []
        self.log_off = 0
        self.log_kinds = collections.Counter()  # normalised warn/error line -> count
        self.log_expected = set()  # the kinds whose whole line the soak's hostile clients explain
        self.log_warn = 0
        self.log_err = 0
        self.rng = random.Random(knob("SEED"))
        self.res = knob("PROCESS_RES")
        self.da3load_out = []
        self.died = ""  # set when da3-server exits during the run

    # ---- errors: one kind per failure, no ids so kinds add up ----
    def err(self, actor, what, sid=None):
        """Counts one client error under its kind; keeps the first ones in full (time, session)
        for the summary, to be found in the server log."""
        kind = UUID_RE.sub("<id>", str(what))[:130]
        self.errors[f"{actor}: {kind}"] += 1
        if len(self.error_details) < 10:
            self.error_details.append(f"t={self.now():.1f} s (wall {time.strftime('%H:%M:%S')}) {actor}"
                                      f"{' session ' + sid if sid else ''}: {what}")

    def now(self):
        return time.monotonic() - self.t0

    def running(self):
        return time.monotonic() < self.stop_at


S = Soak()


# ---------------------------------------------------------------- HTTP

def http(method, path, timeout=20):
    """(status, parsed JSON or text) of one request on a fresh connection."""
    req = urllib.request.Request(f"http://127.0.0.1:{S.port}{path}", method=method,
                                 headers={"Connection": "close"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body, code = r.read(), r.status
    except urllib.error.HTTPError as e:
        body, code = e.read(), e.code
    try:
        return code, json.loads(body)
    except ValueError:
        return code, body.decode("utf-8", "replace")


async def ahttp(method, path):
    return await asyncio.get_running_loop().run_in_executor(None, http, method, path)


async def create(actor, max_images):
    """A new v1 session's id, or None (error recorded)."""
    try:
        code, body = await ahttp("POST", f"/ws/session/create?max_images={max_images}&process_res={S.res}")
    except OSError as e:
        S.err(actor, f"create: {type(e).__name__}")
        return None
    if code != 200 or not isinstance(body, dict) or "session_id" not in body:
        S.err(actor, f"create: HTTP {code}")
        return None
    S.events["sessions created (HTTP)"] += 1
    return body["session_id"]


async def delete(actor, sid, may_be_gone=False):
    try:
        code, _ = await ahttp("DELETE", f"/ws/session/{sid}")
    except OSError as e:
        S.err(actor, f"delete: {type(e).__name__}")
        return
    if code == 200:
        S.events["sessions deleted"] += 1
    elif code == 404 and may_be_gone:
        S.events["sessions already expired at delete"] += 1
    else:
        S.err(actor, f"delete: HTTP {code}")


# ---------------------------------------------------------------- WebSocket helpers (websockets)

class Fail(Exception):
    """A well-behaved client's failure; its text is the error kind."""


async def ws_open(path):
    try:
        return await websockets.connect(f"ws://127.0.0.1:{S.port}{path}", max_size=None,
                                        ping_interval=None, open_timeout=15, close_timeout=5)
    except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as e:
        raise Fail(f"connect: {type(e).__name__}") from e


async def recv(ws, timeout=60.0, waiting="reply"):
    try:
        m = await asyncio.wait_for(ws.recv(), timeout)
    except asyncio.TimeoutError as e:
        raise Fail(f"no {waiting} within {timeout:.0f} s") from e
    except websockets.exceptions.ConnectionClosed as e:
        raise Fail(f"socket closed ({e.code}) while waiting for {waiting}") from e
    if isinstance(m, bytes):
        raise Fail("unexpected binary message")
    return json.loads(m)


async def expect(ws, mtype, timeout=60.0):
    m = await recv(ws, timeout, f"'{mtype}'")
    if m.get("type") != mtype:
        if m.get("type") == "error":
            raise Fail(f"error message '{m.get('message', '')[:70]}' instead of {mtype}")
        raise Fail(f"'{m.get('type')}' instead of {mtype}")
    return m


async def upload(ws, n_expected, binary):
    data, _ = S.rng.choice(S.images)
    if binary:
        await ws.send(data)
    else:
        await ws.send(json.dumps({"type": "image", "filename": "soak.jpg",
                                  "data": base64.b64encode(data).decode()}))
    m = await expect(ws, "ack")
    if m.get("image_count") != n_expected:
        raise Fail(f"ack counts {m.get('image_count')}, expected {n_expected}")
    S.events["images acknowledged"] += 1


async def result(ws, kind="complete", timeout=300.0):
    """Reads progress messages up to the result and checks its GLB."""
    while True:
        m = await recv(ws, timeout, f"'{kind}'")
        t = m.get("type")
        if t in ("progress", "auto_generating"):
            continue
        if t == "error":
            raise Fail(f"error message '{m.get('message', '')[:70]}' instead of {kind}")
        if t != kind:
            raise Fail(f"'{t}' instead of {kind}")
        glb = base64.b64decode(m.get("glb_base64", ""))
        if len(glb) < 12 or glb[:4] != b"glTF":
            raise Fail("result is not a GLB")
        _, version, length = struct.unpack("<4sII", glb[:12])
        if version != 2 or length != len(glb) or m.get("metadata", {}).get("glb_size_bytes") != len(glb):
            raise Fail("GLB length does not match its header / metadata")
        S.events["GLBs received and checked"] += 1
        return


async def close(ws):
    try:
        await asyncio.wait_for(ws.close(), 10)
    except (asyncio.TimeoutError, OSError, websockets.exceptions.WebSocketException):
        S.err("close", "no close handshake within 10 s")


def abort(ws):
    """Drops the TCP connection without a close frame."""
    ws.transport.abort()


async def think():
    await asyncio.sleep(S.rng.uniform(0, knob("THINK")))


# ---------------------------------------------------------------- raw sockets (hostile clients)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def raw_connect(path, rcvbuf=0, timeout=15.0):
    """A blocking socket past the WebSocket handshake (checked), and any bytes read after it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", S.port))
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path.encode(), S.port, key))
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise Fail("handshake: closed")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    if not head.startswith(b"HTTP/1.1 101") or accept not in head:
        raise Fail("handshake: " + head.split(b"\r\n", 1)[0].decode("latin-1"))
    return s, rest


def raw_frame(opcode, payload):
    """One masked final frame."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    mask = os.urandom(4)
    m = (mask * (n // 4 + 1))[:n]
    return head + mask + bytes(a ^ b for a, b in zip(payload, m)) if n < 4096 else \
        head + mask + (int.from_bytes(payload, "little") ^ int.from_bytes(m, "little")).to_bytes(n, "little")


def raw_read_text(s, rest):
    """Reads one text message (unmasked server frame); returns (JSON, remaining bytes)."""
    buf = rest
    while True:
        if len(buf) >= 2:
            n = buf[1] & 0x7F
            off = 2
            if n == 126:
                off = 4
                n = struct.unpack(">H", buf[2:4])[0] if len(buf) >= 4 else None
            elif n == 127:
                off = 10
                n = struct.unpack(">Q", buf[2:10])[0] if len(buf) >= 10 else None
            if n is not None and len(buf) >= off + n:
                op, payload, buf = buf[0] & 0x0F, buf[off:off + n], buf[off + n:]
                if op == 1:
                    return json.loads(payload), buf
                if op == 8:
                    raise Fail("closed by the server")
                continue  # pings: the server answers none of ours, and we answer none of its
        chunk = s.recv(65536)
        if not chunk:
            raise Fail("closed by the server")
        buf += chunk


def raw_drained_eof(s, budget_s=2.0):
    """Reads what is queued without parsing; True when the server has closed the connection."""
    s.settimeout(0.2)
    end = time.monotonic() + budget_s
    try:
        while time.monotonic() < end:
            try:
                if not s.recv(1 << 20):
                    return True
            except socket.timeout:
                return False
    except OSError:
        return True
    return False


def raw_abandon_upload(sid):
    """Half of a binary image frame, then a reset: the server must drop the partial message."""
    s, _ = raw_connect(f"/ws/reconstruct/{sid}" if sid else "/ws/reconstruct")
    try:
        if not sid:
            s.sendall(raw_frame(1, json.dumps({"type": "init", "process_res": S.res, "max_images": 4}).encode()))
        data, _ = S.images[0]
        frame = raw_frame(2, data)
        s.sendall(frame[:len(frame) // 2])
        time.sleep(0.2)
    finally:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        s.close()


def raw_noread(sid, hold_s):
    """Uploads 2 images, then sends a generate every second and reads nothing, so results pile
    up (kernel buffers first, then the server's queue) until the server drops the connection or
    hold_s have passed. Returns True when the server had closed the connection by then."""
    s, rest = raw_connect(f"/ws/reconstruct/{sid}", rcvbuf=4096)
    try:
        m, rest = raw_read_text(s, rest)
        if m.get("type") != "connected":
            raise Fail(f"noread: '{m.get('type')}' instead of connected")
        for i in (1, 2):
            s.sendall(raw_frame(2, S.images[i][0]))
            while True:
                m, rest = raw_read_text(s, rest)
                if m.get("type") == "ack":
                    break
        end = time.monotonic() + hold_s
        while time.monotonic() < end:
            try:
                s.sendall(raw_frame(1, b'{"type":"generate"}'))
            except OSError:  # reset by the server: dropped
                return True
            time.sleep(1)
        return raw_drained_eof(s)
    finally:
        s.close()


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# ---------------------------------------------------------------- the clients

async def actor_full(i):
    n = i
    while S.running():
        variant = n % 4  # 0 v1 binary, 1 v1 base64, 2 v2 binary, 3 v2 auto_generate_after
        n += 1
        k = S.rng.randint(1, 3)
        sid = None
        try:
            if variant < 2:
                sid = await create("full", k)
                if not sid:
                    continue
                ws = await ws_open(f"/ws/reconstruct/{sid}")
                await expect(ws, "connected", 15)
            else:
                ws = await ws_open("/ws/reconstruct")
                await ws.send(json.dumps({"type": "init", "max_images": k, "process_res": S.res,
                                          "auto_generate_after": k if variant == 3 else 0}))
                sid = (await expect(ws, "session_created", 15))["session_id"]
                S.events["sessions created (v2 init)"] += 1
            try:
                for j in range(1, k + 1):
                    await upload(ws, j, binary=variant != 1)
                if variant == 3:
                    await result(ws, "delta")
                else:
                    await ws.send('{"type":"generate"}')
                    await result(ws, "complete")
                S.events["full cycles"] += 1
            finally:
                await close(ws)
        except Fail as e:
            S.err("full", e, sid)
        if sid:
            await delete("full", sid)
        await think()


async def actor_reconnect(i):
    """Connections 1-4 to one session: 1 uploads and closes, 2 resumes, uploads and drops its
    TCP connection, 3 resumes and is taken over by 4, which uploads and generates."""
    while S.running():
        sid = await create("reconnect", 4)
        if not sid:
            await asyncio.sleep(1)
            continue
        path = f"/ws/reconstruct/{sid}"
        step = "connection 1"
        socks = []
        try:
            ws = await ws_open(path)
            socks.append(ws)
            await expect(ws, "connected", 15)
            await upload(ws, 1, True)
            await close(ws)
            step = "connection 2"
            ws = await ws_open(path)
            socks.append(ws)
            if (await expect(ws, "connected", 15)).get("image_count") != 1:
                raise Fail("connected does not count the stored image")
            await upload(ws, 2, False)
            abort(ws)
            await asyncio.sleep(0.2)
            step = "connection 3"
            a = await ws_open(path)
            socks.append(a)
            if (await expect(a, "connected", 15)).get("image_count") != 2:
                raise Fail("after a dropped connection: image_count is not 2")
            step = "connection 4 (takeover)"
            b = await ws_open(path)
            socks.append(b)
            await expect(b, "connected", 15)
            step = "connection 3 taken over"
            try:
                m = await recv(a, 15, "the takeover error")
            except Fail:
                # Which socket did the server keep? If 4 got the error, it kept the older one.
                try:
                    m4 = await recv(b, 1, "anything")
                except Fail:
                    raise Fail("no takeover error within 15 s on either socket") from None
                if m4.get("type") == "error" and "took over" in m4.get("message", ""):
                    raise Fail("the takeover error went to the NEW socket (4): the server kept the "
                               "older connection 3 attached") from None
                raise Fail(f"no takeover error within 15 s; the new socket got '{m4.get('type')}'") from None
            if m.get("type") != "error" or "took over" not in m.get("message", ""):
                raise Fail(f"got '{m.get('type')}' instead of the takeover error")
            try:
                await asyncio.wait_for(a.wait_closed(), 10)
            except asyncio.TimeoutError:
                raise Fail("not closed after the takeover error")
            step = "connection 4"
            await upload(b, 3, True)
            await b.send('{"type":"generate"}')
            await result(b, "complete")
            await close(b)
            S.events["reconnect cycles"] += 1
        except Fail as e:
            S.err("reconnect", f"{step}: {e}", sid)
            for w in socks:
                abort(w)
        await delete("reconnect", sid)
        await think()


async def actor_idle(i):
    await asyncio.sleep(S.rng.uniform(0, 5))  # spread the first connects
    n = i
    while S.running():
        n += 1
        hold = min(S.rng.uniform(10, 40), max(0.0, S.stop_at - time.monotonic()))
        sid = None
        try:
            if n % 2:
                sid = await create("idle", 1)
                if not sid:
                    await asyncio.sleep(1)
                    continue
                ws = await ws_open(f"/ws/reconstruct/{sid}")
                await expect(ws, "connected", 15)
            else:
                ws = await ws_open("/ws/reconstruct")
                await ws.send(json.dumps({"type": "init", "max_images": 1, "process_res": S.res}))
                sid = (await expect(ws, "session_created", 15))["session_id"]
                S.events["sessions created (v2 init)"] += 1
            end = time.monotonic() + hold
            try:
                while time.monotonic() < end:
                    await asyncio.sleep(min(3.0, max(0.0, end - time.monotonic())))
                    await ws.send('{"type":"ping"}')
                    await expect(ws, "pong", 15)
                    S.events["pings answered"] += 1
            finally:
                await close(ws)
            S.events["idle holds"] += 1
        except Fail as e:
            S.err("idle", e, sid)
        if sid:
            await delete("idle", sid)


async def actor_abandon(i):
    """Walks away in one of four ways; half the sessions are deleted, half left to expire."""
    n = i
    while S.running():
        kind = n % 4
        n += 1
        keep = S.rng.random() < 0.5
        sid = None
        try:
            if kind == 0:  # mid-upload on v1
                sid = await create("abandon", 4)
                if sid:
                    await in_thread(raw_abandon_upload, sid)
                    S.events["abandoned mid-upload"] += 1
            elif kind == 1:  # mid-upload on v2 (session from init, its id never read: it expires)
                await in_thread(raw_abandon_upload, None)
                S.events["abandoned mid-upload"] += 1
                S.events["sessions left to expire"] += 1
            elif kind == 2:  # generate, then gone before the result
                sid = await create("abandon", 2)
                if sid:
                    ws = await ws_open(f"/ws/reconstruct/{sid}")
                    await expect(ws, "connected", 15)
                    await upload(ws, 1, True)
                    await ws.send('{"type":"generate"}')
                    abort(ws)
                    S.events["abandoned mid-generate"] += 1
            else:  # created, never connected
                sid = await create("abandon", 1)
                S.events["created, never connected"] += 1
        except Fail as e:
            S.err("abandon", e)
        except OSError as e:
            S.err("abandon", f"{type(e).__name__}")
        if sid and not keep:
            # Right after walking away: a DELETE must also cancel a queued/running job.
            await delete("abandon", sid)
        elif sid:
            S.events["sessions left to expire"] += 1
        await asyncio.sleep(S.rng.uniform(1, 3))


async def actor_noread(i):
    hold = 2 * knob("SEND_TIMEOUT") + 5
    while S.running():
        sid = await create("noread", 2)
        if not sid:
            await asyncio.sleep(1)
            continue
        try:
            dropped = await in_thread(raw_noread, sid, hold)
            S.events["noread: dropped by the server" if dropped else "noread: still open, closed by client"] += 1
        except Fail as e:
            S.err("noread", e)
        except OSError as e:
            S.err("noread", f"{type(e).__name__}")
        if S.rng.random() < 0.5:
            await delete("noread", sid, may_be_gone=True)
        else:
            S.events["sessions left to expire"] += 1
        await asyncio.sleep(S.rng.uniform(1, 3))


async def actor_da3load():
    every = knob("DA3LOAD_EVERY")
    img = os.path.join(S.tmp, "img0.jpg")
    runs = [["lifecycle", "-n", "20", "-c", "2", "--image", img],
            ["upload", "-n", "2", "-k", "2", "--generate", "--protocol", "v2", "--image", img,
             "--process-res", str(S.res)]]
    n = 0
    await asyncio.sleep(min(every / 2, 15))
    while S.running():
        args = runs[n % len(runs)]
        n += 1
        p = await asyncio.create_subprocess_exec(os.path.join(BUILD, "da3-load"), *args, "--port", str(S.port),
                                                 stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await p.communicate()
        if p.returncode == 0:
            S.events[f"da3-load {args[0]} runs"] += 1
        else:
            S.err("da3-load", f"{args[0]} exited {p.returncode}")
            S.da3load_out.append(out.decode("utf-8", "replace")[-2000:])
        end = time.monotonic() + every
        while S.running() and time.monotonic() < end:
            await asyncio.sleep(1)


# ---------------------------------------------------------------- sampling

def proc_fig(pid):
    """(rss MB, open fds, threads) of a process from /proc; None when it is gone."""
    try:
        rss = thr = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
                elif line.startswith("Threads:"):
                    thr = int(line.split()[1])
        return rss, len(os.listdir(f"/proc/{pid}/fd")), thr
    except (FileNotFoundError, ProcessLookupError):
        return None


def metrics():
    code, text = http("GET", "/metrics", 10)
    out = {}
    if code == 200 and isinstance(text, str):
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                try:
                    out[k] = float(v)
                except ValueError:
                    pass
    return out


def dir_size(path):
    """(bytes of regular files, entries) under path."""
    total = entries = 0
    for root, dirs, files in os.walk(path):
        entries += len(dirs) + len(files)
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total, entries


def norm_log(msg):
    msg = UUID_RE.sub("<id>", msg)
    msg = msg.replace(S.tmp, "<tmp>")
    msg = re.sub(r"\d+(\.\d+)?", "#", msg)
    # Long lines: the start and the end (where the outcome, e.g. "NOT delivered (...)", is).
    return msg if len(msg) <= 120 else msg[:60] + " ... " + msg[-55:]


def scan_log():
    with open(S.log_path, "rb") as f:
        f.seek(S.log_off)
        chunk = f.read()
    # Only whole lines; a partial last line is read at the next sample.
    cut = chunk.rfind(b"\n") + 1
    S.log_off += cut
    for line in chunk[:cut].decode("utf-8", "replace").splitlines():
        m = re.match(r"^\S+ \S+\[\d+\] (warn|error): (.*)$", line)
        if not m:
            # Anything a process writes that is not a log line (a crash, a sanitizer) counts too.
            if line.strip() and not re.match(r"^\S+ \S+\[\d+\] (info|debug): ", line):
                S.log_err += 1
                S.log_kinds["(not a log line) " + norm_log(line)] += 1
            continue
        if m.group(1) == "warn":
            S.log_warn += 1
        else:
            S.log_err += 1
        k = f"{m.group(1)}: {norm_log(m.group(2))}"
        S.log_kinds[k] += 1
        if any(p.search(m.group(2)) for p in EXPECTED_LOG):
            S.log_expected.add(k)


def phase_now():
    if S.phase != "load":
        return S.phase
    if not S.running():
        return "drain"  # the clients are finishing their last cycles
    return "warm" if S.now() < knob("WARMUP") else "load"


def sample():
    """One row's figures (a dict)."""
    m = metrics()
    code, st = http("GET", "/status", 10)
    wpids = [w["pid"] for w in st["workers"]["list"]] if code == 200 else []
    f = proc_fig(S.front.pid) or (0, 0, 0)
    wrss = wfd = 0
    for p in wpids:
        w = proc_fig(p)
        if w:
            wrss += w[0]
            wfd += w[1]
    scan_log()
    data, entries = dir_size(S.data)
    return {
        "t": S.now(), "phase": phase_now(),
        "front_rss": f[0], "work_rss": wrss, "front_fds": f[1], "work_fds": wfd, "threads": f[2],
        "arena": m.get("da3_arena_used_bytes", -1),
        "sessions": m.get("da3_sessions", -1),
        "ws": m.get("da3_websocket_connections", -1),
        "conns": m.get("da3_connections_open", -1),
        "queued": m.get('da3_job_queue_depth{state="queued"}', 0) + m.get('da3_job_queue_depth{state="running"}', 0),
        "jobs": m.get('da3_jobs_total{outcome="completed"}', 0),
        "jobs_failed": m.get('da3_jobs_total{outcome="failed"}', 0),
        "jobs_cancelled": m.get('da3_jobs_total{outcome="cancelled"}', 0),
        "restarts": m.get("da3_worker_restarts_total", 0),
        "workers": len(wpids),
        "errors": sum(S.errors.values()), "error_kinds": dict(S.errors),
        "log_warn": S.log_warn, "log_err": S.log_err,
        "data": data, "entries": entries,
    }


HEADER = ("   t_s phase  front_MB work_MB fds_f fds_w thr arena_KB sess   ws  jobs errs warn  err data_KB"
          "  new client errors")


def row(s, prev):
    new = []
    if prev:
        for k, v in s["error_kinds"].items():
            d = v - prev["error_kinds"].get(k, 0)
            if d:
                new.append(f"{k} x{d}")
    print(f"{s['t']:6.0f} {s['phase']:<6} {s['front_rss']:8.1f} {s['work_rss']:7.0f} {s['front_fds']:5d} "
          f"{s['work_fds']:5d} {s['threads']:3d} {s['arena'] / 1024:8.0f} {s['sessions']:4.0f} {s['ws']:4.0f} "
          f"{s['jobs']:5.0f} {s['errors']:4d} {s['log_warn']:4d} {s['log_err']:4d} {s['data'] / 1024:7.0f}  "
          f"{'; '.join(new)}", flush=True)


async def sampler(stop):
    loop = asyncio.get_running_loop()
    interval = knob("INTERVAL")
    nxt = time.monotonic() + interval
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, nxt - time.monotonic()))
            return
        except asyncio.TimeoutError:
            pass
        nxt += interval
        try:
            s = await loop.run_in_executor(None, sample)
        except (OSError, ValueError, KeyError) as e:
            if server_died():
                return
            print(f"  (sample failed: {type(e).__name__}: {e})", flush=True)
            continue
        row(s, S.samples[-1] if S.samples else None)
        S.samples.append(s)


def server_died():
    """True (and the clients told to stop) once da3-server has exited."""
    rc = S.front.poll()
    if rc is None:
        return False
    if not S.died:
        S.died = f"da3-server exited with status {rc} at t={S.now():.0f} s"
        print("== " + S.died, flush=True)
    S.stop_at = 0
    return True


def idle_now(s, base):
    return (s["sessions"] == 0 and s["ws"] == 0 and s["arena"] == 0 and s["queued"] == 0
            and s["data"] == base["data"] and s["front_fds"] <= base["front_fds"])


# ---------------------------------------------------------------- verdicts

def slope_per_min(ts, vs):
    n = len(ts)
    if n < 2:
        return 0.0
    mt, mv = sum(ts) / n, sum(vs) / n
    den = sum((t - mt) ** 2 for t in ts)
    return 60 * sum((t - mt) * (v - mv) for t, v in zip(ts, vs)) / den if den else 0.0


def verdicts(base, end):
    load = [s for s in S.samples if s["phase"] == "load"]
    if len(load) < 3:  # a run shorter than its warm-up: the warm rows are all there is
        print("   (fewer than 3 rows after the warm-up: the verdicts include the warm-up rows)")
        load = [s for s in S.samples if s["phase"] in ("warm", "load")]
    third = max(1, len(load) // 3)
    first, last = load[:third], load[-third:]
    rss_tol, fd_tol = knob("RSS_TOL"), knob("FD_TOL")
    failed = []
    lines = []

    def med(rows, key):
        return statistics.median(r[key] for r in rows) if rows else 0.0

    def series(label, key, scale, grow_ok, grow_txt, end_ok=None, end_txt="", fmt="{:.1f}"):
        f, l = med(first, key) / scale, med(last, key) / scale
        sl = slope_per_min([r["t"] for r in load], [r[key] / scale for r in load])
        b, e = base[key] / scale, end[key] / scale
        grow = "FLAT" if grow_ok(f, l) else "GROWING"
        back = "" if end_ok is None else ("BACK" if end_ok(b, e) else "NOT BACK")
        verdict = grow + (f", {back}" if back else "")
        if grow != "FLAT" or back == "NOT BACK":
            failed.append(label)
        lines.append(f"{label:<18} {fmt.format(f):>9} {fmt.format(l):>9} {sl:+9.2f} {fmt.format(b):>9} "
                     f"{fmt.format(e):>9}  {grow_txt + ('; ' + end_txt if end_txt else ''):<46} {verdict}")

    print(f"{'series':<18} {'first3rd':>9} {'last3rd':>9} {'slope/min':>9} {'baseline':>9} {'end':>9}  "
          f"{'tolerance':<46} verdict")
    series("front RSS MB", "front_rss", 1, lambda f, l: l <= f * (1 + rss_tol / 100), f"last <= first +{rss_tol:g} %")
    series("workers RSS MB", "work_rss", 1, lambda f, l: l <= f * (1 + rss_tol / 100), f"last <= first +{rss_tol:g} %")
    series("front fds", "front_fds", 1, lambda f, l: l <= f + fd_tol, f"last <= first +{fd_tol:g}",
           lambda b, e: e <= b + fd_tol, f"end <= baseline +{fd_tol:g}", "{:.0f}")
    series("worker fds", "work_fds", 1, lambda f, l: l <= f + fd_tol, f"last <= first +{fd_tol:g}",
           lambda b, e: e <= b + fd_tol, f"end <= baseline +{fd_tol:g}", "{:.0f}")
    series("front threads", "threads", 1, lambda f, l: l <= f + 2, "last <= first +2",
           lambda b, e: e <= b + 2, "end <= baseline +2", "{:.0f}")
    series("arena KB", "arena", 1024, lambda f, l: l <= f + 1024, "last <= first +1 MB",
           lambda b, e: e == 0, "end == 0", "{:.0f}")
    series("sessions", "sessions", 1, lambda f, l: l <= f + max(5, f / 4), "last <= first +max(5, 25 %)",
           lambda b, e: e == 0, "end == 0", "{:.0f}")
    series("WebSockets", "ws", 1, lambda f, l: l <= f + max(5, f / 4), "last <= first +max(5, 25 %)",
           lambda b, e: e == 0, "end == 0", "{:.0f}")
    series("data dir KB", "data", 1024, lambda f, l: l <= f * 1.25 + 1024, "last <= first +25 % +1 MB",
           lambda b, e: e == b, "end == baseline", "{:.0f}")
    for line in lines:
        print(line)

    # Counters: rates, and the checks on errors and log lines.
    def rate(rows, k):
        span = (rows[-1]["t"] - rows[0]["t"]) / 60 if len(rows) > 1 else 0
        return f"{(rows[-1][k] - rows[0][k]) / span:.1f}/min" if span else "n/a"
    print(f"jobs completed     {end['jobs']:.0f} ({rate(first, 'jobs')} in the first third, "
          f"{rate(last, 'jobs')} in the last; failed {end['jobs_failed']:.0f}, "
          f"cancelled {end['jobs_cancelled']:.0f})  [rates are information, not a verdict]")
    n_err = sum(S.errors.values())
    ok = n_err <= knob("MAX_ERRORS")
    print(f"client errors      {n_err} (at most {knob('MAX_ERRORS')})  {'OK' if ok else 'ERRORS'}")
    for k, v in S.errors.most_common():
        print(f"    {v:5d}  {k}")
    for d in S.error_details:
        print(f"      first ones: {d}")
    if not ok:
        failed.append("client errors")
    unexpected = {k: v for k, v in S.log_kinds.items() if k not in S.log_expected}
    n_unexp = sum(unexpected.values())
    print(f"server log         {S.log_warn} warnings, {S.log_err} errors; {n_unexp} not explained by the "
          f"soak's hostile clients  {'OK' if not n_unexp else 'UNEXPECTED'}")
    for k, v in S.log_kinds.most_common(12):
        print(f"    {v:5d}  {'' if k in unexpected else '(expected) '}{k}")
    if n_unexp:
        failed.append("server log")
    r_ok = end["restarts"] == 0
    print(f"worker restarts    {end['restarts']:.0f}  {'OK' if r_ok else 'RESTARTED'}")
    if not r_ok:
        failed.append("worker restarts")
    return failed


# ---------------------------------------------------------------- server

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def start_server():
    S.port = free_port()
    cmd = [os.path.join(BUILD, "da3-server"), "--host", "127.0.0.1", "--port", str(S.port),
           "--workers", str(knob("WORKERS")), "--model", "demo", "--data-dir", S.data,
           "--web-dir", os.path.join(ROOT, "web"), "--max-sessions", "1000",
           "--session-timeout", str(knob("SESSION_TIMEOUT")), "--cleanup-interval", str(knob("CLEANUP_INTERVAL")),
           "--send-timeout", str(knob("SEND_TIMEOUT")), "--log-level", "info"]
    # Per-client-address limits off, as bench-load does: every soak client is one address. Those
    # this build has (the list grows), from its --help.
    helptext = subprocess.run([cmd[0], "--help"], capture_output=True, text=True).stdout
    for flag in PER_CLIENT_LIMITS:
        if re.search(rf"^\s*{flag}\b", helptext, re.M):
            cmd += [flag, "0"]
    log = open(S.log_path, "wb")
    S.front = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=S.tmp)
    log.close()
    print("== " + " ".join(cmd[1:]).replace(S.tmp, "$TMP"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if S.front.poll() is not None:
            sys.stdout.write(open(S.log_path).read())
            sys.exit("soak: da3-server exited at start")
        try:
            code, st = http("GET", "/status", 2)
            if code == 200 and st["workers"]["ready"] == knob("WORKERS"):
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("soak: da3-server not ready within 120 s")


def stop_server():
    """SIGTERM; (exit status, workers left, shm segment left)."""
    wpids = []
    try:
        if S.front.poll() is None:
            code, st = http("GET", "/status", 5)
            wpids = [w["pid"] for w in st["workers"]["list"]] if code == 200 else []
    except (OSError, ValueError, KeyError, TypeError):
        pass
    S.front.send_signal(signal.SIGTERM)
    try:
        rc = S.front.wait(30)
    except subprocess.TimeoutExpired:
        S.front.kill()
        rc = S.front.wait()
        rc = f"{rc} (killed: no exit within 30 s of SIGTERM)"
    time.sleep(0.5)
    left = [p for p in wpids if proc_fig(p)]
    # The job table and arena: POSIX shm "/da3-server-PORT" (frontend/main.c).
    shm = [n for n in os.listdir("/dev/shm") if n == f"da3-server-{S.port}"] if os.path.isdir("/dev/shm") else []
    return rc, left, shm


# ---------------------------------------------------------------- main

async def run_load():
    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=64))
    stop_sampling = asyncio.Event()
    samp = asyncio.create_task(sampler(stop_sampling))
    S.phase = "load"
    S.stop_at = time.monotonic() + knob("SECONDS")
    actors = [actor_full(i) for i in range(knob("FULL"))]
    actors += [actor_reconnect(i) for i in range(knob("RECONNECT"))]
    actors += [actor_idle(i) for i in range(knob("IDLE"))]
    actors += [actor_abandon(i) for i in range(knob("ABANDON"))]
    actors += [actor_noread(i) for i in range(knob("NOREAD"))]
    if knob("DA3LOAD_EVERY") > 0:
        actors.append(actor_da3load())
    await asyncio.gather(*actors)
    # Drain: clients are done; wait for expiry to reap what the abandoning ones left.
    S.phase = "drain"
    drain_s = 2 * knob("SESSION_TIMEOUT") + 3 * knob("CLEANUP_INTERVAL") + 30
    deadline = time.monotonic() + drain_s
    base = S.samples[0] if S.samples and S.samples[0]["phase"] == "base" else None
    quiet = 0
    while time.monotonic() < deadline and not server_died():
        await asyncio.sleep(1)
        try:
            s = await loop.run_in_executor(None, sample)
        except (OSError, ValueError, KeyError):
            continue
        quiet = quiet + 1 if idle_now(s, base) else 0
        if quiet >= 3:
            break
    stop_sampling.set()
    await samp
    if server_died():
        return
    S.phase = "end"
    s = await loop.run_in_executor(None, sample)
    row(s, S.samples[-1])
    S.samples.append(s)


def main():
    for name in KNOBS:
        knob(name)  # a malformed value fails here, before anything starts
    cpu = cpu_model()
    S.tmp = tempfile.mkdtemp(prefix="da3-soak.", dir="/tmp")
    S.data = os.path.join(S.tmp, "data")
    S.log_path = os.path.join(S.tmp, "server.log")
    w, h = (int(x) for x in knob("IMAGE").split("x"))
    for i in range(5):
        path = os.path.join(S.tmp, f"img{i}." + ("png" if i == 4 else "jpg"))
        subprocess.run([os.path.join(BUILD, "tools", "make_jpeg"), path, str(w), str(h), str(i + 1), "90"], check=True)
        S.images.append((open(path, "rb").read(), i == 4))
    print(f"== soak: {knob('SECONDS')} s of load, a row every {knob('INTERVAL')} s; CPU: {cpu}, {os.cpu_count()} cores")
    print(f"== clients: {knob('FULL')} full, {knob('RECONNECT')} reconnect, {knob('IDLE')} idle, "
          f"{knob('ABANDON')} abandon, {knob('NOREAD')} noread, da3-load every {knob('DA3LOAD_EVERY')} s; "
          f"images {knob('IMAGE')} JPEG/PNG, process_res {knob('PROCESS_RES')}")
    failed = []
    try:
        start_server()
        print(f"== da3-server pid {S.front.pid} on port {S.port}, temporary folder {S.tmp}")
        time.sleep(1)
        S.t0 = time.monotonic()
        S.phase = "base"
        base = sample()
        print(HEADER)
        row(base, None)
        S.samples.append(base)
        asyncio.run(run_load())
        print()
        if S.died:
            failed.append(S.died)
            print("== the server log's last lines:")
            with open(S.log_path, errors="replace") as f:
                print("".join(f.readlines()[-30:]))
        else:
            n_load = len([s for s in S.samples if s["phase"] == "load"])
            print(f"== verdicts over the load rows after the {knob('WARMUP')} s warm-up: {n_load} rows, thirds of "
                  f"{max(1, n_load // 3)}; 'end' = the idle server after the drain (expired sessions reaped)")
            failed = verdicts(base, S.samples[-1])
        print("client activity    " + ", ".join(f"{k} {v}" for k, v in sorted(S.events.items())))
        for out in S.da3load_out[:2]:
            print("---- a failed da3-load run's last output:\n" + out)
    finally:
        if S.front:
            rc, left, shm = stop_server()
            ok = rc == 0 and not left and not shm
            print(f"shutdown           exit status {rc}, workers left {left or 'none'}, shm segments left "
                  f"{shm or 'none'}  {'OK' if ok else 'NOT CLEAN'}")
            if not ok:
                failed.append("shutdown")
            scan_log()
        print(f"== CPU: {cpu}, {os.cpu_count()} cores")
        if knob("KEEP"):
            print(f"== kept {S.tmp}")
        else:
            shutil.rmtree(S.tmp, ignore_errors=True)
    if failed:
        print("SOAK FAILED: " + ", ".join(failed))
        sys.exit(1)
    print("SOAK PASSED: every series flat, everything back when idle")


if __name__ == "__main__":
    main()
