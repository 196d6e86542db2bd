"""Process-level behaviour: a worker killed during generate (retried once, then a clear error),
a server restart that keeps sessions, idle expiry, several sessions at once over two workers."""
import asyncio
import json
import os
import signal
import time

from harness import (Server, check, connect, finish, generate, recv_json, run, session_with_images, wait_new_worker)


async def wait_stage(ws, stage):
    while True:
        m = await recv_json(ws, 120)
        if m["type"] == "progress" and m["stage"] == stage:
            return m
        if m["type"] != "progress":
            return m



async def worker_death():
    srv = Server()
    try:
        # bigger images so the job is still running when the worker is killed
        sid, ws = await session_with_images(srv, 3, res=504, size=(640, 480))
        pid = srv.worker_pids()[0]
        await ws.send(json.dumps({"type": "generate"}))
        m = await wait_stage(ws, "inference")
        check(m["type"] == "progress", f"job started: {m}")
        os.kill(pid, signal.SIGKILL)
        # the job is retried on the restarted worker and completes
        while True:
            m = await recv_json(ws, 300)
            if m["type"] != "progress":
                break
        check(m["type"] == "complete" and m["image_count"] == 3, f"retried job completes: {str(m)[:200]}")
        new_pid = wait_new_worker(srv, pid)
        check(new_pid is not None, "a dead worker is restarted")
        check("killed by signal 9" in srv.log_text(), "the death is logged")

        # killed twice: a clear error, the session and its images are kept
        await ws.send(json.dumps({"type": "generate"}))
        for attempt in range(2):
            m = await wait_stage(ws, "inference")
            check(m["type"] == "progress", f"attempt {attempt} started: {m}")
            pid = srv.worker_pids()[0] if srv.worker_pids() else None
            os.kill(pid, signal.SIGKILL)
            if attempt == 0:
                wait_new_worker(srv, pid)
        while True:
            m = await recv_json(ws, 300)
            if m["type"] != "progress":
                break
        check(m["type"] == "error" and "worker process died" in m["message"], f"error after two deaths: {m}")
        st, info = srv.http("GET", f"/ws/session/{sid}")
        check(st == 200 and info["image_count"] == 3 and info["status"] == "error", f"session kept: {info}")
        wait_new_worker(srv, pid)
        progress, res = await generate(ws)
        check(res["type"] == "complete", "the session works again afterwards")
        await ws.close()
    finally:
        srv.cleanup()


async def restart_keeps_sessions():
    srv = Server()
    try:
        sid, ws = await session_with_images(srv, 2)
        await ws.close()
        srv.stop()
        check(srv.proc.returncode == 0, f"clean shutdown exit code {srv.proc.returncode}")
        srv.start()
        st, info = srv.http("GET", f"/ws/session/{sid}")
        check(st == 200 and info["image_count"] == 2 and info["status"] == "active", f"after restart: {info}")
        ws, first = await connect(srv, sid)
        check(first["image_count"] == 2, "reconnect after restart sees the images")
        progress, res = await generate(ws)
        check(res["type"] == "complete" and res["image_count"] == 2, "generate after restart")
        await ws.close()
        # a crash (SIGKILL of the front) leaves a stale shm segment that the next start cleans up
        srv.stop(signal.SIGKILL)
        time.sleep(0.5)  # the orphaned worker exits through PR_SET_PDEATHSIG
        srv.port = srv.port
        srv.start()
        check(srv.http("GET", f"/ws/session/{sid}")[0] == 200, "session survives a front crash")
    finally:
        srv.cleanup()


async def expiry():
    srv = Server("--session-timeout", "1", "--cleanup-interval", "0.3")
    try:
        sid = srv.create()
        keep = srv.create()
        ws, _ = await connect(srv, keep)
        for _ in range(8):  # pings keep the connected session alive
            await ws.send(json.dumps({"type": "ping"}))
            await recv_json(ws)
            time.sleep(0.3)
        check(srv.http("GET", f"/ws/session/{sid}")[0] == 404, "idle session expired")
        check(not os.path.exists(os.path.join(srv.data_dir, "sessions", sid)), "expired session's files removed")
        check(srv.http("GET", f"/ws/session/{keep}")[0] == 200, "active session kept")
        await ws.close()
    finally:
        srv.cleanup()


async def concurrent_sessions():
    srv = Server(workers=2)
    try:
        sessions = [await session_with_images(srv, 2) for _ in range(4)]

        async def one(ws):
            progress, res = await generate(ws)
            return res

        results = await asyncio.gather(*(one(ws) for _, ws in sessions))
        check(all(r["type"] == "complete" for r in results), "every session completes")
        check(all(r["metadata"]["session_id"] == sid for r, (sid, _) in zip(results, sessions)),
              "each result goes to its own session")
        st = srv.http("GET", "/status")[1]
        done = [w["jobs_done"] for w in st["workers"]["list"]]
        check(sum(done) == 4 and min(done) >= 1, f"both workers took jobs: {done}")
        for _, ws in sessions:
            await ws.close()
    finally:
        srv.cleanup()


run(worker_death())
run(restart_keeps_sessions())
run(expiry())
run(concurrent_sessions())
finish("test_resilience")
