"""The Python client (clients/python: the da3client library and the da3-client command) against
the real server: images, video frames (from a video made here with OpenCV), binary frames, known
cameras, reconnect by id, incremental, finalize, protocol v1 and v2, the library's sync and
asyncio APIs with progress as a callback and as an iterator, every error path and its exit code.

DA3_CLIENT_PEER=http://127.0.0.1:PORT also runs the v1 part against a second, independent
implementation of protocol v1 (the seed's reference server: ../shared/tools/seed_server); not in CI.
"""
import asyncio
import contextlib
import fcntl
import http.server
import io
import json
import math
import os
import pty
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time

from harness import REPO, Server, check, finish, glb_info, make_image, run, validate_glb

CLIENT_DIR = os.path.join(REPO, "clients", "python")
CLI = os.path.join(CLIENT_DIR, "da3-client")
sys.path.insert(0, CLIENT_DIR)

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg quiet: a bad video is reported by the client
import cv2  # noqa: E402  (Debian python3-opencv, installed with the test packages)
import numpy as np  # noqa: E402

from da3client import (AsyncClient, Client, ConnectionFailed, InputRefused, Progress, Result,  # noqa: E402
                       ServerFailed)
from da3client.cli import main as cli_main  # noqa: E402
from da3client.video import sample_frames  # noqa: E402

EXIT_USAGE, EXIT_CONNECTION, EXIT_REFUSED, EXIT_SERVER = 2, 3, 4, 5
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"

tmp = tempfile.mkdtemp(prefix="da3-client-")


def path(name):
    return os.path.join(tmp, name)


def image_file(name, seed, w=140, h=105):
    with open(path(name), "wb") as f:
        f.write(make_image(w, h, seed))
    return path(name)


def cli(*args, tty=False, env=None):
    """Runs da3-client with the test's Python (``env``: variables added); returns (exit code, stdout,
    stderr). With tty, stderr is a pseudo-terminal 100 columns wide (where the progress bars go)
    and comes back as text."""
    cmd = [sys.executable, CLI, *map(str, args)]
    env = dict(os.environ, **(env or {}))
    if not tty:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp, env=env)
        except subprocess.TimeoutExpired as e:  # a client that never ends: a failure, not a crash
            check(False, f"da3-client {args} still running after 600 s")
            return -1, e.stdout or "", e.stderr or ""
        return r.returncode, r.stdout, r.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, text=True, cwd=tmp, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            b = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not b:
            break
        chunks.append(b)
    os.close(master)
    out = p.stdout.read()
    p.wait(timeout=600)
    return p.returncode, out, b"".join(chunks).decode(errors="replace")


def read_json(name):
    with open(path(name)) as f:
        return json.load(f)


def stored_images(srv, sid):
    folder = os.path.join(srv.data_dir, "sessions", sid, "images")
    return sorted(n for n in os.listdir(folder) if n.endswith((".jpg", ".png")))


