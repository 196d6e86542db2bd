"""WebSocket protocol v1 end to end on the real server and workers: every client message, every
error path, results validated by the Khronos glTF validator."""
import asyncio
import base64
import json
import math
import os

import websockets

from harness import (Server, check, connect, finish, generate, glb_info, make_image, recv_json, run,
                     send_image, validate_glb)

srv = Server("--max-message-mb", "1")


async def main():
    # unknown session: the reference's error, then a normal close
    ws = await websockets.connect(f"{srv.ws_base}/ws/reconstruct/00000000-0000-4000-8000-000000000000",
                                  max_size=None, ping_interval=None)
    m = await recv_json(ws)
    check(m == {"type": "error", "message": "Session 00000000-0000-4000-8000-000000000000 not found"}, f"unknown: {m}")
    try:
        await asyncio.wait_for(ws.recv(), 10)
        check(False, "unknown session socket should close")
    except websockets.ConnectionClosed as e:
        check(e.code == 1000, f"close code 1000 for unknown session, got {e.code}")

    sid = srv.create("max_images=5&process_res=140&num_max_points=5000")
    ws, first = await connect(srv, sid)
    check(first == {"type": "connected", "session_id": sid, "image_count": 0, "max_images": 5}, f"connected: {first}")

    m = await generate(ws)
    check(m[1] == {"type": "error", "message": "No images in session"}, f"generate with no images: {m}")

    # deeply nested JSON (Jansson recurses per level; a few thousand levels used to crash the
    # front): refused with a message before the parser runs, and the socket stays usable
    for text in ("[" * 5000, '{"a":' * 5000 + "1" + "}" * 5000, '{"type":"ping","x":' + "[" * 100000 + "]" * 100000 + "}"):
        await ws.send(text)
        m = await recv_json(ws)
        check(m.get("type") == "error" and "nested deeper" in m.get("message", ""), f"deep JSON refused: {m}")
    await ws.send(json.dumps({"type": "ping"}))
    check((await recv_json(ws)).get("type") == "pong", "socket usable after deep JSON")

    # base64 JSON image with a hostile filename: stored under a server-chosen name
    a = await send_image(ws, make_image(140, 105, 1), filename="../../evil.jpg")
    check(a.get("type") == "ack" and a.get("image_count") == 1 and a.get("session_id") == sid
          and a.get("image_path") == "000000.jpg", f"ack 1: {a}")
    check(a.get("filename") == "../../evil.jpg", "display name kept as text")
    check(not os.path.exists(os.path.join(srv.data_dir, "evil.jpg"))
          and not os.path.exists(os.path.join(srv.data_dir, "sessions", "evil.jpg")), "no traversal")
    # binary frame, PNG
    a = await send_image(ws, make_image(140, 105, 2, "png"), binary=True)
    check(a.get("type") == "ack" and a.get("image_count") == 2 and a.get("image_path") == "000001.png", f"ack 2: {a}")
    # data URL prefix is accepted
    url = "data:image/jpeg;base64," + base64.b64encode(make_image(140, 105, 3)).decode()
    await ws.send(json.dumps({"type": "image", "data": url, "filename": "c.jpg"}))
    a = await recv_json(ws)
    check(a.get("type") == "ack" and a.get("image_count") == 3, f"data URL ack: {a}")

    # bad images: each an error, nothing stored
    bad = [({"type": "image"}, "Failed to process image: Missing 'data' field"),
           ({"type": "image", "data": ""}, "Failed to process image: Missing 'data' field"),
           ({"type": "image", "data": "!!!notbase64"}, "Failed to process image: invalid base64"),
           ({"type": "image", "data": base64.b64encode(b"hello world").decode()}, "Failed to process image: Invalid image data"),
           ({"type": "image", "data": base64.b64encode(make_image(140, 105, 4)[:600]).decode()},
            "Failed to process image: Invalid image data")]
    for msg, prefix in bad:
        await ws.send(json.dumps(msg))
        e = await recv_json(ws)
        check(e.get("type") == "error" and e.get("message", "").startswith(prefix), f"{prefix!r} -> {e}")
    await ws.send(b"\x89PNG\r\n\x1a\nbroken")
    e = await recv_json(ws)
    check(e.get("type") == "error" and "Invalid image data" in e.get("message", ""), f"binary garbage: {e}")

    # malformed messages keep the socket open
    await ws.send("{not json")
    e = await recv_json(ws)
    check(e["type"] == "error" and e["message"].startswith("Invalid message format"), f"bad JSON: {e}")
    await ws.send("[1,2]")
    e = await recv_json(ws)
    check(e["type"] == "error" and "JSON object" in e["message"], f"non-object: {e}")
    await ws.send(json.dumps({"type": "dance"}))
    e = await recv_json(ws)
    check(e == {"type": "error", "message": "Unknown message type: dance"}, f"unknown type: {e}")
    await ws.send(json.dumps({"hello": 1}))
    e = await recv_json(ws)
    check(e == {"type": "error", "message": "Unknown message type: None"}, f"missing type: {e}")
    await ws.send(json.dumps({"type": "ping"}))
    p = await recv_json(ws)
    check(p == {"type": "pong", "session_id": sid}, f"pong: {p}")

    # a message in several WebSocket frames is reassembled
    text = json.dumps({"type": "image", "data": base64.b64encode(make_image(140, 105, 5)).decode(), "filename": "frag.jpg"})
    await ws.send([text[:100], text[100:5000], text[5000:]])
    a = await recv_json(ws)
    check(a.get("type") == "ack" and a.get("image_count") == 4, f"fragmented ack: {a}")

    st, info = srv.http("GET", f"/ws/session/{sid}")
    check(info["image_count"] == 4, "bad images stored nothing")

    # generate: progress in order, then complete with a valid GLB and the reference's metadata
    progress, res = await generate(ws)
    stages = [(p["stage"], p["progress"]) for p in progress]
    check(stages[:1] == [("loading_model", 0.1)], f"first progress: {stages}")
    check(("inference", 0.3) in stages and ("exporting", 0.7) in stages, f"stages: {stages}")
    check([p["progress"] for p in progress] == sorted(p["progress"] for p in progress), "progress increases")
    check(any(p["message"] == "Processing 4 images..." for p in progress), "reference progress text")
    check(res.get("type") == "complete" and res.get("image_count") == 4, f"complete: {str(res)[:200]}")
    glb = base64.b64decode(res["glb_base64"])
    meta = res["metadata"]
    check(meta["num_frames"] == 4 and meta["session_id"] == sid and meta["glb_size_bytes"] == len(glb), "metadata basics")
    check(len(meta["intrinsics"]) == 4 and all(len(k) == 3 and all(len(r) == 3 for r in k) for k in meta["intrinsics"]),
          "intrinsics N x 3 x 3")
    check(len(meta["extrinsics"]) == 4 and all(len(k) == 3 and all(len(r) == 4 for r in k) for k in meta["extrinsics"]),
          "extrinsics N x 3 x 4")
    check(meta["model"]["trained"] is False and "UNTRAINED" in meta["model"]["warning"], "result labelled untrained")
    gltf, points, lines = glb_info(glb)
    check(0 < points <= 5000 and lines == 4, f"GLB has {points} points (cap 5000) and {lines} frustums")
    check("hf_alignment" in gltf["scenes"][0].get("extras", {}), "hf_alignment in scene extras")
    check(validate_glb(glb, "ws-complete"), "GLB passes the Khronos validator")

    # the same images give the same GLB (fixed-seed downsampling)
    progress, res2 = await generate(ws)
    check(res2.get("glb_base64") == res["glb_base64"], "deterministic result")

    # incremental -> delta; while it runs the socket answers pings
    await ws.send(json.dumps({"type": "generate", "incremental": True}))
    await ws.send(json.dumps({"type": "ping"}))
    await ws.send(json.dumps({"type": "generate"}))
    seen = []
    while True:
        m = await recv_json(ws)
        seen.append(m["type"] if m["type"] != "error" else "error:" + m["message"])
        if m["type"] in ("delta", "complete"):
            break
    check("pong" in seen and seen.index("pong") < len(seen) - 1, f"pong before the result: {seen}")
    check(any(s.startswith("error:A reconstruction is already running") for s in seen), f"busy error: {seen}")
    check(seen[-1] == "delta", f"incremental gives delta: {seen}")

    # image limit
    a = await send_image(ws, make_image(140, 105, 6))
    check(a["type"] == "ack" and a["image_count"] == 5, "5th image accepted")
    e = await send_image(ws, make_image(140, 105, 7))
    check(e == {"type": "error", "message": "Failed to process image: Session has reached maximum image limit (5)"}, f"limit: {e}")

    # finalize
    progress, res = await generate(ws, finalize=True)
    check(progress and progress[0]["stage"] == "finalizing" and progress[0]["progress"] == 0.1, f"finalize progress {progress[:1]}")
    check(res["type"] == "complete" and res["image_count"] == 5, "finalize complete")
    check(srv.http("GET", f"/ws/session/{sid}")[1]["status"] == "completed", "status completed after finalize")

    await known_cameras()

    # a message over --max-message-mb closes with 1009; stored images survive
    await ws.send(b"\xff" * (1536 * 1024))
    e = await recv_json(ws)
    check(e["type"] == "error" and "Message too large" in e["message"], f"too large: {e}")
    try:
        await asyncio.wait_for(ws.recv(), 10)
        check(False, "socket should close after an oversized message")
    except websockets.ConnectionClosed as ex:
        check(ex.code == 1009, f"close code 1009, got {ex.code}")

    # reconnect by id: images kept
    ws, first = await connect(srv, sid)
    check(first["type"] == "connected" and first["image_count"] == 5, f"reconnect: {first}")
    # a second connection takes over the session; the first is told and closed
    ws2, first2 = await connect(srv, sid)
    m = await recv_json(ws)
    check(m["type"] == "error" and "took over" in m["message"], f"takeover notice: {m}")
    progress, res = await generate(ws2)
    check(res["type"] == "complete", "results go to the newest connection")
    await ws2.close()

    # delete while connected: the socket is told and closed
    ws3, _ = await connect(srv, sid)
    srv.http("DELETE", f"/ws/session/{sid}")
    m = await recv_json(ws3)
    check(m == {"type": "error", "message": "Session deleted"}, f"delete notice: {m}")

