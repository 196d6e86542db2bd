"""Streaming sessions end to end on the real server and worker (demo model, process_res 140):
chunks run as images arrive, each delta carries only its chunk's new points and every camera so
far (earlier ones unchanged), finalize is the whole session; a worker killed mid-chunk and a
server restart mid-session lose nothing; one chunk covering every image equals a plain
generate; the streaming options are validated."""
import asyncio
import base64
import json
import os
import signal

from harness import (Server, check, connect, finish, generate, glb_info, make_image, recv_json, run, send_image,
                     validate_glb, wait_new_worker)

srv = Server("--max-message-mb", "16")
IMG = dict(w=140, h=105)


def image(i):
    return make_image(IMG["w"], IMG["h"], seed=100 + i)


async def read_until(ws, want, timeout=300):
    """Messages up to and including the first of type `want` (errors end it too)."""
    got = []
    while True:
        m = await recv_json(ws, timeout)
        got.append(m)
        if m["type"] in (want, "error"):
            return got


def options_are_validated():
    for q, why in (("streaming=true&chunk_size=1", "chunk_size must be an integer in [2,"),
                   ("streaming=true&chunk_size=8&overlap=8", "overlap must be an integer in [1, chunk_size - 1]"),
                   ("streaming=maybe", "streaming must be a boolean"),
                   ("streaming=true&auto_generate_after=4", "auto_generate_after cannot be combined with streaming")):
        st, js = srv.http("POST", "/ws/session/create?" + q)
        check(st == 422 and js.get("detail", "").startswith(why), f"create {q}: {st} {js}")
    st, js = srv.http("POST", "/ws/session/create?streaming=true&chunk_size=10")
    cfg = js.get("config", {})
    check(st == 200 and cfg.get("streaming") is True and cfg.get("chunk_size") == 10 and cfg.get("overlap") == 5,
          f"overlap defaults to chunk_size/2: {js}")
    srv.http("DELETE", f"/ws/session/{js.get('session_id')}")
    st, js = srv.http("POST", "/ws/session/create")
    check("streaming" not in js.get("config", {}), f"a plain session's config has no streaming keys: {js}")
    srv.http("DELETE", f"/ws/session/{js.get('session_id')}")


def cameras(meta):
    return meta.get("extrinsics", []), meta.get("intrinsics", [])


async def forty_images():
    """40 images at chunk_size 16, overlap 8: chunks end at 8, 16, 24, 32, 40, one delta each."""
    # Made first: under the sanitizers each make_jpeg run takes seconds, and a client that sends
    # for a minute without reading is (rightly) dropped by the server's send timeout.
    images = [image(i) for i in range(40)]
    sid = srv.create("process_res=140&streaming=true&chunk_size=16&overlap=8")
    ws, _ = await connect(srv, sid)
    for data in images:
        await ws.send(data)
    deltas, acks = [], 0
    while len(deltas) < 5:
        m = await recv_json(ws, 300)
        if m["type"] == "ack":
            acks += 1
        elif m["type"] == "delta":
            deltas.append(m)
        elif m["type"] == "error":
            check(False, f"error while streaming: {m}")
            break
    while acks < 40:
        m = await recv_json(ws, 300)
        acks += m["type"] == "ack"
        check(m["type"] in ("ack", "progress"), f"only acks/progress after the last delta: {m['type']}")
    ends = [d.get("metadata", {}).get("stream", {}).get("end") for d in deltas]
    check(ends == [8, 16, 24, 32, 40], f"one delta per chunk, in order: ends {ends}")
    total = 0
    prev_ext = []
    for k, d in enumerate(deltas):
        meta = d["metadata"]
        glb = base64.b64decode(d["glb_base64"])
        _, points, frusta = glb_info(glb)
        check(validate_glb(glb, f"stream-delta{k}"), f"delta {k}: GLB validates")
        check(points == meta.get("num_points") and points > 0, f"delta {k}: {points} points (metadata {meta.get('num_points')})")
        st = meta.get("stream", {})
        new = st.get("end", 0) - st.get("new_start", 0)
        check(new == 8 and frusta == new, f"delta {k}: {new} new views, {frusta} frustums (new views only)")
        ext, intr = cameras(meta)
        check(len(ext) == st.get("end") and len(intr) == st.get("end"), f"delta {k}: a camera for every view so far")
        check(ext[:len(prev_ext)] == prev_ext, f"delta {k}: the earlier views' cameras are unchanged")
        prev_ext = ext
        total += points
    progress, fin = await generate(ws, finalize=True)
    meta = fin.get("metadata", {})
    check(fin.get("type") == "complete" and meta.get("num_frames") == 40, f"finalize: {fin.get('type')} {meta.get('num_frames')}")
    glb = base64.b64decode(fin.get("glb_base64", ""))
    _, points, frusta = glb_info(glb)
    check(validate_glb(glb, "stream-final"), "finalize GLB validates")
    check(points == total, f"finalize holds every delta's points: {points} vs sum {total}")
    check(frusta == 40 and cameras(meta)[0] == prev_ext, f"finalize: 40 frustums ({frusta}), the same cameras")
    await ws.close()
    srv.http("DELETE", f"/ws/session/{sid}")