def free_port():
    """A local port nothing listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def session_id_in(text):
    """The session id the CLI names on its 'session ... created' line."""
    for word in text.split():
        if len(word) == 36 and word.count("-") == 4:
            return word
    return None


def camera(i):
    """World-to-camera 4x4 for camera i on a circle of radius 3 around the origin, facing it."""
    a = 0.25 * i
    r = [[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]]
    c = [3 * math.sin(a), 0.1 * i, -3 * math.cos(a)]
    t = [-sum(r[row][k] * c[k] for k in range(3)) for row in range(3)]
    return [r[row] + [t[row]] for row in range(3)] + [[0, 0, 0, 1]]


def make_video(name, frames=20):
    """An MJPEG AVI whose frame i is a checkerboard of mean brightness 20 + 10 i, so a frame the
    server stored tells which video frame it was."""
    w = cv2.VideoWriter(path(name), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    assert w.isOpened(), "OpenCV cannot write an MJPEG AVI"
    yy, xx = np.mgrid[0:120, 0:160]
    checker = (((yy // 10) + (xx // 10)) % 2) * 2 - 1
    for i in range(frames):
        grey = np.clip(20 + 10 * i + 15 * checker, 0, 255).astype(np.uint8)
        w.write(np.dstack([grey, grey, grey]))
    w.release()
    return path(name)


def cli_v1(srv, a, b, c):
    """The command line on protocol v1: a big result (the receive cap lifted), --json, --api-key
    (ignored by this server), --delete-session; progress bars on a terminal; reconnect by id,
    add an image and finalize; generate again on the stored images under --quiet."""
    # 2 images at process_res 280 with every point kept: a result message of a few MB, past the
    # websockets library's default 1 MiB receive cap.
    rc, out, err = cli("--base-url", srv.base, "--images", a, b, "--process-res", 280, "--output", "first.glb",
                       "--json", "first.json", "--api-key", "not-checked-yet", "--delete-session")
    check(rc == 0, f"CLI images: exit {rc}\n{err}")
    sid = session_id_in(err)
    glb = open(path("first.glb"), "rb").read() if os.path.exists(path("first.glb")) else b""
    meta = read_json("first.json") if os.path.exists(path("first.json")) else {}
    check(len(glb) > 2 ** 20, f"a GLB over the 1 MiB cap arrived whole: {len(glb)} bytes")
    gltf, points, lines = glb_info(glb) if glb else ({}, 0, 0)
    check(meta.get("num_frames") == 2 and meta.get("num_points") == points > 0 and lines == 2
          and meta.get("session_id") == sid and meta.get("glb_size_bytes") == len(glb),
          f"metadata file matches the GLB: {points} points, {lines} frustums, {str(meta)[:300]}")
    check(meta.get("processed_size") == [210, 280], f"--process-res reached the server: {meta.get('processed_size')}")
    check(f"{points} points" in out and "2 frames" in out and "first.glb" in out and out.count("\n") == 1,
          f"one-line summary: {out!r}")
    check("Running the network on 2 views" in err and "uploaded 2/2" in err,
          f"progress lines from the server's messages (stderr not a terminal): {err[:600]}")
    check("UNTRAINED" in err, "the untrained-model warning is shown")
    check(validate_glb(glb, "client-first"), "the CLI's GLB passes the Khronos validator")
    check(srv.http("GET", f"/ws/session/{sid}")[0] == 404, "--delete-session deleted the session")

    # on a terminal: tqdm bars fed by the server's progress; the session is kept
    rc, out, err = cli("--base-url", srv.base, "--images", a, b, "--process-res", 140, "--num-max-points", 2000,
                       "--output", "tty.glb", tty=True)
    check(rc == 0 and "uploading" in err and "|" in err and "Writing GLB..." in err and "100%" in err,
          f"progress bars on a terminal: exit {rc} {err[-800:]!r}")
    sid = session_id_in(err)
    st, info = srv.http("GET", f"/ws/session/{sid}")
    check(st == 200 and info.get("image_count") == 2 and info.get("status") == "active", f"session kept: {st} {info}")

    # reconnect by id: one more image, then finalize
    rc, out, err = cli("--base-url", srv.base, "--session", sid, "--images", c, "--finalize", "--output", "final.glb",
                       "--json", "final.json")
    meta = read_json("final.json") if rc == 0 else {}
    check(rc == 0 and meta.get("num_frames") == 3 and "resumed: it holds 2 image(s)" in err,
          f"--session continues the session: exit {rc}, {meta.get('num_frames')} frames\n{err}")
    check("[finalizing]" in err and "Generating final 3D model..." in err, f"finalize progress: {err[-500:]}")
    check(srv.http("GET", f"/ws/session/{sid}")[1].get("status") == "completed", "finalize completes the session")

    # reconnect with no images: generates on what is stored; --quiet is silent
    rc, out, err = cli("--base-url", srv.base, "--session", sid, "--delete-session", "--quiet", "--output", "again.glb")
    check(rc == 0 and out == "" and err == "", f"--quiet prints nothing on success: exit {rc} {out!r} {err!r}")
    check(os.path.getsize(path("again.glb")) > 0, "the GLB is written under --quiet too")
    check(srv.http("GET", f"/ws/session/{sid}")[0] == 404, "--delete-session deleted the session")


def cli_video_binary_incremental(srv):
    """--video --num-frames picks frames evenly and sends them (here as binary frames); --incremental
    ends on its delta; --no-cameras and --num-max-points reach the server."""
    clip = make_video("clip.avi", 20)
    names = [n for n, _ in sample_frames(clip, 4)]
    check(names == ["frame_000002.jpg", "frame_000007.jpg", "frame_000012.jpg", "frame_000017.jpg"],
          f"4 of 20 frames, the middle of each quarter: {names}")
    check(len(sample_frames(clip, 50)) == 20, "asking for more frames than the video has gives all of them")

    rc, out, err = cli("--base-url", srv.base, "--video", clip, "--num-frames", 4, "--binary", "--incremental",
                       "--process-res", 140, "--num-max-points", 3000, "--no-cameras", "--output", "video.glb",
                       "--json", "video.json")
    check(rc == 0, f"CLI video: exit {rc}\n{err}")
    meta = read_json("video.json") if rc == 0 else {}
    sid = session_id_in(err)
    glb = open(path("video.glb"), "rb").read() if rc == 0 else b""
    _, points, lines = glb_info(glb) if glb else ({}, 0, 0)
    check(meta.get("num_frames") == 4 and 0 < points <= 3000 and lines == 0,
          f"video result: {meta.get('num_frames')} frames, {points} points (cap 3000), {lines} frustums (none)")
    check("delta" in out, f"the summary says it is a delta: {out!r}")
    if sid:
        stored = stored_images(srv, sid)
        levels = []
        for name in stored:
            im = cv2.imread(os.path.join(srv.data_dir, "sessions", sid, "images", name), cv2.IMREAD_GRAYSCALE)
            levels.append(round(float(im.mean())))
        want = [20 + 10 * i for i in (2, 7, 12, 17)]
        check(len(levels) == 4 and all(abs(g - w) <= 6 for g, w in zip(levels, want)),
              f"the server holds video frames 2, 7, 12, 17 (brightness {want}): {levels}")
        check(all(n.endswith(".jpg") for n in stored), f"frames sent as JPEG: {stored}")


def cli_cameras(srv, a, b):
    """--cameras: known cameras go with each image, the answer is in the client's own cameras."""
    k = [[100, 0, 70], [0, 100, 52.5], [0, 0, 1]]
    with open(path("cams.json"), "w") as f:
        json.dump({"extrinsics": [camera(0), camera(1)[:3]], "intrinsics": [k, k]}, f)
    rc, out, err = cli("--base-url", srv.base, "--images", a, b, "--cameras", "cams.json", "--process-res", 140,
                       "--num-max-points", 2000, "--output", "cams.glb", "--json", "cams_meta.json", "--delete-session")
    meta = read_json("cams_meta.json") if rc == 0 else {}
    check(rc == 0 and meta.get("known_cameras") is True, f"--cameras: exit {rc}, known_cameras {meta.get('known_cameras')}\n{err}")
    ext = meta.get("extrinsics") or []
    check(len(ext) == 2 and all(abs(ext[i][r][c] - camera(i)[r][c]) < 1e-6 for i in range(2) for r in range(3) for c in range(4)),
          f"the client's cameras come back: {ext}")