def camera(i):
    """World-to-camera 4x4 for camera i on a circle of radius 3 around the origin, facing it."""
    a = 0.25 * i
    r = [[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]]
    c = [3 * math.sin(a), 0.1 * i, -3 * math.cos(a)]
    t = [-sum(r[row][k] * c[k] for k in range(3)) for row in range(3)]
    return [r[row] + [t[row]] for row in range(3)] + [[0, 0, 0, 1]]


async def known_cameras():
    """Images sent with extrinsics + intrinsics: the pose-conditioned network, the answer in the
    client's own cameras; a session takes cameras with every image or none."""
    sid = srv.create("process_res=140&num_max_points=5000")
    ws, _ = await connect(srv, sid)
    k = [[100, 0, 70], [0, 100, 52.5], [0, 0, 1]]

    async def send(i, **fields):
        msg = {"type": "image", "data": base64.b64encode(make_image(140, 105, 20 + i)).decode(), **fields}
        await ws.send(json.dumps(msg))
        return await recv_json(ws)

    a = await send(0, extrinsics=camera(0), intrinsics=k)
    check(a.get("type") == "ack" and a.get("image_count") == 1 and a.get("camera") is True, f"camera ack: {a}")
    e = await send(1)
    check(e["type"] == "error" and "send them with this image too" in e["message"], f"mix refused: {e}")
    e = await send(1, extrinsics=None, intrinsics=None)  # null is "not given"
    check(e["type"] == "error" and "send them with this image too" in e["message"], f"null camera: {e}")
    rotated = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "images", "orient_6.jpg"), "rb").read()
    await ws.send(json.dumps({"type": "image", "data": base64.b64encode(rotated).decode(), "extrinsics": camera(1), "intrinsics": k}))
    e = await recv_json(ws)
    check(e["type"] == "error" and "EXIF orientation 6" in e["message"], f"rotated JPEG with a camera: {e}")
    e = await send_image(ws, make_image(140, 105, 30), binary=True)
    check(e["type"] == "error" and "known cameras" in e["message"], f"binary frame in a camera session: {e}")
    skew = [row[:] for row in camera(1)]
    skew[0][0] *= 1.5
    for fields, words in (({"extrinsics": skew, "intrinsics": k}, "rotation"),
                          ({"extrinsics": camera(1)}, "both"),
                          ({"extrinsics": camera(1), "intrinsics": [[100, 0, 70], [0, 100, 52.5]]}, "3x3")):
        e = await send(1, **fields)
        check(e["type"] == "error" and e["message"].startswith("Failed to process image:") and words in e["message"],
              f"bad camera ({words}): {e}")
    a = await send(1, extrinsics=camera(1)[:3], intrinsics=k)  # 3x4 is accepted too
    a = await send(2, extrinsics=camera(2), intrinsics=k)
    check(a.get("image_count") == 3, f"three images with cameras: {a}")

    progress, res = await generate(ws)
    check(res.get("type") == "complete", f"known-camera generate: {str(res)[:300]}")
    meta = res["metadata"]
    check(meta.get("known_cameras") is True and meta.get("pose_scale", 0) > 0, "metadata says cameras were used")
    for i in range(3):
        want = camera(i)[:3]
        got = meta["extrinsics"][i]
        check(all(abs(got[r][c] - want[r][c]) < 1e-6 for r in range(3) for c in range(4)),
              f"extrinsics {i} are the client's: {got}")
    # 140x105 at process_res 140: 105 rows become 112 (nearest multiple of 14), so fy and cy scale by 112/105.
    want_k = [[100, 0, 70], [0, 100 * 112 / 105, 56], [0, 0, 1]]
    check(all(abs(meta["intrinsics"][0][r][c] - want_k[r][c]) < 1e-4 for r in range(3) for c in range(3)),
          f"intrinsics follow the resize: {meta['intrinsics'][0]}")
    check(validate_glb(base64.b64decode(res["glb_base64"]), "ws-known-cameras"), "known-camera GLB validates")
    await ws.close()


