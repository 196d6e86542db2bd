"""API keys, session ownership and origins on the real server: every endpoint and both WebSocket
protocols with no key, a wrong key, another user's key, the right key and an admin key; the
probes and the page without a key; /status and /metrics kept to admins; SIGHUP reloads the key
file (a broken one keeps the old keys); the Origin rule for WebSocket upgrades and CORS headers."""
import asyncio
import json
import os
import signal
import tempfile
import time
import urllib.request

import websockets

from harness import Server, check, finish, make_image, recv_json, run

ALICE, BOB, ADMIN, CAROL = "alice-key-0123456789", "bob-key-0123456789ab", "admin-key-0123456789", "carol-key-0123456789"
WRONG = "wrong-key-0123456789"
tmp = tempfile.mkdtemp(prefix="da3-keys-")
keys_path = os.path.join(tmp, "keys")
with open(keys_path, "w") as f:
    f.write(f"# test keys\n{ALICE} alice\n{BOB} bob user\n{ADMIN} root admin\n")
srv = Server("--api-keys", keys_path, "--private-status", key=ADMIN)


def http(method, path, key=None, headers=None):
    h = dict(headers or {})
    if key:
        h["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(srv.base + path, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
            return r.status, dict(r.headers), body
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def detail(body):
    try:
        return json.loads(body).get("detail", "")
    except ValueError:
        return ""


def create(key):
    st, _, body = http("POST", "/ws/session/create?process_res=70", key)
    assert st == 200, (st, body)
    return json.loads(body)["session_id"]


def http_matrix():
    # No key / a wrong key: 401 with a detail and WWW-Authenticate, for every API endpoint.
    for method, path in (("POST", "/ws/session/create"), ("GET", "/ws/sessions"), ("GET", "/status"),
                         ("GET", "/metrics"), ("GET", "/ws/session/00000000-0000-4000-8000-000000000000"),
                         ("DELETE", "/ws/session/00000000-0000-4000-8000-000000000000")):
        for key, why in ((None, "an API key is required"), (WRONG, "invalid API key")):
            st, hd, body = http(method, path, key)
            check(st == 401 and detail(body).startswith(why) and "Bearer" in hd.get("WWW-Authenticate", ""),
                  f"{method} {path} with {'no' if key is None else 'a wrong'} key: {st} {body[:100]!r}")
    # Without a key: the probes, the page and a CORS preflight.
    for path in ("/healthz", "/readyz", "/"):
        st, _, _ = http("GET", path)
        check(st == 200, f"GET {path} without a key: {st}")
    st, _, _ = http("OPTIONS", "/ws/session/create", headers={"Origin": srv.base, "Access-Control-Request-Method": "POST"})
    check(st == 204, f"preflight without a key: {st}")
    # A forged identity header is removed by the front.
    st, _, body = http("GET", "/ws/sessions", BOB, headers={"X-DA3-Identity": "alice", "X-DA3-Role": "admin"})
    check(st == 200 and json.loads(body)["stats"]["total_sessions"] == 0, f"forged X-DA3 headers ignored: {body[:120]!r}")

    a, b = create(ALICE), create(BOB)
    for key, want in ((ALICE, 200), (BOB, 404), (ADMIN, 200)):
        st, _, body = http("GET", f"/ws/session/{a}", key)
        check(st == want and (want == 200 or detail(body) == "Session not found"), f"GET alice's session as {key[:5]}: {st}")
    lists = {}
    for key in (ALICE, BOB, ADMIN):
        st, _, body = http("GET", "/ws/sessions", key)
        lists[key] = sorted(s["session_id"] for s in json.loads(body)["sessions"])
    check(lists[ALICE] == [a] and lists[BOB] == [b] and lists[ADMIN] == sorted([a, b]), f"each key lists its own: {lists}")
    st, _, _ = http("DELETE", f"/ws/session/{a}", BOB)
    check(st == 404, f"bob cannot delete alice's session: {st}")
    st, _, _ = http("GET", f"/ws/session/{a}", ALICE)
    check(st == 200, "alice's session is still there")
    # Ids are checked for shape before any lookup or path is made from them.
    for bad in ("..%2F..%2Fetc", "not-a-uuid", a.upper() + "x"):
        st, _, _ = http("GET", f"/ws/session/{bad}", ADMIN)
        check(st == 404, f"malformed id {bad}: {st}")
    # --private-status: /status and /metrics for admins.
    for path in ("/status", "/metrics"):
        st, _, body = http("GET", path, ALICE)
        check(st == 403 and "admin key" in detail(body), f"{path} as a user: {st} {body[:80]!r}")
        st, _, _ = http("GET", path, ADMIN)
        check(st == 200, f"{path} as admin: {st}")
    return a, b


async def ws_open(path, key=None, header=False, origin=None):
    url = f"{srv.ws_base}{path}"
    extra = {}
    if key and header:
        extra["Authorization"] = f"Bearer {key}"
    elif key:
        url += ("&" if "?" in url else "?") + f"token={key}"
    if origin:
        extra["Origin"] = origin
    return await websockets.connect(url, max_size=None, ping_interval=None, extra_headers=extra, open_timeout=30)


async def refused(path, key=None, origin=None):
    try:
        ws = await ws_open(path, key, origin=origin)
        await ws.close()
        return 101
    except websockets.exceptions.InvalidStatusCode as e:
        return e.status_code


async def ws_matrix(a, b):
    for path in (f"/ws/reconstruct/{a}", "/ws/reconstruct"):
        check(await refused(path) == 401, f"{path} without a key: refused with 401 before the upgrade")
        check(await refused(path, WRONG) == 401, f"{path} with a wrong key: 401")
    # v1: another user's session is "not found", like an unknown one.
    ws = await ws_open(f"/ws/reconstruct/{a}", BOB)
    m = await recv_json(ws)
    check(m == {"type": "error", "message": f"Session {a} not found"}, f"bob on alice's v1 socket: {m}")
    await ws.close()
    for header in (False, True):
        ws = await ws_open(f"/ws/reconstruct/{a}", ALICE, header=header)
        m = await recv_json(ws)
        check(m.get("type") == "connected" and m.get("session_id") == a, f"alice (token in {'header' if header else 'query'}): {m}")
        await ws.send(make_image(70, 52, seed=5))
        m = await recv_json(ws)
        check(m.get("type") == "ack", f"alice uploads: {m}")
        await ws.send(json.dumps({"type": "ping"}))
        m = await recv_json(ws)
        check(m.get("type") == "pong", f"alice pings: {m}")
        await ws.close()
    ws = await ws_open(f"/ws/reconstruct/{a}", ADMIN)
    m = await recv_json(ws)
    check(m.get("type") == "connected", f"admin on alice's session: {m}")
    await ws.close()
    # v2: a new session belongs to its key; resuming another key's is "not found".
    ws = await ws_open("/ws/reconstruct", BOB)
    await ws.send(json.dumps({"type": "init", "session_id": a}))
    m = await recv_json(ws)
    check(m == {"type": "error", "message": f"Failed to resume session: Session {a} not found"}, f"bob resumes alice's: {m}")
    await ws.send(json.dumps({"type": "init", "process_res": 70}))
    m = await recv_json(ws)
    check(m.get("type") == "session_created", f"bob's v2 session: {m}")
    c = m.get("session_id")
    await ws.close()
    st, _, _ = http("GET", f"/ws/session/{c}", BOB)
    st2, _, _ = http("GET", f"/ws/session/{c}", ALICE)
    check(st == 200 and st2 == 404, f"the v2 session is bob's: bob {st}, alice {st2}")
    ws = await ws_open("/ws/reconstruct", ALICE)
    await ws.send(json.dumps({"type": "init", "session_id": a}))
    m = await recv_json(ws)
    check(m.get("type") == "session_created" and m.get("resumed") is True, f"alice resumes her session: {m}")
    await ws.close()

    # Origins: with keys, same origin only (no --cors-origins given).
    same = f"http://127.0.0.1:{srv.port}"
    check(await refused(f"/ws/reconstruct/{a}", ALICE, origin="http://evil.example") == 403,
          "a WebSocket from a foreign page is refused (403)")
    check(await refused(f"/ws/reconstruct/{a}", ALICE, origin=same) == 101, "a WebSocket from the server's own page")
    st, hd, _ = http("GET", f"/ws/session/{a}", ALICE, headers={"Origin": "http://evil.example"})
    check("Access-Control-Allow-Origin" not in hd, f"no CORS grant for a foreign origin: {hd}")
    st, hd, _ = http("GET", f"/ws/session/{a}", ALICE, headers={"Origin": same})
    check(hd.get("Access-Control-Allow-Origin") == same and "Origin" in hd.get("Vary", ""), f"CORS grant for the same origin: {hd}")


async def message_matrix(a):
    """Every WebSocket message kind as another user and as the owner. With no key or a wrong key
    no socket exists to send on (401 before the upgrade, ws_matrix); another user's v1 socket
    is told "not found" and then can do nothing to the session; on a v2 socket the other user
    cannot attach the session, so every session message is "No session initialized"."""
    import base64
    img = make_image(70, 52, seed=8)
    kinds = {"image (text)": json.dumps({"type": "image", "data": base64.b64encode(img).decode()}),
             "image (binary)": img, "generate": json.dumps({"type": "generate"}),
             "finalize": json.dumps({"type": "finalize"}), "ping": json.dumps({"type": "ping"})}
    before = json.loads(http("GET", f"/ws/session/{a}", ALICE)[2])
    for name, msg in kinds.items():
        ws = await ws_open(f"/ws/reconstruct/{a}", BOB)
        first = await recv_json(ws)
        try:
            await ws.send(msg)
            reply = await recv_json(ws, 10)
        except (websockets.exceptions.ConnectionClosed, asyncio.TimeoutError):
            reply = None
        check(first.get("type") == "error" and (reply is None or reply.get("type") in ("error", "pong")),
              f"bob's {name} on alice's v1 socket: {first} then {reply}")
        await ws.close()
        ws = await ws_open("/ws/reconstruct", BOB)
        await ws.send(json.dumps({"type": "init", "session_id": a}))
        await recv_json(ws)
        await ws.send(msg)
        reply = await recv_json(ws, 10)
        want = "pong" if name == "ping" else "error"
        check(reply.get("type") == want and (want == "pong" or "No session initialized" in reply.get("message", "")),
              f"bob's {name} on v2 after a refused resume: {reply}")
        await ws.close()
    after = json.loads(http("GET", f"/ws/session/{a}", ALICE)[2])
    check(after["image_count"] == before["image_count"] and after["status"] == before["status"],
          f"alice's session untouched by bob: {before['image_count']} -> {after['image_count']}, {after['status']}")
    # The owner: every kind does its work.
    ws = await ws_open(f"/ws/reconstruct/{a}", ALICE)
    await recv_json(ws)
    got = {}
    for name in ("image (text)", "image (binary)", "ping", "generate", "finalize"):
        await ws.send(kinds[name])
        while True:
            m = await recv_json(ws, 120)
            if m.get("type") != "progress":
                break
        got[name] = m.get("type")
    check(got == {"image (text)": "ack", "image (binary)": "ack", "ping": "pong", "generate": "complete",
                  "finalize": "complete"}, f"alice's messages: {got}")
    await ws.close()


def sighup_reload():
    with open(keys_path, "w") as f:
        f.write(f"{ALICE} alice\n{CAROL} carol\n")
    os.kill(srv.proc.pid, signal.SIGHUP)
    deadline = time.time() + 10
    while time.time() < deadline and http("GET", "/ws/sessions", CAROL)[0] != 200:
        time.sleep(0.1)
    check(http("GET", "/ws/sessions", CAROL)[0] == 200, "SIGHUP: the new key works")
    check(http("GET", "/ws/sessions", BOB)[0] == 401, "SIGHUP: the removed key is refused")
    with open(keys_path, "w") as f:
        f.write("too-short\n")
    os.kill(srv.proc.pid, signal.SIGHUP)
    time.sleep(0.5)  # nothing to wait for: the reload fails and logs; the old keys must stay
    check(http("GET", "/ws/sessions", CAROL)[0] == 200, "a broken key file keeps the previous keys")
    check("not reloaded, the previous keys stay" in srv.log_text(), "the failed reload is logged")


try:
    a, b = http_matrix()
    run(ws_matrix(a, b))
    run(message_matrix(a))
    sighup_reload()
finally:
    srv.stop()
    srv.cleanup()
finish("test_access")