def cli_v2(srv, a, b, c):
    """--protocol v2: no HTTP create, the settings go in init; resume by id."""
    rc, out, err = cli("--base-url", srv.base, "--protocol", "v2", "--images", a, b, "--process-res", 140,
                       "--num-max-points", 2000, "--max-images", 3, "--output", "v2.glb", "--json", "v2.json")
    meta = read_json("v2.json") if rc == 0 else {}
    sid = session_id_in(err)
    check(rc == 0 and meta.get("num_frames") == 2 and meta.get("processed_size") == [112, 140]
          and "up to 3 images" in err, f"v2 run: exit {rc} {str(meta)[:200]}\n{err}")
    rc, out, err = cli("--base-url", srv.base, "--protocol", "v2", "--session", sid, "--images", c, "--finalize",
                       "--output", "v2b.glb", "--json", "v2b.json")
    meta = read_json("v2b.json") if rc == 0 else {}
    check(rc == 0 and meta.get("num_frames") == 3, f"v2 resume: exit {rc}\n{err}")
    check(srv.http("GET", f"/ws/session/{sid}")[1].get("status") == "completed", "v2 finalize completes the session")
    rc, out, err = cli("--base-url", srv.base, "--protocol", "v2", "--session", sid, "--images", a)
    check(rc == EXIT_REFUSED and "Failed to process image: Session has reached maximum image limit (3)" in err,
          f"v2: the image limit is refused input: exit {rc} {err}")
    rc, out, err = cli("--base-url", srv.base, "--protocol", "v2", "--session", UNKNOWN_ID)
    check(rc == EXIT_REFUSED and f"Failed to resume session: Session {UNKNOWN_ID} not found" in err,
          f"v2 unknown session: exit {rc} {err}")
    rc, out, err = cli("--base-url", srv.base, "--protocol", "v2", "--images", a, "--process-res-method", "stretch")
    check(rc == EXIT_REFUSED and "Failed to create session: process_res_method must be one of" in err,
          f"v2 bad setting: exit {rc} {err}")


