"""WebSocket protocol v2 end to end on the real server and workers: the bare /ws/reconstruct
socket with its init message, the errors before and around init, auto_generate_after, resuming a
session by id, and v1 and v2 sharing sessions."""
import asyncio
import base64
import json

import websockets

from harness import (Server, check, connect, finish, generate, glb_info, make_image, raw_http, recv_json, run,
                     validate_glb)

srv = Server("--max-message-mb", "4")
NO_SESSION = {"type": "error", "message": "No session initialized. Send 'init' message first."}
V2_DEFAULTS = {"process_res": 504, "process_res_method": "upper_bound_resize", "conf_thresh_percentile": 10.0,
               "num_max_points": 100000, "show_cameras": True, "auto_generate_after": 0}


async def open_v2():
    return await websockets.connect(f"{srv.ws_base}/ws/reconstruct", max_size=None, ping_interval=None,
                                    open_timeout=30)


async def init(ws, **fields):
    await ws.send(json.dumps({"type": "init", **fields}))
    return await recv_json(ws)


async def image_b64(ws, data, filename=None):
    msg = {"type": "image", "data": base64.b64encode(data).decode()}
    if filename:
        msg["filename"] = filename
    await ws.send(json.dumps(msg))


async def before_init():
    ws = await open_v2()
    # The server sends nothing first: the first message is the answer to our ping.
    await ws.send(json.dumps({"type": "ping"}))
    m = await recv_json(ws)
    check(m == {"type": "pong", "session_id": None}, f"ping before init: {m}")
    await image_b64(ws, make_image())
    m = await recv_json(ws)
    check(m == NO_SESSION, f"image before init: {m}")
    await ws.send(make_image())
    m = await recv_json(ws)
    check(m == NO_SESSION, f"binary image before init: {m}")
    for t in ("generate", "finalize"):
        await ws.send(json.dumps({"type": t}))
        m = await recv_json(ws)
        check(m == NO_SESSION, f"{t} before init: {m}")
    await ws.send(json.dumps({"type": "bogus"}))
    m = await recv_json(ws)
    check(m == {"type": "error", "message": "Unknown message type: bogus"}, f"unknown type before init: {m}")

    # Every init value is validated like the HTTP create parameters; the socket stays usable.
    bad = [({"process_res": "abc"}, "process_res must be an integer"),
           ({"max_images": 0}, "max_images must be an integer in [1,"),
           ({"process_res_method": "stretch"}, "process_res_method must be one of"),
           ({"conf_thresh_percentile": 101}, "conf_thresh_percentile must be a number in [0, 100]"),
           ({"num_max_points": -5}, "num_max_points must be an integer"),
           ({"show_cameras": "maybe"}, "show_cameras must be a boolean"),
           ({"auto_generate_after": -1}, "auto_generate_after must be an integer in [0,")]
    for fields, why in bad:
        m = await init(ws, **fields)
        check(m.get("type") == "error" and m.get("message", "").startswith("Failed to create session: " + why),
              f"bad init {fields}: {m}")
    m = await init(ws, session_id=12)
    check(m == {"type": "error", "message": "Failed to resume session: session_id must be a string"}, f"numeric id: {m}")
    m = await init(ws, session_id="00000000-0000-4000-8000-000000000000")
    check(m == {"type": "error", "message": "Failed to resume session: Session 00000000-0000-4000-8000-000000000000 not found"},
          f"unknown id: {m}")

    # Defaults are the reference v2's (100 images, 100,000 points).
    m = await init(ws)
    check(m.get("type") == "session_created" and set(m) == {"type", "session_id", "max_images", "config"},
          f"session_created shape: {m}")
    check(m.get("max_images") == 100 and m.get("config") == V2_DEFAULTS, f"v2 defaults: {m}")
    sid = m.get("session_id")
    m2 = await init(ws)
    check(m2.get("type") == "error" and "already has session " + str(sid) in m2.get("message", ""), f"second init: {m2}")
    await ws.send(json.dumps({"type": "ping"}))
    m = await recv_json(ws)
    check(m == {"type": "pong", "session_id": sid}, f"ping after init: {m}")
    await ws.close()
    st, _ = srv.http("DELETE", f"/ws/session/{sid}")
    check(st == 200, f"delete the defaults session: {st}")


