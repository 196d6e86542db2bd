"""Faults injected at exactly the worst moments (common/fault.h: DA3_FAULT stops a process at a
named point, the test SIGKILLs it there), and a full disk. Each case checks that nothing already
acknowledged was lost or corrupted and that the client saw a clear error or a retried job
complete:
  worker_glb_write     a worker killed with half its result in the arena: retried, completes with
                       every image, no arena space leaked;
  worker_holding_lock  a worker killed holding the queue's robust mutex with a half-recorded
                       result: the lock is repaired ("died holding the queue lock"), the job
                       retried and completed, another session unharmed;
  front_image_write    the front killed with half an image in its temporary file: after a restart
                       the session has exactly the acknowledged images, byte for byte, no partial
                       or temporary file, and the next upload gets the next index;
  full disk            a small tmpfs as --data-dir: the --min-free-mb floor refuses first when
                       set; with the floor off the write fails with ENOSPC and the client hears
                       "storage is full", nothing partial remains, session.json and earlier
                       images are intact, generate works, uploads resume once space is freed.
Without permission to mount it prints "SKIP full-disk: <why>"."""
import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from harness import (BUILD, Server, check, connect, finish, generate, glb_info, make_image, recv_json, run,
                     send_image, session_with_images, wait_new_worker)

VALIDATE = os.path.join(BUILD, "tools", "validate_cost")


def fault_env(marker, points):
    env = dict(os.environ)
    env["DA3_FAULT"] = points
    env["DA3_FAULT_ONCE"] = marker
    return env


