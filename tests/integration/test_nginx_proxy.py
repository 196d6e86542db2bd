"""A real nginx in front of the server, configured as docs/deployment.md says, on a plain port and
on a TLS port (`listen ... ssl` with a certificate this test makes): the HTTP API, the WebSocket
upgrade (both protocols), a multi-MB upload and the result all pass through each, and the
front sees nginx's X-Real-IP as the client's address (--trust-proxy)."""
import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

import websockets

from harness import Server, check, connect, finish, generate, glb_info, make_image, run, send_image
import harness

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


srv = Server("--trust-proxy", "--max-sessions-per-client", "3")
prefix = tempfile.mkdtemp(prefix="da3-nginx-")
port, tls_port = free_port(), free_port()
cert, key = os.path.join(prefix, "nginx.crt"), os.path.join(prefix, "nginx.key")
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                key, "-out", cert, "-days", "2", "-subj", "/CN=nginx-test", "-addext", "subjectAltName=IP:127.0.0.1"],
               check=True, capture_output=True)
conf = f"""
daemon off;
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    upstream da3 {{ server 127.0.0.1:{srv.port}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location /ws/reconstruct {{
            proxy_pass http://da3;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_read_timeout 600s;
            proxy_send_timeout 600s;
        }}
        location / {{
            proxy_pass http://da3;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
        }}
    }}
}}
"""
open(os.path.join(prefix, "nginx.conf"), "w").write(conf)
nginx = subprocess.Popen([NGINX, "-p", prefix, "-c", os.path.join(prefix, "nginx.conf")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


class Proxied:
    """The same API as Server, pointed at nginx (its plain or its TLS port)."""
    key = None
    http = Server.http

    def __init__(self, tls):
        self.ssl_ctx = ssl.create_default_context(cafile=cert) if tls else None
        self.base = f"https://127.0.0.1:{tls_port}" if tls else f"http://127.0.0.1:{port}"
        self.ws_base = f"wss://127.0.0.1:{tls_port}" if tls else f"ws://127.0.0.1:{port}"


async def main(proxied):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    st, status = proxied.http("GET", "/status")
    check(st == 200 and status["workers"]["ready"] == 1, f"/status through nginx: {st}")
    st, js = proxied.http("POST", "/ws/session/create?process_res=140&num_max_points=3000")
    check(st == 200, f"create through nginx: {st} {js}")
    sid = js["session_id"]
    ws, first = await connect(proxied, sid)
    check(first["type"] == "connected", f"WebSocket upgrade through nginx: {first}")
    for i in range(2):
        a = await send_image(ws, make_image(140, 105, 20 + i))
        check(a["type"] == "ack", f"upload through nginx: {a}")
    big = make_image(3000, 2000, 7, quality=98)  # a multi-MB frame
    a = await send_image(ws, big, binary=True)
    check(a["type"] == "ack" and len(big) > 1_000_000, f"{len(big)} B upload through nginx: {a}")
    progress, res = await generate(ws)
    check(res["type"] == "complete" and res["image_count"] == 3, f"result through nginx: {str(res)[:200]}")
    _, points, lines = glb_info(__import__("base64").b64decode(res["glb_base64"]))
    check(0 < points <= 3000 and lines == 3, f"GLB through nginx: {points} points, {lines} frustums")
    await ws.close()
    st, js = proxied.http("DELETE", f"/ws/session/{sid}")
    check(st == 200, "delete through nginx")
    # Protocol v2's bare /ws/reconstruct goes through the same location.
    ws = await websockets.connect(f"{proxied.ws_base}/ws/reconstruct", max_size=None, ping_interval=None,
                                  ssl=proxied.ssl_ctx)
    await ws.send(json.dumps({"type": "init", "process_res": 140}))
    m = json.loads(await asyncio.wait_for(ws.recv(), 30))
    check(m.get("type") == "session_created", f"v2 init through nginx: {m}")
    await ws.close()
    if m.get("session_id"):
        proxied.http("DELETE", f"/ws/session/{m['session_id']}")


def client_address_is_forwarded():
    """With --trust-proxy the front counts nginx's X-Real-IP (127.0.0.1 here, the test's own
    address), so the per-client session limit applies through the proxy; a client-sent
    X-Real-IP is replaced by nginx's."""
    plain = Proxied(False)
    made = [plain.http("POST", "/ws/session/create?process_res=70", headers={"X-Real-IP": f"10.9.9.{i}"}) for i in range(4)]
    codes = [st for st, _ in made]
    check(codes == [200, 200, 200, 429], f"3 sessions per address through nginx, forged X-Real-IP replaced: {codes}")
    for st, js in made:
        if st == 200:
            plain.http("DELETE", f"/ws/session/{js['session_id']}")


try:
    for tls in (False, True):
        print("through nginx" + (" with TLS" if tls else ""))
        run(main(Proxied(tls)))
    client_address_is_forwarded()
finally:
    nginx.terminate()
    nginx.wait(timeout=10)
    log = open(os.path.join(prefix, "error.log")).read() if os.path.exists(os.path.join(prefix, "error.log")) else ""
    check("[error]" not in log and "[crit]" not in log, f"nginx error log clean: {log[-500:]}")
    shutil.rmtree(prefix, ignore_errors=True)
    srv.cleanup()
finish("test_nginx_proxy")