def cli_errors(srv, a):
    """Every error path: the server's words printed as they are, one exit code per kind."""
    bad = path("not-an-image.jpg")
    with open(bad, "wb") as f:
        f.write(b"hello, not a JPEG")
    rc, out, err = cli("--base-url", srv.base, "--images", a, bad, "--process-res", 140)
    sid = session_id_in(err)
    check(rc == EXIT_REFUSED and "da3-client: error: Failed to process image: Invalid image data" in err
          and f"continue with --session {sid}" in err, f"refused image: exit {rc} {err}")
    check(srv.http("GET", f"/ws/session/{sid}")[1].get("image_count") == 1, "the good image before it is kept")

    rc, out, err = cli("--base-url", srv.base, "--images", a, "--process-res", 5)
    check(rc == EXIT_REFUSED and "process_res must be an integer in [14, 2016]" in err, f"bad setting: exit {rc} {err}")

    rc, out, err = cli("--base-url", srv.base, "--session", UNKNOWN_ID)
    check(rc == EXIT_REFUSED and f"Session {UNKNOWN_ID} not found" in err, f"unknown session: exit {rc} {err}")

    empty = srv.create()
    rc, out, err = cli("--base-url", srv.base, "--session", empty)
    check(rc == EXIT_REFUSED and "da3-client: error: No images in session" in err, f"nothing to generate: exit {rc} {err}")

    big = path("big.jpg")  # past the server's --max-message-mb 4: refused at the frame header, close 1009
    with open(big, "wb") as f:
        f.write(os.urandom(5 * 1024 * 1024))
    for mode in ((), ("--binary",)):
        rc, out, err = cli("--base-url", srv.base, "--images", big, *mode)
        check(rc == EXIT_REFUSED and "Message too large" in err, f"too large {mode}: exit {rc} {err}")

    port = free_port()
    for proto in ("v1", "v2"):
        rc, out, err = cli("--base-url", f"http://127.0.0.1:{port}", "--images", a, "--protocol", proto)
        check(rc == EXIT_CONNECTION and ("Connection refused" in err or "Connect call failed" in err),
              f"no server ({proto}): exit {rc} {err}")

    # Usage errors are found before the server is contacted: run in-process (cli.main returns
    # the exit status) to spare a Python start-up each.
    for args, words in (((), "give --images or --video"),
                        (("--images", path("missing.jpg")), "cannot read the image"),
                        (("--images", a, "--binary", "--cameras", "cams.json"), "carry no camera"),
                        (("--images", a, "--incremental", "--finalize"), "exclude each other"),
                        (("--session", UNKNOWN_ID, "--process-res", 140), "keeps its own"),
                        (("--images", a, "--cameras", "no-such-cams.json"), "cannot read the cameras file"),
                        (("--video", bad, "--num-frames", 3), "cannot read the video"),
                        (("--images", a, "--output", "/nonexistent/dir/x.glb"), "does not exist")):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = cli_main(["--base-url", srv.base, *map(str, args)])
        check(rc == EXIT_USAGE and words in err.getvalue(), f"usage error {args}: exit {rc} {err.getvalue()}")


