"""A short run of each da3-load scenario against the real server (seconds, small counts): every
run must report zero errors (da3-load exits non-zero on any) and leave the front with the open
fds it started with. The full-size runs are `make bench-load` (docs/load-testing.md)."""
import os
import re
import subprocess
import tempfile
import time

from harness import BUILD, Server, check, finish, make_image

DA3_LOAD = os.path.join(BUILD, "da3-load")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def fds_settled(pid, start, timeout=10):
    """The front's fd count once it is back to start, or whatever it is after timeout seconds:
    the front closes a socket when it sees the client's close or EOF, a moment after da3-load ends."""
    deadline = time.time() + timeout
    n = open_fds(pid)
    while n > start and time.time() < deadline:
        time.sleep(0.05)
        n = open_fds(pid)
    return n


def run_load(server, name, *args, timeout=300):
    pid = server.proc.pid
    start = open_fds(pid)
    cmd = [DA3_LOAD, *args, "--port", str(server.port), "--pid", str(pid)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    out = r.stdout + r.stderr
    print(f"-- {name}: {' '.join(args)}\n{out}", flush=True)
    check(r.returncode == 0, f"{name}: da3-load exited {r.returncode}")
    check(re.search(r"^result: 0 errors", out, re.M) is not None, f"{name}: errors reported")
    m = re.search(r"fds_before=(\d+) fds_after=(\d+)", out)
    check(m is not None and m.group(1) == m.group(2), f"{name}: da3-load saw the front's fds change: {m and m.group(0)}")
    end = fds_settled(pid, start)
    check(end == start, f"{name}: front fds {start} before, {end} after")
    return out


def rows(out):
    """{kind: (count, errors)} from da3-load's table."""
    table = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) == 8 and f[1].isdigit() and f[2].isdigit():
            table[f[0]] = (int(f[1]), int(f[2]))
    return table


def main():
    server = Server("--max-sessions", "200", workers=1)
    tmp = tempfile.mkdtemp(prefix="da3-load-")
    jpeg = os.path.join(tmp, "frame.jpg")
    with open(jpeg, "wb") as f:
        f.write(make_image(320, 240, seed=3))
    try:
        out = run_load(server, "idle", "idle", "-n", "50", "--interval", "0.5", "--duration", "2")
        t = rows(out)
        check(t.get("connect") == (50, 0), f"idle: 50 sockets connected: {t.get('connect')}")
        check(t.get("ping", (0, 1))[0] >= 150 and t["ping"][1] == 0, f"idle: pings answered: {t.get('ping')}")
        check(t.get("close") == (50, 0), f"idle: 50 close handshakes: {t.get('close')}")

        out = run_load(server, "upload", "upload", "-n", "5", "-k", "3", "--binary", "--image", jpeg)
        check(rows(out).get("image") == (15, 0), f"upload: 15 binary images acknowledged: {rows(out).get('image')}")

        # The other upload paths: base64 JSON (da3-load's generated PNG), pipelined, then a GLB.
        out = run_load(server, "upload-base64", "upload", "-n", "2", "-k", "2", "--base64", "--pipeline",
                       "--size", "160x120", "--generate", "--process-res", "70")
        t = rows(out)
        check(t.get("image") == (4, 0), f"upload --base64: 4 images acknowledged: {t.get('image')}")
        check(t.get("generate") == (2, 0), f"upload --generate: 2 GLBs received: {t.get('generate')}")

        out = run_load(server, "lifecycle", "lifecycle", "-n", "20", "-c", "2", "--image", jpeg)
        t = rows(out)
        for k in ("create", "connect", "image", "delete", "close"):
            check(t.get(k) == (20, 0), f"lifecycle: 20 x {k}: {t.get(k)}")

        out = run_load(server, "generate", "generate", "-n", "3", "-k", "1", "--image", jpeg, "--process-res", "70")
        check(rows(out).get("generate") == (3, 0), f"generate: 3 jobs complete: {rows(out).get('generate')}")
        check(re.search(r"jobs: 3 complete, 0 incomplete", out) is not None, "generate: per-job summary")

        # Protocol v2 (init on a bare socket) through the same scenarios.
        out = run_load(server, "upload-v2", "upload", "-n", "4", "-k", "3", "--binary", "--protocol", "v2", "--image", jpeg)
        t = rows(out)
        check(t.get("create") == (4, 0) and t.get("image") == (12, 0), f"upload v2: 4 inits, 12 acks: {t}")
        out = run_load(server, "lifecycle-v2", "lifecycle", "-n", "10", "-c", "2", "--protocol", "v2", "--image", jpeg)
        t = rows(out)
        for k in ("create", "connect", "image", "delete", "close"):
            check(t.get(k) == (10, 0), f"lifecycle v2: 10 x {k}: {t.get(k)}")
        out = run_load(server, "generate-v2", "generate", "-n", "2", "-k", "1", "--protocol", "v2", "--image", jpeg,
                       "--process-res", "70")
        check(rows(out).get("generate") == (2, 0), f"generate v2: 2 jobs complete: {rows(out).get('generate')}")

        # Every session da3-load made was deleted again.
        st = server.http("GET", "/ws/sessions")[1]
        check(st["stats"]["total_sessions"] == 0, f"sessions left behind: {st['stats']}")
    finally:
        server.cleanup()
        for name in os.listdir(tmp):
            os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)
    finish("test_load_smoke")


if __name__ == "__main__":
    main()
