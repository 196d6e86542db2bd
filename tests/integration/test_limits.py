"""Limits with their errors: the free-disk floor (--min-free-mb: an upload below it is refused
before anything is written, what is stored is untouched, uploads resume once there is room; here
a restart with a lower floor, since the test cannot fill the real disk; test_faults.py fills a
real tmpfs), a session's stored bytes (--max-session-mb: refused with the figures, nothing lost,
counted again from the files after a restart), and the per-client-address limits (WebSockets,
sessions, messages and bytes per second; --trust-proxy addresses)."""
import asyncio
import hashlib
import json
import os
import signal
import time

import websockets

from harness import Server, check, connect, finish, make_image, recv_json, run, send_image

srv = Server()


async def main():
    sid = srv.create("process_res=70")
    ws, _ = await connect(srv, sid)
    a = await send_image(ws, make_image(70, 52, seed=1), binary=True)
    check(a.get("type") == "ack" and a.get("image_count") == 1, f"first upload with room: {a}")
    await ws.close()
    # A floor far above any disk's free space: every upload is "the disk is nearly full".
    srv.stop()
    srv.args = ("--min-free-mb", str(1 << 30))
    srv.start()
    ws, first = await connect(srv, sid)
    check(first.get("image_count") == 1, f"the stored image survived the restart: {first}")
    m = await send_image(ws, make_image(70, 52, seed=2), binary=True)
    check(m.get("type") == "error" and "storage is nearly full" in m.get("message", "") and "not stored" in m.get("message", ""),
          f"upload refused below the floor: {m}")
    st, info = srv.http("GET", f"/ws/session/{sid}")
    check(st == 200 and info.get("image_count") == 1, f"nothing was stored or lost: {info}")
    await ws.send("{\"type\":\"ping\"}")
    pong = await asyncio.wait_for(ws.recv(), 10)
    check("pong" in pong, "the socket stays usable")
    await ws.close()
    srv.stop()
    srv.args = ("--min-free-mb", "0")
    srv.start()
    ws, _ = await connect(srv, sid)
    a = await send_image(ws, make_image(70, 52, seed=3), binary=True)
    check(a.get("type") == "ack" and a.get("image_count") == 2, f"uploads resume with room: {a}")
    await ws.close()


async def session_bytes():
    """--max-session-mb 1 with ~250 KB images: the ones that fit are stored, the next is refused.
    Restarts here are kill -9 (a clean stop takes seconds; a crash is the harder case anyway)."""
    srv.stop(signal.SIGKILL)
    srv.args = ("--max-session-mb", "1")
    srv.start()
    images = [make_image(560, 420, seed=200 + i, quality=100) for i in range(6)]
    fit, total = 0, 0
    while fit < len(images) and total + len(images[fit]) <= 1 << 20:
        total += len(images[fit])
        fit += 1
    sid = srv.create("process_res=70")
    ws, _ = await connect(srv, sid)
    for i in range(fit):
        a = await send_image(ws, images[i], binary=True)
        check(a.get("type") == "ack" and a.get("image_count") == i + 1, f"upload {i} under the limit: {a}")
    m = await send_image(ws, images[fit], binary=True)
    want = f"Session storage limit reached: {total / 1048576:.1f} MB stored, the limit is 1 MB (--max-session-mb); image not stored"
    check(m.get("type") == "error" and want in m.get("message", ""), f"refused past the limit: {m} (want {want!r})")
    await ws.send(json.dumps({"type": "ping"}))
    check((await recv_json(ws, 10)).get("type") == "pong", "the socket stays usable")
    other = srv.create("process_res=70")
    ws2, _ = await connect(srv, other)
    a = await send_image(ws2, images[fit], binary=True)
    check(a.get("type") == "ack", f"another session is not affected: {a}")
    await ws2.close()
    await ws.close()
    folder = os.path.join(srv.data_dir, "sessions", sid, "images")
    stored = sorted(n for n in os.listdir(folder) if n.endswith(".jpg"))
    check(stored == [f"{i:06d}.jpg" for i in range(fit)], f"nothing past the limit was written: {stored}")
    check(all(hashlib.sha256(open(os.path.join(folder, f"{i:06d}.jpg"), "rb").read()).digest()
              == hashlib.sha256(images[i]).digest() for i in range(fit)), "nothing stored was lost or changed")
    # The stored bytes are counted again from the files at reload.
    srv.stop(signal.SIGKILL)
    srv.start()
    ws, first = await connect(srv, sid)
    check(first.get("image_count") == fit, f"the images survived the restart: {first}")
    m = await send_image(ws, images[fit], binary=True)
    check(m.get("type") == "error" and want in m.get("message", ""), f"still refused after the restart: {m}")
    await ws.close()
    srv.stop(signal.SIGKILL)
    srv.args = ("--max-session-mb", "0")
    srv.start()
    ws, _ = await connect(srv, sid)
    a = await send_image(ws, images[fit], binary=True)
    check(a.get("type") == "ack" and a.get("image_count") == fit + 1, f"0 turns the limit off: {a}")
    await ws.close()


