"""Hostile input on the session/HTTP side (issue 7): deeply nested JSON bodies, methods and HEAD,
memory amplification by progressive JPEGs and long filenames, DELETE racing uploads then a
restart. Each part fails on the version before the fix."""
import asyncio
import base64
import json
import os
import random
import threading
import time

import websockets

from harness import (REPO, Server, check, connect, finish, front_peak_rss_kb, make_image, raw_http, recv_json,
                     run)


def alive(srv):
    st, js = srv.http("GET", "/status")
    return st == 200 and isinstance(js, dict) and js.get("status") in ("ok", "degraded")


def nested_json(srv):
    for n in (1000, 100000):
        for unit in (b"[", b'{"a":'):
            st, js = srv.http("POST", "/ws/session/create", unit * n, {"Content-Type": "application/json"})
            check(st == 422 and "nested deeper than 32 levels" in js.get("detail", ""),
                  f"{n} x {unit!r}: 422 with a detail, got {st} {str(js)[:200]}")
            check(alive(srv), f"server alive after {n} x {unit!r}")
    # brackets inside a string are not nesting; 32 levels still parse
    st, js = srv.http("POST", "/ws/session/create", {"process_res": 280, "note": "[" * 5000})
    check(st == 200, f"brackets inside a string: {st} {js}")
    body = b'{"x":' + b"[" * 31 + b"1" + b"]" * 31 + b', "max_images": 4}'
    st, js = srv.http("POST", "/ws/session/create", body)
    check(st == 200 and js.get("max_images") == 4, f"32 levels accepted: {st} {js}")