async def generate_and_resume():
    ws = await open_v2()
    m = await init(ws, max_images=6, process_res=140, num_max_points=4000, show_cameras=True)
    check(m.get("type") == "session_created" and m.get("max_images") == 6 and m["config"]["process_res"] == 140 and
          m["config"]["num_max_points"] == 4000, f"init with settings: {m}")
    sid = m["session_id"]
    await image_b64(ws, make_image(seed=31), "a.jpg")
    a = await recv_json(ws)
    check(a.get("type") == "ack" and a.get("image_count") == 1 and a.get("filename") == "a.jpg", f"ack 1: {a}")
    await ws.send(make_image(seed=32))
    a = await recv_json(ws)
    check(a.get("type") == "ack" and a.get("image_count") == 2, f"ack 2 (binary): {a}")
    progress, res = await generate(ws)
    check(len(progress) >= 3 and res.get("type") == "complete" and res.get("image_count") == 2, f"generate: {res.get('type')}")
    meta = res.get("metadata", {})
    check(len(meta.get("extrinsics", [])) == 2 and len(meta.get("intrinsics", [])) == 2, f"cameras in metadata: {list(meta)}")
    glb = base64.b64decode(res["glb_base64"])
    check(validate_glb(glb, "v2-generate") and glb_info(glb)[1] > 0, "v2 GLB validates and has points")

    # The session outlives the socket and is the same session for HTTP and v1.
    await ws.close()
    st, info = srv.http("GET", f"/ws/session/{sid}")
    check(st == 200 and info.get("image_count") == 2, f"v2 session over HTTP: {st} {info}")
    v1, first = await connect(srv, sid)
    check(first == {"type": "connected", "session_id": sid, "image_count": 2, "max_images": 6}, f"v1 connect to v2 session: {first}")
    await v1.send(json.dumps({"type": "init"}))
    m = await recv_json(v1)
    check(m.get("type") == "error" and m.get("message", "").startswith("Unknown message type: init"), f"init on v1: {m}")
    await v1.close()

    ws = await open_v2()
    m = await init(ws, session_id=sid, process_res=280)
    check(m == {"type": "error", "message": "Failed to resume session: process_res cannot be changed when resuming a session"},
          f"resume with other settings: {m}")
    m = await init(ws, session_id=sid, process_res=140)  # the same value is fine
    check(m.get("type") == "session_created" and m.get("session_id") == sid and m.get("resumed") is True and
          m.get("image_count") == 2 and m.get("config", {}).get("process_res") == 140, f"resume: {m}")
    await image_b64(ws, make_image(seed=33))
    a = await recv_json(ws)
    check(a.get("type") == "ack" and a.get("image_count") == 3, f"ack after resume: {a}")
    _, res = await generate(ws, finalize=True)
    check(res.get("type") == "complete" and res.get("metadata", {}).get("num_frames") == 3, f"finalize after resume: {res.get('type')}")
    await ws.close()


async def auto_generate():
    ws = await open_v2()
    m = await init(ws, process_res=140, num_max_points=3000, auto_generate_after=2)
    check(m.get("config", {}).get("auto_generate_after") == 2, f"init auto_generate_after: {m}")
    # Four images back to back: the run after image 2 must not hold up the acks of 3 and 4, and
    # they go into the next run (after 4).
    for i in range(4):
        await ws.send(make_image(seed=40 + i))
    seen = []
    deltas = []
    while len(deltas) < 2:
        m = await recv_json(ws, 300)
        seen.append(m["type"] if m["type"] != "ack" else f"ack{m['image_count']}")
        if m["type"] == "auto_generating":
            seen[-1] = f"auto{m['image_count']}"
            check(m == {"type": "auto_generating", "image_count": m["image_count"],
                        "message": f"Auto-generating after {m['image_count']} images"}, f"auto_generating shape: {m}")
        if m["type"] == "delta":
            deltas.append(m)
        check(m["type"] != "error", f"no error during auto-generation: {m}")
        if m["type"] == "error":
            break
    order = [t for t in seen if t != "progress"]
    check(order[:2] == ["ack1", "ack2"] and order[2] == "auto2", f"auto_generating right after ack 2: {order}")
    check("ack3" in order and "ack4" in order and order.index("ack4") < order.index("auto4"),
          f"acks 3, 4 then the next run: {order}")
    check(order.count("auto2") == 1 and order.count("auto4") == 1, f"one run per 2 images: {order}")
    for d, n in zip(deltas, (2, 4)):
        meta = d.get("metadata", {})
        check(d.get("image_count") == n and meta.get("auto_generated") is True and len(meta.get("extrinsics", [])) == n,
              f"auto delta {n}: image_count={d.get('image_count')} meta keys={sorted(meta)}")
        check(validate_glb(base64.b64decode(d["glb_base64"]), f"v2-auto{n}"), f"auto delta {n} GLB validates")
    # A client's own generate is not marked automatic.
    _, res = await generate(ws, incremental=True)
    check(res.get("type") == "delta" and "auto_generated" not in res.get("metadata", {}), f"manual delta: {res.get('metadata', {}).keys()}")
    await ws.close()


def not_found_paths():
    for path in ("/ws/reconstructX", "/ws/reconstructor/abc"):
        st, _, body = raw_http(srv, (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                                     "Connection: close\r\n\r\n").encode())
        check(st == 404, f"{path}: {st} {body[:80]!r}")


try:
    run(before_init())
    run(generate_and_resume())
    run(auto_generate())
    not_found_paths()
finally:
    srv.stop()
    srv.cleanup()
finish("test_ws_v2")