async def survives_crash_and_restart():
    """kill -9 of the worker during a chunk, then a server restart between chunks."""
    sid = srv.create("process_res=140&streaming=true&chunk_size=6&overlap=3")
    ws, _ = await connect(srv, sid)
    for i in range(3):
        a = await send_image(ws, image(50 + i), binary=True)
        check(a.get("type") == "ack", f"ack {i}: {a}")
    # The third ack started chunk 0 (3 waiting = chunk_size - overlap); kill its worker once it
    # reports from inside the run (the first progress is the front's own, before any claim).
    while True:
        m = await recv_json(ws, 300)
        if m["type"] != "progress" or m.get("stage") != "loading_model":
            break
    check(m.get("type") == "progress", f"the worker reports the chunk: {m}")
    pid = srv.worker_pids()[0]
    os.kill(pid, signal.SIGKILL)
    got = await read_until(ws, "delta")
    check(got[-1]["type"] == "delta" and got[-1]["metadata"]["stream"]["end"] == 3,
          f"chunk 0 completes after the worker died: {[m['type'] for m in got]}")
    check(any(m.get("stage") == "retrying" for m in got), "the client was told the chunk is retried")
    wait_new_worker(srv, pid)
    ext0 = got[-1]["metadata"]["extrinsics"]
    for i in range(3, 5):
        a = await send_image(ws, image(50 + i), binary=True)
        check(a.get("type") == "ack", f"ack {i}: {a}")
    await ws.close()
    # Restart with 2 images waiting (below a chunk): the stream resumes where it was.
    srv.stop()
    srv.start()
    srv.wait_ready()
    st, info = srv.http("GET", f"/ws/session/{sid}")
    check(st == 200 and info.get("image_count") == 5 and info.get("stream", {}).get("done") == 3,
          f"after restart: {info}")
    ws, first = await connect(srv, sid)
    a = await send_image(ws, image(55), binary=True)
    check(a.get("image_count") == 6, f"ack after restart: {a}")
    got = await read_until(ws, "delta")
    d = got[-1]
    check(d["type"] == "delta" and d["metadata"]["stream"]["new_start"] == 3 and d["metadata"]["stream"]["end"] == 6,
          f"the stream continues at image 3 after the restart: {d.get('metadata', {}).get('stream')}")
    check(d["metadata"]["extrinsics"][:3] == ext0, "cameras from before the restart are unchanged")
    await ws.send(image(56))
    await read_until(ws, "ack")
    _, fin = await generate(ws, finalize=True)
    check(fin.get("type") == "complete" and fin.get("metadata", {}).get("num_frames") == 7,
          f"finalize has every image (7): {fin.get('metadata', {}).get('num_frames')}")
    await ws.close()
    srv.http("DELETE", f"/ws/session/{sid}")


async def one_chunk_equals_generate():
    results = []
    for q in ("process_res=140&streaming=true&chunk_size=16", "process_res=140"):
        sid = srv.create(q)
        ws, _ = await connect(srv, sid)
        for i in range(5):  # fewer than chunk_size - overlap: no chunk until generate
            a = await send_image(ws, image(80 + i), binary=True)
            check(a.get("type") == "ack", f"ack: {a}")
        _, res = await generate(ws)
        results.append(res)
        if "streaming" in q:
            _, again = await generate(ws)
            check(again.get("type") == "error" and again.get("message", "").startswith("No new images since the last chunk"),
                  f"a second generate with nothing new: {again}")
        await ws.close()
        srv.http("DELETE", f"/ws/session/{sid}")
    s, p = results
    check(s.get("type") == "delta" and p.get("type") == "complete", f"types: {s.get('type')} {p.get('type')}")
    gs, gp = base64.b64decode(s.get("glb_base64", "")), base64.b64decode(p.get("glb_base64", ""))
    check(glb_info(gs)[1] == glb_info(gp)[1] and gs == gp, f"one chunk = plain generate: {glb_info(gs)[1]} vs {glb_info(gp)[1]} points, "
          f"GLB {'identical' if gs == gp else 'different'}")


try:
    options_are_validated()
    run(forty_images())
    run(one_chunk_equals_generate())
    run(survives_crash_and_restart())
finally:
    srv.stop()
    srv.cleanup()
finish("test_streaming")
