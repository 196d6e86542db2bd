"""Shared helpers for the integration tests: start the real build/da3-server on a free port with
a private data dir, make test images, speak protocol v1 over real WebSockets, check GLBs."""
import asyncio
import base64
import json
import os
import re
import shutil
import signal
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import websockets

REPO = os.environ.get("DA3_REPO", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD = os.path.join(REPO, os.environ.get("BUILD", "build"))
SERVER = os.path.join(BUILD, "da3-server")
MAKE_JPEG = os.path.join(BUILD, "tools", "make_jpeg")

failures = []
_started = []  # every Server: killed at exit if a test died before its cleanup


def _kill_leftovers():
    for srv in _started:
        if srv.proc and srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()


import atexit  # noqa: E402
atexit.register(_kill_leftovers)


def check(cond, what):
    """Records a failed expectation (the test goes on, the script exits non-zero at the end)."""
    if not cond:
        failures.append(what)
        print("  FAIL:", what, flush=True)
    return cond


def finish(name):
    if failures:
        print(f"{name}: {len(failures)} failure(s)", flush=True)
        sys.exit(1)
    print(f"{name}: ok", flush=True)


class Server:
    """A da3-server process on 127.0.0.1 with its own data dir; stop() ends it. With --api-keys,
    `key` is the (admin) key the harness's own requests (readiness, http()) send."""

    def __init__(self, *args, data_dir=None, workers=1, port=0, env=None, key=None, tls_ca=None):
        self.key = key
        # With --tls-cert: the CA file that signed it; http() and connect() verify against it.
        self.ssl_ctx = ssl.create_default_context(cafile=tls_ca) if tls_ca else None
        self.tmp = tempfile.mkdtemp(prefix="da3-it-")
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        self.log_path = os.path.join(self.tmp, "server.log")
        self.args = args
        self.workers = workers
        self.port = port
        self.env = env
        self.proc = None
        _started.append(self)
        self.start()

    def start(self):
        cmd = [SERVER, "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
               "--model", "demo", "--data-dir", self.data_dir, "--web-dir", os.path.join(REPO, "web"),
               "--worker-threads", "1", *self.args]
        self.log = open(self.log_path, "a")
        seen = os.path.getsize(self.log_path)  # a restart appends: only read this run's lines
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.time() + 60
        while time.time() < deadline:
            text = open(self.log_path).read()[seen:]
            m = re.findall(r"listening on https?://127\.0\.0\.1:(\d+)/", text)
            if m:
                self.port = int(m[-1])
                break
            if self.proc.poll() is not None:
                raise RuntimeError("server exited early:\n" + text)
            time.sleep(0.05)
        else:
            raise RuntimeError("server did not start:\n" + open(self.log_path).read())
        self.wait_ready()

    def wait_ready(self, timeout=120):
        """Waits until every worker has loaded its model."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                code, st = self.http("GET", "/status")
            except urllib.error.URLError:  # refused at accept (TLS over the request rate)
                code = 0
            if code == 200 and st["workers"]["ready"] >= self.workers:
                return st  # (a 429 from a low --client-http-rate: poll again)
            time.sleep(0.1)
        raise RuntimeError("workers not ready:\n" + open(self.log_path).read())

    @property
    def base(self):
        return f"{'https' if self.ssl_ctx else 'http'}://127.0.0.1:{self.port}"

    @property
    def ws_base(self):
        return f"{'wss' if self.ssl_ctx else 'ws'}://127.0.0.1:{self.port}"

    def http(self, method, path, body=None, headers=None):
        """Returns (status, parsed JSON body or raw text)."""
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        headers = dict(headers or {})
        if self.key and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {self.key}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.ssl_ctx) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw

    def create(self, query="", body=None):
        status, js = self.http("POST", "/ws/session/create" + (("?" + query) if query else ""), body)
        assert status == 200, (status, js)
        return js["session_id"]

    def worker_pids(self):
        st = self.http("GET", "/status")[1]
        return [w["pid"] for w in st["workers"]["list"] if w["state"] == "ready"]

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log:
            self.log.close()
            self.log = None
        # A sanitizer report in the front's or a worker's log fails the test that ran it.
        text = open(self.log_path, errors="replace").read()
        reported = self.__dict__.setdefault("_sanitizer_reported", set())
        for tool in ("ThreadSanitizer", "AddressSanitizer", "LeakSanitizer", "runtime error:"):
            if tool in text and tool not in reported:
                reported.add(tool)
                i = text.index(tool)
                check(False, f"{tool} report in the server log:\n" + text[max(0, i - 200):i + 3000])

    def log_text(self):
        return open(self.log_path).read()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


_image_cache = {}


def make_image(w=140, h=105, seed=1, fmt="jpg", quality=90):
    """Bytes of a deterministic synthetic photo (made by build/tools/make_jpeg)."""
    key = (w, h, seed, fmt, quality)
    if key not in _image_cache:
        fd, path = tempfile.mkstemp(suffix="." + fmt)
        os.close(fd)
        subprocess.run([MAKE_JPEG, path, str(w), str(h), str(seed), str(quality)], check=True)
        _image_cache[key] = open(path, "rb").read()
        os.unlink(path)
    return _image_cache[key]


async def connect(server, session_id):
    """Opens the session's socket and returns (ws, first message)."""
    ws = await websockets.connect(f"{server.ws_base}/ws/reconstruct/{session_id}", max_size=None,
                                  ping_interval=None, open_timeout=30, ssl=server.ssl_ctx)
    first = json.loads(await asyncio.wait_for(ws.recv(), 30))
    return ws, first


async def recv_json(ws, timeout=120):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def send_image(ws, data, filename=None, binary=False):
    if binary:
        await ws.send(data)
    else:
        msg = {"type": "image", "data": base64.b64encode(data).decode()}
        if filename is not None:
            msg["filename"] = filename
        await ws.send(json.dumps(msg))
    return await recv_json(ws)


async def generate(ws, incremental=False, finalize=False, timeout=300):
    """Sends generate/finalize; returns (progress messages, final message)."""
    await ws.send(json.dumps({"type": "finalize"} if finalize else {"type": "generate", "incremental": incremental}))
    progress = []
    while True:
        m = await recv_json(ws, timeout)
        if m["type"] == "progress":
            progress.append(m)
            continue
        return progress, m


def glb_info(glb):
    """Parses a GLB: returns (json dict, point count of the POINTS primitive, LINES primitive count)."""
    magic, version, length = struct.unpack_from("<III", glb, 0)
    assert magic == 0x46546C67 and version == 2 and length == len(glb), "bad GLB header"
    clen, ctype = struct.unpack_from("<II", glb, 12)
    assert ctype == 0x4E4F534A
    gltf = json.loads(glb[20:20 + clen])
    points, lines = 0, 0
    for mesh in gltf.get("meshes", []):
        for prim in mesh["primitives"]:
            if prim.get("mode") == 0:
                points += gltf["accessors"][prim["attributes"]["POSITION"]]["count"]
            elif prim.get("mode") == 1:
                lines += 1
    return gltf, points, lines


def validate_glb(glb, tag="glb"):
    """Runs the Khronos glTF validator; returns True when it reports 0 errors."""
    fd, path = tempfile.mkstemp(suffix=".glb", prefix=tag)
    os.write(fd, glb)
    os.close(fd)
    r = subprocess.run([os.path.join(REPO, "scripts", "validate-glb.sh"), path], capture_output=True, text=True)
    os.unlink(path)
    if r.returncode != 0:
        print(r.stdout, r.stderr)
    return r.returncode == 0


def run(coro):
    return asyncio.get_event_loop().run_until_complete(coro) if sys.version_info < (3, 10) else asyncio.run(coro)


def raw_http(server, request, timeout=10):
    """Sends raw request bytes on a fresh connection and returns everything the server sent back
    until it closed (send 'Connection: close'): (status, headers dict lower-cased, body bytes)."""
    import socket
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def front_peak_rss_kb(server):
    """The front process's peak resident set (VmHWM) in KB."""
    for line in open(f"/proc/{server.proc.pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


async def session_with_images(srv, n, res=140, size=(140, 105), seed=10):
    """Creates a session (process_res res, few points), connects and uploads n JPEGs; returns
    (session id, socket)."""
    sid = srv.create(f"process_res={res}&num_max_points=4000")
    ws, _ = await connect(srv, sid)
    for i in range(n):
        a = await send_image(ws, make_image(size[0], size[1], seed + i))
        assert a["type"] == "ack", a
    return sid, ws


def wait_new_worker(srv, old_pid, timeout=60):
    """The pid of a ready worker other than old_pid (a restart), or None after timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        pids = srv.worker_pids()
        if pids and old_pid not in pids:
            return pids[0]
        time.sleep(0.1)
    return None