async def per_client():
    lim = Server("--max-ws-per-client", "3", "--max-sessions-per-client", "2", "--client-msg-rate", "5",
                 "--client-byte-rate-mb", "1", "--trust-proxy", "--max-message-mb", "8")
    try:
        # Sessions per address (--trust-proxy: the proxy's X-Real-IP is the address).
        a = [lim.http("POST", "/ws/session/create?process_res=70", headers={"X-Real-IP": "10.0.0.1"}) for _ in range(3)]
        check([st for st, _ in a] == [200, 200, 429], f"2 sessions per address, the 3rd refused: {[st for st, _ in a]}")
        check("Too many sessions from your address" in str(a[2][1]), f"the refusal says why: {a[2][1]}")
        st, _ = lim.http("POST", "/ws/session/create?process_res=70", headers={"X-Real-IP": "10.0.0.2"})
        check(st == 200, f"another address is not affected: {st}")
        st, _ = lim.http("DELETE", f"/ws/session/{a[0][1]['session_id']}")
        st, _ = lim.http("POST", "/ws/session/create?process_res=70", headers={"X-Real-IP": "10.0.0.1"})
        check(st == 200, f"a deleted session frees its place: {st}")
        # WebSockets per address (the peer here: no X-Real-IP sent); bare v2 sockets need no session.
        socks = [await websockets.connect(f"{lim.ws_base}/ws/reconstruct", max_size=None, ping_interval=None)
                 for _ in range(3)]
        try:
            await websockets.connect(f"{lim.ws_base}/ws/reconstruct", open_timeout=30)
            check(False, "a 4th WebSocket from one address is refused")
        except websockets.exceptions.InvalidStatusCode as e:
            check(e.status_code == 429, f"4th WebSocket: {e.status_code}")
        for ws in socks[:2]:
            await ws.close()
        ws = socks[2]
        # Messages per second: 5/s with a 10-message burst; 30 pings at once.
        for _ in range(30):
            await ws.send(json.dumps({"type": "ping"}))
        replies = [await recv_json(ws, 30) for _ in range(30)]
        pongs = sum(m["type"] == "pong" for m in replies)
        limited = sum(m["type"] == "error" and m["message"].startswith("Too many messages") for m in replies)
        check(pongs >= 10 and limited > 0 and pongs + limited == 30, f"message rate: {pongs} pongs, {limited} refused")
        # Bytes per second: 1 MB/s with a 2 MB burst; two 2 MB images are throttled, not lost.
        await asyncio.sleep(2.5)  # the buckets refill
        await ws.send(json.dumps({"type": "init", "process_res": 70}))
        m = await recv_json(ws, 30)
        check(m.get("type") == "session_created", f"init: {m}")
        await asyncio.sleep(1)
        big = make_image(1600, 1200, seed=9, quality=100)
        t0 = time.monotonic()
        acks = [await send_image(ws, big, binary=True) for _ in range(3)]
        dt = time.monotonic() - t0
        check(all(x.get("type") == "ack" for x in acks), f"throttled uploads are acknowledged: {[x.get('type') for x in acks]}")
        # The bucket goes into debt at a frame's header; the next frame waits for the debt to be
        # repaid: the third waits (2 frames - 2 MB burst) / 1 MB/s. A lower bound only.
        mb = len(big) / 1048576
        owed = 2 * mb - 2
        check(mb > 1.2 and dt >= 0.8 * owed, f"3 x {mb:.2f} MB took {dt:.2f} s at 1 MB/s after a 2 MB burst (>= {owed:.2f} s owed)")
        await ws.close()
    finally:
        lim.stop()
        lim.cleanup()


try:
    run(main())
    run(session_bytes())
    run(per_client())
finally:
    srv.stop()
    srv.cleanup()
finish("test_limits")