def cli_server_failures(srv, a):
    """Server-side failures (exit 5): a generate that fails in the worker (a stored image broken
    on the server's disk after it was accepted), and sessions at capacity (HTTP 503 on v1, init
    refused on v2)."""
    rc, out, err = cli("--base-url", srv.base, "--images", a, "--process-res", 140, "--num-max-points", 100,
                       "--output", "broken.glb")
    sid = session_id_in(err)
    stored = os.path.join(srv.data_dir, "sessions", sid, "images", "000000.jpg")
    with open(stored, "r+b") as f:
        f.truncate(300)  # the server's copy breaks; the client sends nothing wrong
    rc, out, err = cli("--base-url", srv.base, "--session", sid)
    check(rc == EXIT_SERVER and "da3-client: error: Failed to generate point cloud: image 0 (" in err
          and "000000.jpg" in err and "corrupt JPEG" in err,
          f"reconstruction failed on the server: exit {rc} {err}")
    with Client(srv.base) as c:  # the library says the same
        c.connect(sid)
        try:
            c.generate()
            check(False, "a generate failing in the worker should raise")
        except ServerFailed as e:
            check(e.exit_code == EXIT_SERVER and e.message.startswith("Failed to generate point cloud: image 0"),
                  f"library: {e.message}")
        c.delete()

    stats = srv.http("GET", "/ws/sessions")[1]["stats"]
    fillers = [srv.create() for _ in range(stats["max_sessions"] - stats["total_sessions"])]
    try:
        rc, out, err = cli("--base-url", srv.base, "--images", a)
        check(rc == EXIT_SERVER and f"HTTP 503: Maximum number of sessions ({stats['max_sessions']}) reached" in err,
              f"capacity, v1: exit {rc} {err}")
        rc, out, err = cli("--base-url", srv.base, "--images", a, "--protocol", "v2")
        check(rc == EXIT_SERVER and "Failed to create session: Maximum number of sessions" in err,
              f"capacity, v2: exit {rc} {err}")
    finally:
        for sid in fillers:
            srv.http("DELETE", f"/ws/session/{sid}")


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A stand-in server that records each request's Authorization header and answers 401 to the
    key "wrong-key-0123456789" (as da3-server with --api-keys does), 503 to anything else."""
    protocol_version = "HTTP/1.1"  # what a WebSocket client requires of the upgrade's answer
    seen = []

    def answer(self):
        key = self.headers.get("Authorization")
        _Recorder.seen.append((self.command, self.path, key))
        status = 401 if key == "Bearer wrong-key-0123456789" else 503
        body = b'{"detail": "invalid API key"}' if status == 401 else b'{"detail": "recorder says no"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = answer

    def log_message(self, *args):
        pass


def cli_api_key(a):
    """--api-key goes out as a bearer header on the HTTP create (v1) and on the upgrade (v2)."""
    rec = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=rec.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{rec.server_address[1]}"
    try:
        rc, out, err = cli("--base-url", base, "--images", a, "--api-key", "sekrit-key")
        check(rc == EXIT_SERVER and "HTTP 503: recorder says no" in err, f"v1 through the recorder: exit {rc} {err}")
        rc, out, err = cli("--base-url", base, "--images", a, "--protocol", "v2", "--api-key", "sekrit-key")
        check(rc == EXIT_SERVER and "HTTP 503" in err, f"v2 through the recorder: exit {rc} {err}")
        # a refused key is refused input, on the HTTP create and on the upgrade alike
        for proto in ("v1", "v2"):
            rc, out, err = cli("--base-url", base, "--images", a, "--protocol", proto,
                               env={"DA3_API_KEY": "wrong-key-0123456789"})
            check(rc == EXIT_REFUSED and "401" in err, f"refused key ({proto}, from $DA3_API_KEY): exit {rc} {err}")
    finally:
        rec.shutdown()
        rec.server_close()
    check(("POST", "/ws/session/create", "Bearer sekrit-key") in _Recorder.seen
          and ("GET", "/ws/reconstruct", "Bearer sekrit-key") in _Recorder.seen
          and ("GET", "/ws/reconstruct", "Bearer wrong-key-0123456789") in _Recorder.seen,
          f"bearer header on create and upgrade: {_Recorder.seen}")


def entry_points(srv):
    """`da3-client` runs by itself (its #! line) and as `python3 -m da3client`."""
    r = subprocess.run([CLI, "--version"], capture_output=True, text=True, timeout=60)
    check(r.returncode == 0 and r.stdout.startswith("da3-client "), f"./da3-client --version: {r.returncode} {r.stdout} {r.stderr}")
    env = dict(os.environ, PYTHONPATH=CLIENT_DIR)
    r = subprocess.run([sys.executable, "-m", "da3client", "--help"], capture_output=True, text=True, timeout=60, env=env)
    check(r.returncode == 0 and "--num-frames" in r.stdout, f"python3 -m da3client --help: {r.returncode} {r.stderr}")


def library_sync(srv, a_path):
    """Client (blocking): create / connect / upload (bytes, path, binary) / generate with a progress
    callback / the image limit as InputRefused / finalize as an iterator / info / delete."""
    with Client(srv.base) as c:
        sid = c.create(max_images=3, process_res=140, num_max_points=2000)
        info = c.connect()
        check(info.session_id == sid == c.session_id and info.image_count == 0 and info.max_images == 3,
              f"connect: {info}")
        ack = c.upload(make_image(140, 105, 51), filename="a.jpg")
        check(ack.image_count == 1 and ack.filename == "a.jpg" and ack.image_path == "000000.jpg", f"ack 1: {ack}")
        ack = c.upload(a_path, binary=True)
        check(ack.image_count == 2 and ack.filename is None, f"ack 2 (binary from a path): {ack}")
        seen = []
        res = c.generate(progress=seen.append)
        check(isinstance(res, Result) and res.kind == "complete" and res.image_count == 2, f"generate: {res}")
        check(seen and seen[0].stage == "loading_model" and all(isinstance(p, Progress) for p in seen)
              and [p.progress for p in seen] == sorted(p.progress for p in seen), f"progress callback: {seen[:3]}")
        check(0 < res.num_points <= 2000 and glb_info(res.glb)[1] == res.num_points and len(res.extrinsics) == 2,
              f"result: {res.num_points} points")
        c.upload(make_image(140, 105, 52))
        try:
            c.upload(make_image(140, 105, 53))
            check(False, "a 4th image past max_images 3 should be refused")
        except InputRefused as e:
            check(e.message == "Failed to process image: Session has reached maximum image limit (3)"
                  and e.exit_code == EXIT_REFUSED, f"image limit: {e.message}")
        events = list(c.finalize_events())
        check(len(events) > 1 and isinstance(events[-1], Result) and events[-1].image_count == 3
              and all(isinstance(e, Progress) and e.stage == "finalizing" for e in events[:-1]),
              f"finalize as an iterator: {[type(e).__name__ for e in events]}")
        check(c.info().get("status") == "completed", "finalized session is completed")
        c.delete()
        check(c.session_id is None and srv.http("GET", f"/ws/session/{sid}")[0] == 404, "delete() deleted it")
        try:
            c.info(sid)
            check(False, "info on a deleted session should fail")
        except InputRefused as e:
            check(e.status == 404 and "Session not found" in e.message, f"deleted session: {e.message}")


async def library_async(srv):
    """AsyncClient: a ws:// base URL, generate_events (incremental -> delta), ping, a reconnect
    from a second client taking the session over (the first is told: ConnectionFailed)."""
    async with AsyncClient(srv.ws_base) as c:
        sid = await c.create(process_res=140, num_max_points=2000)
        await c.connect()
        await c.upload(make_image(140, 105, 54))
        await c.upload(make_image(140, 105, 55), binary=True)
        events = [e async for e in c.generate_events(incremental=True)]
        check(isinstance(events[-1], Result) and events[-1].kind == "delta" and len(events) > 3,
              f"incremental events end on the delta: {[type(e).__name__ for e in events]}")
        await c.ping()
        async with AsyncClient(srv.base) as c2:
            info = await c2.connect(sid)
            check(info.image_count == 2, f"reconnect by id: {info}")
            try:
                await c.ping()
                check(False, "the first client should hear of the takeover")
            except ConnectionFailed as e:
                check("Another connection took over this session" in e.message, f"takeover: {e.message}")
            res = await c2.generate()
            check(res.kind == "complete" and res.image_count == 2, f"generate after reconnect: {res}")
            await c2.delete()
    try:
        await AsyncClient(srv.base).connect(UNKNOWN_ID)
        check(False, "unknown id should be refused")
    except InputRefused as e:
        check(e.message == f"Session {UNKNOWN_ID} not found", f"unknown id: {e.message}")
    try:
        await AsyncClient(srv.base).create(process_res="high")
        check(False, "a bad setting should be refused")
    except InputRefused as e:
        check(e.status == 422 and "process_res" in e.message, f"bad setting: {e.message}")
    try:
        await AsyncClient(srv.base).create(proces_res=140)
        check(False, "a misspelt setting should raise TypeError")
    except TypeError:
        pass


async def library_v2(srv):
    """protocol v2 in the library: settings in init (auto_generate_after too), the server's own
    job waited for with wait_result, resume by id from a new client."""
    async with AsyncClient(srv.base, protocol="v2") as c:
        sid = await c.create(process_res=140, num_max_points=2000, auto_generate_after=2)
        check(c.session is not None and c.session.config.get("auto_generate_after") == 2
              and c.session.config.get("process_res") == 140, f"v2 session_created config: {c.session}")
        await c.upload(make_image(140, 105, 56))
        await c.upload(make_image(140, 105, 57))
        res = await c.wait_result()
        check(res.kind == "delta" and res.image_count == 2 and res.metadata.get("auto_generated") is True,
              f"auto-generated result: {res}")
    async with AsyncClient(srv.base, protocol="v2") as c:
        info = await c.connect(sid)
        check(info.session_id == sid and info.image_count == 2, f"v2 resume: {info}")
        res = await c.generate()
        check(res.kind == "complete" and res.image_count == 2, f"v2 generate after resume: {res}")
        await c.delete()


def peer(base):
    """The v1 part against another implementation of protocol v1 (not in CI)."""
    print(f"== against the peer server at {base}", flush=True)
    a, b, c = (image_file(f"p{i}.jpg", 70 + i) for i in range(3))
    rc, out, err = cli("--base-url", base, "--images", a, b, "--process-res", 280, "--output", "peer.glb",
                       "--json", "peer.json")
    meta = read_json("peer.json") if rc == 0 else {}
    sid = session_id_in(err)
    glb = open(path("peer.glb"), "rb").read() if rc == 0 else b""
    size, points = len(glb), glb_info(glb)[1] if glb else 0
    check(rc == 0 and meta.get("num_frames") == 2 and size > 2 ** 20 and f"{points} points" in out,
          f"peer: images (a {size}-byte GLB, past the 1 MiB cap; points counted from the GLB): exit {rc}\n{out}{err}")
    rc, out, err = cli("--base-url", base, "--session", sid, "--images", c, "--incremental", "--output", "peer2.glb",
                       "--json", "peer2.json")
    check(rc == 0 and read_json("peer2.json").get("num_frames") == 3 and "delta" in out,
          f"peer: reconnect + incremental: exit {rc}\n{err}")
    rc, out, err = cli("--base-url", base, "--session", sid, "--finalize", "--delete-session", "--output", "peer3.glb")
    check(rc == 0, f"peer: finalize + delete: exit {rc}\n{err}")
    rc, out, err = cli("--base-url", base, "--session", UNKNOWN_ID)
    check(rc == EXIT_REFUSED and "not found" in err, f"peer: unknown session: exit {rc} {err}")
    with Client(base) as cl:
        cl.create(process_res=140)
        cl.connect()
        cl.upload(a)
        seen = []
        res = cl.generate(progress=seen.append)
        check(res.kind == "complete" and res.image_count == 1 and seen, f"peer: library generate: {res}")
        cl.delete()


def part(fn, *args):
    """Runs one part of the test (a coroutine function under asyncio) and says how long it took."""
    t0 = time.monotonic()
    result = fn(*args)
    if asyncio.iscoroutine(result):
        run(result)
    print(f"  {fn.__name__}: {time.monotonic() - t0:.1f} s", flush=True)


peer_base = os.environ.get("DA3_CLIENT_PEER")
srv = Server("--max-message-mb", "4", "--max-sessions", "30")
try:
    a, b, c = (image_file(f"{n}.jpg", 10 + i) for i, n in enumerate("abc"))
    part(entry_points, srv)
    part(cli_v1, srv, a, b, c)
    part(cli_video_binary_incremental, srv)
    part(cli_cameras, srv, a, b)
    part(cli_errors, srv, a)
    part(cli_api_key, a)
    part(cli_server_failures, srv, a)
    part(library_sync, srv, a)
    part(library_async, srv)
    # protocol v2 (the bare /ws/reconstruct socket, init first)
    part(cli_v2, srv, a, b, c)
    part(library_v2, srv)
    if peer_base:
        part(peer, peer_base)
finally:
    srv.cleanup()
    shutil.rmtree(tmp, ignore_errors=True)
finish("test_python_client")
