"""Process lifetimes (issue 7, items 5 and 6): a second da3-server on a running one's port is
refused without harming the running one (whose workers can still be restarted), workers die with
a front killed by SIGKILL in the middle of a job and a restarted front finds none of them, and a
worker whose front is already gone when it starts exits at once."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

from harness import (BUILD, REPO, SERVER, Server, check, connect, finish, generate, recv_json, run,
                     session_with_images, wait_new_worker)

WORKER = os.path.join(BUILD, "da3-worker")


def pid_alive(pid):
    """True while pid exists and is not a zombie (an orphan's zombie may wait for its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_gone(pid, timeout):
    """Seconds until pid is gone, or None if it is still alive after timeout."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if not pid_alive(pid):
            return time.time() - t0
        time.sleep(0.02)
    return None




async def second_server_same_port():
    a = Server()
    try:
        data_b = tempfile.mkdtemp(prefix="da3-it-b-")
        cmd = [SERVER, "--host", "127.0.0.1", "--port", str(a.port), "--workers", "1", "--model", "demo",
               "--data-dir", data_b, "--web-dir", os.path.join(REPO, "web"), "--worker-threads", "1"]
        try:
            b = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            out, rc = b.stdout + b.stderr, b.returncode
        except subprocess.TimeoutExpired as e:
            out, rc = str(e.stdout or "") + str(e.stderr or ""), None
        check(rc is not None and rc != 0, f"a second server on port {a.port} exits non-zero (rc {rc})")
        # It fails at listen(), before touching the running server's segment or workers.
        check("cannot listen" in out and "another da3-server running on this port" in out,
              f"and says why: {out.strip()[-300:]}")
        shutil.rmtree(data_b, ignore_errors=True)
        # A is untouched: its segment still works, so a killed worker is restarted and jobs run.
        check(a.proc.poll() is None, "the running server is still up")
        pid = a.worker_pids()[0]
        os.kill(pid, signal.SIGKILL)
        new_pid = wait_new_worker(a, pid)
        check(new_pid is not None and new_pid != pid, "the running server restarts its killed worker")
        sid, ws = await session_with_images(a, 2)
        _, res = await generate(ws)
        check(res["type"] == "complete" and res["image_count"] == 2, f"and completes a generate: {str(res)[:200]}")
        await ws.close()
    finally:
        a.cleanup()


async def workers_die_with_front():
    srv = Server()
    try:
        # big enough images that the job is still running when the front is killed
        sid, ws = await session_with_images(srv, 3, res=504, size=(640, 480))
        worker = srv.worker_pids()[0]
        await ws.send(json.dumps({"type": "generate"}))
        while True:
            m = await recv_json(ws, 120)
            if m["type"] != "progress" or m["stage"] == "inference":
                break
        check(m["type"] == "progress", f"the job is running: {m}")
        front = srv.proc.pid
        srv.stop(signal.SIGKILL)
        took = wait_gone(worker, 2.0)
        check(took is not None, f"worker {worker} is gone within 2 s of its front's SIGKILL")
        try:
            await ws.close()
        except Exception:
            pass
        if took is None:  # do not let it compete with the next front
            os.kill(worker, signal.SIGKILL)
        # A new front on the same port and data dir works, and none of the old workers remain.
        srv.start()
        check(srv.proc.pid != front, "a new front runs")
        check(not pid_alive(worker), "the old worker did not come back")
        check(worker not in srv.worker_pids(), "the new front has its own worker")
        ws, first = await connect(srv, sid)
        check(first.get("image_count") == 3, f"the session survived: {first}")
        _, res = await generate(ws)
        check(res["type"] == "complete" and res["image_count"] == 3, f"generate after the restart: {str(res)[:200]}")
        await ws.close()
    finally:
        srv.cleanup()


def orphan_worker_exits():
    # a pid that is certainly not this worker's parent: a process that has already exited
    gone = subprocess.Popen(["true"])
    gone.wait()
    t0 = time.time()
    r = subprocess.run([WORKER, "--shm", "/da3-it-no-such-segment", "--index", "0", "--front-pid", str(gone.pid),
                        "--model", "demo"], capture_output=True, text=True, timeout=60)
    took = time.time() - t0
    check(r.returncode != 0 and took < 5, f"a worker whose front is gone exits at once (rc {r.returncode}, {took:.1f} s)")
    check("is gone" in r.stderr, f"and says so: {r.stderr.strip()[-200:]}")


run(second_server_same_port())
run(workers_die_with_front())
orphan_worker_exits()
finish("test_lifecycle")