def methods_and_head(srv):
    sid = srv.create()
    cases = [("/status", "GET, HEAD, OPTIONS"), ("/ws/sessions", "GET, HEAD, OPTIONS"),
             ("/ws/session/create", "POST, OPTIONS"), (f"/ws/session/{sid}", "GET, HEAD, DELETE, OPTIONS")]
    for path, allow in cases:
        allowed = [m.strip() for m in allow.split(",")]
        for m in ("POST", "DELETE", "GET", "PUT", "PATCH", "MKCOL", "PROPFIND"):
            if m in allowed:
                continue
            st, hdr, body = raw_http(srv, f"{m} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                                          f"Connection: close\r\n\r\n".encode())
            if m in ("POST", "DELETE", "GET"):  # methods the front passes on: our handlers answer them
                check(st == 405 and hdr.get("allow") == allow and b"Method Not Allowed" in body,
                      f"{m} {path}: 405 + Allow '{allow}' + detail, got {st} {hdr}")
            else:  # the front refuses other methods before any handler (an error status, or a close)
                check(st == 0 or 400 <= st < 600, f"{m} {path}: refused, got {st} {body[:80]!r}")
        if "HEAD" in allowed:
            st_get, hdr_get, body_get = raw_http(srv, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            st, hdr, body = raw_http(srv, f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            check(st == 200 and body == b"", f"HEAD {path}: 200 without a body, got {st} {body[:80]!r}")
            check(st_get == 200 and len(body_get) > 0, f"GET {path} still has its body")
        st, hdr, body = raw_http(srv, f"OPTIONS {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        check(st == 204, f"OPTIONS {path}: preflight 204, got {st}")
    # HEAD on keep-alive: a body would be read as the next response's start
    st, hdr, body = raw_http(srv, b"HEAD /status HTTP/1.1\r\nHost: x\r\n\r\nGET /ws/sessions HTTP/1.1\r\nHost: x\r\n"
                                  b"Connection: close\r\n\r\n")
    check(st == 200 and body.startswith(b"HTTP/1.1 200"), f"pipelined HEAD then GET: {body[:60]!r}")
    srv.http("DELETE", f"/ws/session/{sid}")


def hostile_progressive_jpeg():
    """A few hundred bytes claiming an 8192x8192 progressive 4:2:0 frame: libjpeg would reserve
    its whole coefficient buffer (192 MB) to check it."""
    data = bytearray(open(os.path.join(REPO, "tests", "data", "images", "jpeg_progressive.jpg"), "rb").read())
    p = data.find(b"\xff\xc2")
    assert p > 0
    data[p + 5:p + 9] = bytes([0x20, 0, 0x20, 0])  # height, width
    return bytes(data)


async def memory_and_names(srv):
    sid = srv.create("max_images=40")
    evil = hostile_progressive_jpeg()
    targets = [srv.create() for _ in range(16)]  # one socket per session: 16 validations at once
    before = front_peak_rss_kb(srv)

    async def one(target):
        ws, first = await connect(srv, target)
        await ws.send(evil)
        m = await recv_json(ws)
        await ws.close()
        return m

    answers = await asyncio.gather(*[one(t) for t in targets])
    for t in targets:
        srv.http("DELETE", f"/ws/session/{t}")
    grown = (front_peak_rss_kb(srv) - before) / 1024
    for m in answers[:1]:
        check(m.get("type") == "error" and "limit 128 MB" in m.get("message", ""),
              f"progressive 8192x8192 refused naming the limit: {m}")
    check(all(m.get("type") == "error" for m in answers), "all 16 refused")
    check(grown < 100, f"16 hostile JPEGs at once grew the front by {grown:.0f} MB (limit 100)")
    check(alive(srv), "alive after the progressive JPEGs")

    # names: cut to 255 bytes at a character boundary, and the ack says so
    ws, first = await connect(srv, sid)
    img = make_image(64, 48, seed=3)
    name = "\u00e9" * 600 + ".jpg"  # 1204 bytes
    ack = await asyncio.wait_for(_send_named(ws, img, name), 30)
    fn = ack.get("filename", "")
    check(ack.get("type") == "ack" and ack.get("filename_truncated") is True,
          f"ack says the filename was truncated: {str(ack)[:200]}")
    check(len(fn.encode()) == 254 and fn == "\u00e9" * 127, f"filename cut at a boundary: {len(fn.encode())} bytes")
    ack = await _send_named(ws, img, "short.jpg")
    check(ack.get("filename") == "short.jpg" and "filename_truncated" not in ack, f"short name untouched: {ack}")
    # per-upload cost does not grow: session.json stays the same size whatever was uploaded
    state = os.path.join(srv.data_dir, "sessions", sid, "session.json")
    size0 = os.path.getsize(state)
    for i in range(20):
        ack = await _send_named(ws, img, "n" * 250 + str(i))
        check(ack.get("type") == "ack", f"upload {i}: {str(ack)[:120]}")
    check(os.path.getsize(state) == size0, f"session.json grew with uploads: {size0} -> {os.path.getsize(state)}")
    meta = os.path.join(srv.data_dir, "sessions", sid, "images", "000000.meta.json")
    check(os.path.exists(meta) and len(json.load(open(meta))["name"].encode()) == 254, "name stored bounded on disk")
    await ws.close()
    return sid


async def _send_named(ws, img, name):
    await ws.send(json.dumps({"type": "image", "data": base64.b64encode(img).decode(), "filename": name}))
    return await recv_json(ws)


async def uploader(srv, sid, acked, stop):
    """Uploads until the session goes (binary and base64 frames alternately); counts acks."""
    img = make_image(1024, 768, seed=5)
    try:
        ws, first = await connect(srv, sid)
    except Exception:
        return
    try:
        i = 0
        while not stop.is_set():
            if i % 2:
                await ws.send(img)
            else:
                await ws.send(json.dumps({"type": "image", "data": base64.b64encode(img).decode(), "filename": f"{i}.jpg"}))
            m = await recv_json(ws, 30)
            if m.get("type") != "ack":
                break
            acked[sid] = m["image_count"]
            i += 1
    except (websockets.ConnectionClosed, asyncio.TimeoutError, OSError):
        pass
    finally:
        await ws.close()


async def delete_races(srv):
    # Sessions grow for a while first: the old removal failed when a file appeared while it walked
    # the folder, so a bigger folder and a busier uploader make the race likelier.
    kept = [srv.create("max_images=1000") for _ in range(4)]
    doomed = [srv.create("max_images=1000") for _ in range(24)]
    acked = {}
    stop = threading.Event()
    tasks = [asyncio.ensure_future(uploader(srv, sid, acked, stop)) for sid in kept + doomed]
    rnd = random.Random(7)

    async def delete(sid):
        await asyncio.sleep(rnd.uniform(0.3, 1.5))
        st, js = await asyncio.get_event_loop().run_in_executor(None, srv.http, "DELETE", f"/ws/session/{sid}")
        check(st == 200, f"DELETE {sid}: {st} {js}")

    await asyncio.gather(*[delete(sid) for sid in doomed])
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*tasks)
    return kept, doomed, acked


def check_after(srv, kept, doomed, acked, when):
    st, lst = srv.http("GET", "/ws/sessions")
    ids = {s["session_id"]: s for s in lst["sessions"]}
    check(not (set(doomed) & set(ids)), f"{when}: deleted sessions listed: {len(set(doomed) & set(ids))}")
    for sid in kept:
        check(sid in ids and ids[sid]["image_count"] == acked.get(sid, 0),
              f"{when}: kept session {sid} has {ids.get(sid, {}).get('image_count')} images, {acked.get(sid, 0)} acked")
    for sid in doomed:
        st, js = srv.http("GET", f"/ws/session/{sid}")
        check(st == 404, f"{when}: deleted {sid} answers {st}")
    on_disk = os.listdir(os.path.join(srv.data_dir, "sessions"))
    check(not (set(doomed) & set(on_disk)), f"{when}: deleted sessions on disk: {sorted(set(doomed) & set(on_disk))[:3]}")
    check(not [n for n in on_disk if n.startswith(".deleted-")], f"{when}: tombstones left: {on_disk}")
    return lst["stats"]["total_sessions"]


def request_flood():
    """--client-http-rate: an address over its request rate gets 429 with Retry-After (its burst
    first), another address (--trust-proxy's X-Real-IP here) is not affected, and the bucket
    refills."""
    lim = Server("--client-http-rate", "10", "--trust-proxy")
    try:
        time.sleep(2.1)  # the readiness polls spent some of 127.0.0.1's burst: let it refill
        flood = [lim.http("GET", "/status", headers={"X-Real-IP": "10.1.1.1"}) for _ in range(40)]
        codes = [st for st, _ in flood]
        ok, limited = codes.count(200), codes.count(429)
        check(ok >= 20 and limited >= 10 and ok + limited == 40, f"40 requests at once, 10/s with a 20 burst: {ok} ok, {limited} refused")
        refused = next((js for st, js in flood if st == 429), {})
        check("Too many requests" in str(refused), f"the refusal says why: {refused}")
        st, hd, _ = raw_http(lim, b"GET /status HTTP/1.1\r\nHost: x\r\nX-Real-IP: 10.1.1.1\r\nConnection: close\r\n\r\n")
        check(st == 429 and int(hd.get("retry-after", "0")) >= 1, f"429 carries Retry-After: {st} {hd}")
        st, _ = lim.http("GET", "/status", headers={"X-Real-IP": "10.1.1.2"})
        check(st == 200, f"another address is served meanwhile: {st}")
        # Without X-Real-IP: the last X-Forwarded-For line's last entry is the client (a proxy
        # that appends its own line puts it last; what a client wrote before it is not believed).
        def xff(*lines):
            head = "".join(f"X-Forwarded-For: {l}\r\n" for l in lines)
            return raw_http(lim, f"GET /status HTTP/1.1\r\nHost: x\r\n{head}Connection: close\r\n\r\n".encode())[0]
        check(xff("10.1.1.1", "10.1.1.3") == 200, "a client-written X-Forwarded-For line before the proxy's is ignored")
        check(xff("10.1.1.3", "192.0.2.1, 10.1.1.1") == 429, "the last line's last entry is the client counted")
        time.sleep(1.2)
        st, _ = lim.http("GET", "/status", headers={"X-Real-IP": "10.1.1.1"})
        check(st == 200, f"the bucket refills: {st}")
    finally:
        lim.cleanup()


srv = Server("--max-sessions", "64", "--max-images", "1000")
try:
    print("HTTP request rate per address")
    request_flood()
    print("nested JSON bodies")
    nested_json(srv)
    print("methods and HEAD")
    methods_and_head(srv)
    print("progressive JPEG amplification and filenames")
    named = run(memory_and_names(srv))
    print("DELETE racing uploads, then a restart")
    kept, doomed, acked = run(delete_races(srv))
    check(sum(acked.get(s, 0) for s in doomed) > 0, "some uploads landed before the deletes (the race happened)")
    before = check_after(srv, kept, doomed, acked, "before restart")
    srv.stop()
    srv.start()
    after = check_after(srv, kept, doomed, acked, "after restart")
    check(after == before, f"session count survives the restart: {before} -> {after}")
    st, info = srv.http("GET", f"/ws/session/{named}")
    check(st == 200 and info["image_count"] == 22, f"the named session reloads with its 22 images: {info}")
    check(alive(srv), "alive at the end")
finally:
    srv.cleanup()
finish("test_hostile_http")