def proc_state(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def wait_stopped(srv, name, timeout=60):
    """The pid of the process stopped at fault point `name` (its log line, then state T), or None."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        pids = re.findall(r"\[(\d+)\] warn: fault point " + re.escape(name) + " reached: stopping for the test",
                          srv.log_text())
        for pid in map(int, pids):
            if proc_state(pid) == "T":
                return pid
        time.sleep(0.02)
    return None


def arena_used(srv):
    return srv.http("GET", "/status")[1]["arena"]["used_bytes"]


async def until_final(ws, timeout=120):
    progress = []
    while True:
        m = await recv_json(ws, timeout)
        if m["type"] != "progress":
            return progress, m
        progress.append(m)


def complete_ok(m, n, what):
    ok = check(m.get("type") == "complete" and m.get("image_count") == n, f"{what}: {str(m)[:200]}")
    if ok:
        glb = base64.b64decode(m["glb_base64"])
        _, points, _ = glb_info(glb)
        check(points > 0 and m["metadata"]["glb_size_bytes"] == len(glb), f"{what}: a whole GLB ({points} points)")


def sha(b):
    return hashlib.sha256(b).hexdigest()


def leftovers(folder):
    """Temporary files a write left in folder (write_file_atomic's NAME.tmp.TID)."""
    return [n for n in os.listdir(folder) if ".tmp." in n]


# ---- workers ---------------------------------------------------------------------------------

async def worker_faults(srv, marker):
    sid, ws = await session_with_images(srv, 3)
    os.unlink(marker)  # armed: the next point reached fires
    base = arena_used(srv)
    # (a) half a result in the arena: the first point reached in a job.
    await ws.send(json.dumps({"type": "generate"}))
    pid = wait_stopped(srv, "worker_glb_write")
    check(pid is not None, "a worker stops at worker_glb_write")
    if pid is None:
        return
    check(arena_used(srv) > base, "its result block is allocated while it is stopped")
    os.kill(pid, signal.SIGKILL)
    progress, m = await until_final(ws)
    check(any(p["stage"] == "retrying" for p in progress), f"the client hears of the retry: {[p['stage'] for p in progress]}")
    complete_ok(m, 3, "the job killed mid-GLB is retried and completes with every image")
    new = wait_new_worker(srv, pid)
    check(new is not None, "the killed worker is restarted")
    deadline = time.time() + 5
    while arena_used(srv) != base and time.time() < deadline:
        time.sleep(0.05)
    check(arena_used(srv) == base, f"no arena space leaked: {arena_used(srv)} bytes used, {base} before")

    # (b) the queue lock held with the result half recorded. The marker is taken by (a), so
    # re-arm it while this job's worker waits at the earlier point, then let it run on.
    os.unlink(marker)
    await ws.send(json.dumps({"type": "generate"}))
    pid = wait_stopped(srv, "worker_glb_write")
    check(pid is not None, "the second job stops at worker_glb_write first")
    if pid is None:
        return
    os.unlink(marker)
    os.kill(pid, signal.SIGCONT)
    deadline = time.time() + 30
    while time.time() < deadline and "fault point worker_holding_lock reached" not in srv.log_text():
        time.sleep(0.02)
    while time.time() < deadline and proc_state(pid) != "T":
        time.sleep(0.02)
    check(proc_state(pid) == "T" and "fault point worker_holding_lock reached" in srv.log_text(),
          "the worker stops at worker_holding_lock")
    os.kill(pid, signal.SIGKILL)
    progress, m = await until_final(ws)
    complete_ok(m, 3, "the job whose worker died holding the lock is retried and completes")
    check("died holding the queue lock" in srv.log_text(), "the lock's repair is logged")
    new = wait_new_worker(srv, pid)
    check(new is not None, "the worker is restarted")
    other, ws2 = await session_with_images(srv, 2, seed=40)
    _, m2 = await generate(ws2)
    complete_ok(m2, 2, "another session works after the repair")
    _, m = await generate(ws)
    complete_ok(m, 3, "the first session works again")
    deadline = time.time() + 5
    while arena_used(srv) != base and time.time() < deadline:
        time.sleep(0.05)
    check(arena_used(srv) == base, f"no arena space leaked after the repair: {arena_used(srv)} bytes")
    await ws.close()
    await ws2.close()


# ---- the front -------------------------------------------------------------------------------

async def front_fault(srv, marker):
    check(os.path.exists(marker), "disarmed while the first images are stored")
    sid = srv.create("process_res=70&num_max_points=2000")
    ws, _ = await connect(srv, sid)
    sent = [make_image(160, 120, seed=60 + i) for i in range(4)]
    for i in range(3):
        a = await send_image(ws, sent[i], filename=f"view{i}.jpg")
        check(a.get("type") == "ack" and a.get("image_count") == i + 1, f"upload {i} acknowledged: {a}")
    os.unlink(marker)  # armed: the next upload stops half written
    await ws.send(json.dumps({"type": "image", "filename": "never.jpg",
                              "data": base64.b64encode(sent[3]).decode()}))
    pid = wait_stopped(srv, "front_image_write")
    check(pid == srv.proc.pid, f"the front stops at front_image_write (pid {pid}, front {srv.proc.pid})")
    images = os.path.join(srv.data_dir, "sessions", sid, "images")
    part = leftovers(images)
    check(len(part) == 1 and 0 < os.path.getsize(os.path.join(images, part[0])) < len(sent[3]),
          f"half an image is in a temporary file: {part}")
    srv.stop(signal.SIGKILL)
    time.sleep(0.3)  # its workers die with it (PR_SET_PDEATHSIG)
    srv.start()
    st, info = srv.http("GET", f"/ws/session/{sid}")
    check(st == 200 and info.get("image_count") == 3, f"exactly the acknowledged images after the restart: {info}")
    names = sorted(os.listdir(images))
    want = sorted([f"{i:06d}.jpg" for i in range(3)] + [f"{i:06d}.meta.json" for i in range(3)])
    check(names == want, f"no partial, temporary or unacknowledged file is left: {names}")
    for i in range(3):
        path = os.path.join(images, f"{i:06d}.jpg")
        data = open(path, "rb").read()
        check(sha(data) == sha(sent[i]), f"image {i} is byte-identical to what was sent")
        r = subprocess.run([VALIDATE, path, "1"], capture_output=True, text=True)
        check(r.returncode == 0, f"image {i} decodes: {r.stderr.strip()}")
    ws, first = await connect(srv, sid)
    check(first.get("image_count") == 3, f"the socket sees 3 images: {first}")
    a = await send_image(ws, sent[3], filename="again.jpg")
    check(a.get("type") == "ack" and a.get("image_count") == 4 and a.get("image_path", "").startswith("000003"),
          f"the next upload gets the next index: {a}")
    check(sha(open(os.path.join(images, "000003.jpg"), "rb").read()) == sha(sent[3]), "and is stored whole")
    await ws.close()


async def faults():
    """One server for the three fault points: the marker file disarms them while it exists (a
    point fires only when it creates it), so each case arms by removing it just before the one
    action that reaches its point first."""
    tmp = tempfile.mkdtemp(prefix="da3-fault-")
    marker = os.path.join(tmp, "once")
    open(marker, "w").close()
    srv = Server(env=fault_env(marker, "worker_glb_write,worker_holding_lock,front_image_write"))
    try:
        t = time.time()
        await worker_faults(srv, marker)
        print(f"  worker faults: {time.time() - t:.1f} s", flush=True)
        t = time.time()
        await front_fault(srv, marker)
        print(f"  front fault: {time.time() - t:.1f} s", flush=True)
    finally:
        srv.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


# ---- a full disk -----------------------------------------------------------------------------

def mount_tmpfs(path, mb):
    """Mounts a tmpfs of mb MB on path; returns None or why it could not."""
    if os.geteuid() != 0:
        return "not root"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m", "tmpfs", path], capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr.strip() or f"mount exited {r.returncode}")


def session_files(srv, sid):
    d = os.path.join(srv.data_dir, "sessions", sid)
    return sorted(os.listdir(os.path.join(d, "images"))), open(os.path.join(d, "session.json"), "rb").read()


async def fill(srv, ws, images, start):
    """Uploads images until one is refused; returns (acked bytes list, the refusal)."""
    acked = []
    for i, img in enumerate(images):
        m = await send_image(ws, img, binary=True)
        if m.get("type") != "ack":
            return acked, m
        check(m.get("image_count") == start + len(acked) + 1, f"upload {i}: {m}")
        acked.append(img)
    return acked, None


async def full_disk():
    tmp = tempfile.mkdtemp(prefix="da3-disk-")
    mnt = os.path.join(tmp, "data")
    os.mkdir(mnt)
    why = mount_tmpfs(mnt, 5)
    if why:
        print(f"SKIP full-disk: {why}", flush=True)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    # Noisy 560x420 JPEGs at quality 100: about 200 KB each.
    images = [make_image(560, 420, seed=100 + i, quality=100) for i in range(40)]
    srv = None
    try:
        # With the floor at 2 MB the floor refuses before the disk is full.
        srv = Server("--min-free-mb", "2", data_dir=mnt)
        spare = srv.create("process_res=70&num_max_points=2000")
        ws, _ = await connect(srv, spare)
        for img in images[:4]:
            a = await send_image(ws, img, binary=True)
            check(a.get("type") == "ack", f"the spare session's uploads: {a}")
        await ws.close()
        sid = srv.create("process_res=70&num_max_points=2000")
        ws, _ = await connect(srv, sid)
        acked, refusal = await fill(srv, ws, images[4:], 0)
        msg = (refusal or {}).get("message", "")
        check(refusal and refusal.get("type") == "error" and "storage is nearly full" in msg and "not stored" in msg,
              f"the floor refuses first ({len(acked)} stored): {refusal}")
        check(not leftovers(os.path.join(mnt, "sessions", sid, "images")), "no partial file after the floor")
        await ws.close()
        srv.stop(signal.SIGKILL)  # (a clean stop takes seconds; a crash is as good a restart here)

        # The floor off: the next write hits ENOSPC.
        srv.args = ("--min-free-mb", "0")
        srv.start()
        ws, first = await connect(srv, sid)
        check(first.get("image_count") == len(acked), f"the session as stored: {first}")
        names_before, state_before = session_files(srv, sid)
        more, refusal = await fill(srv, ws, images[4 + len(acked):], len(acked))
        acked += more
        msg = (refusal or {}).get("message", "")
        check(refusal and refusal.get("type") == "error" and "storage is full" in msg and "not stored" in msg,
              f"ENOSPC is a clear storage error ({len(more)} more stored): {refusal}")
        names, state = session_files(srv, sid)
        check(not [n for n in names if ".tmp." in n], f"no partial file after ENOSPC: {names}")
        check(sorted(n for n in names if n.endswith(".jpg")) == [f"{i:06d}.jpg" for i in range(len(acked))],
              f"exactly the acknowledged images: {names}")
        check(state == state_before and json.loads(state)["session_id"] == sid, "session.json intact")
        images_dir = os.path.join(mnt, "sessions", sid, "images")
        check(all(sha(open(os.path.join(images_dir, f"{i:06d}.jpg"), "rb").read()) == sha(img)
                  for i, img in enumerate(acked)), "every stored image is what was sent")
        st, info = srv.http("GET", f"/ws/session/{sid}")
        check(st == 200 and info.get("image_count") == len(acked), f"the count is the acknowledged images: {info}")
        await ws.send(json.dumps({"type": "ping"}))
        check((await recv_json(ws, 10)).get("type") == "pong", "the socket stays usable")
        _, res = await generate(ws)
        complete_ok(res, len(acked), "generate works on what is stored with the disk full")
        # Deleting another session on the same file system makes room: uploads resume.
        check(srv.http("DELETE", f"/ws/session/{spare}")[0] == 200, "the spare session is deleted")
        a = await send_image(ws, images[-1], binary=True)
        check(a.get("type") == "ack" and a.get("image_count") == len(acked) + 1, f"uploads resume with room: {a}")
        check(srv.http("GET", f"/ws/session/{sid}")[1].get("status") in ("active", "completed"),
              "the session is usable")
        await ws.close()
    finally:
        if srv:
            srv.cleanup()
        r = subprocess.run(["umount", mnt], capture_output=True, text=True)
        check(r.returncode == 0, f"unmounted: {r.stderr.strip()}")
        shutil.rmtree(tmp, ignore_errors=True)


t0 = time.time()
for case in (faults, full_disk):
    t = time.time()
    run(case())
    print(f"  {case.__name__}: {time.time() - t:.1f} s", flush=True)
print(f"  total {time.time() - t0:.1f} s", flush=True)
finish("test_faults")