async def takeover_chain(n):
    """Reconnect storms (several at once, to keep the handler threads busy): each socket is opened
    the moment the previous one's greeting arrives, so the previous open may still be attaching
    on another handler thread. The newest socket must never be the one told "took over", and at
    the end it holds the session. A stress, not a reproducer: make soak found the old socket
    winning about once in 300 takeovers on a loaded machine, this passes on an idle one with the
    old code too; the ordering rule itself is test_attach's."""
    sid = srv.create("process_res=70")
    wrong = 0
    socks = []
    prev, _ = await connect(srv, sid)
    for _ in range(n):
        ws, first = await connect(srv, sid)
        socks.append(asyncio.create_task(prev.close()))  # the server closes it too (taken over)
        prev = ws
        try:  # the newest socket must not hear a takeover notice
            m = await asyncio.wait_for(ws.recv(), 0.005)
            wrong += "took over" in m
        except asyncio.TimeoutError:
            pass
    await prev.send(json.dumps({"type": "ping"}))
    m = await recv_json(prev, 10)
    while m.get("type") == "error":  # a late notice would come before the pong
        wrong += 1
        m = await recv_json(prev, 10)
    check(wrong == 0 and m.get("type") == "pong" and m.get("session_id") == sid,
          f"{n} chained takeovers: the newest socket was told it lost {wrong} times; last: {m}")
    await asyncio.gather(*socks)
    await prev.close()


async def takeover_chains(chains=6):
    global srv
    main_srv, srv = srv, Server("--client-http-rate", "0", "--max-ws-per-client", "0")  # one address, 900 upgrades
    try:
        await asyncio.gather(*(takeover_chain(150) for _ in range(chains)))
    finally:
        srv.cleanup()
        srv = main_srv


try:
    run(main())
    run(takeover_chains())
finally:
    srv.cleanup()
finish("test_ws_protocol")
