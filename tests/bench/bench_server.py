"""Benchmarks a running protocol-v1 server (ours, or any): per-stage timings of generate for one
session, end-to-end latency, and image uploads acknowledged per second on one socket.
Prints figures; asserts nothing. Usage: bench_server.py PORT IMAGE... [--repeats R] [--pid PID]"""
import argparse
import asyncio
import base64
import json
import statistics
import time

import websockets

ap = argparse.ArgumentParser()
ap.add_argument("port", type=int)
ap.add_argument("images", nargs="+")
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--process-res", type=int, default=504)
ap.add_argument("--uploads", type=int, default=100)
ap.add_argument("--pid", type=int, help="front process: report its peak RSS")
a = ap.parse_args()

base = f"127.0.0.1:{a.port}"
images = [open(p, "rb").read() for p in a.images]


def http_create(query):
    import urllib.request
    req = urllib.request.Request(f"http://{base}/ws/session/create?{query}", method="POST", data=b"")
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())["session_id"]


async def open_ws(sid):
    ws = await websockets.connect(f"ws://{base}/ws/reconstruct/{sid}", max_size=None, ping_interval=None)
    await ws.recv()
    return ws


async def upload(ws, data, binary):
    if binary:
        await ws.send(data)
    else:
        await ws.send(json.dumps({"type": "image", "data": base64.b64encode(data).decode(), "filename": "x.jpg"}))


async def generate_run():
    sid = http_create(f"max_images={len(images)}&process_res={a.process_res}")
    ws = await open_ws(sid)
    t0 = time.perf_counter()
    for img in images:
        await upload(ws, img, binary=False)
        m = json.loads(await ws.recv())
        assert m["type"] == "ack", m
    t_upload = time.perf_counter() - t0
    t1 = time.perf_counter()
    await ws.send(json.dumps({"type": "generate"}))
    while True:
        raw = await ws.recv()
        m = json.loads(raw)
        if m["type"] != "progress":
            break
    e2e = time.perf_counter() - t1
    assert m["type"] == "complete", str(m)[:300]
    t_recv = time.perf_counter()
    base64.b64decode(m["glb_base64"])  # what a client does with it
    decode_client = time.perf_counter() - t_recv
    await ws.close()
    return {"upload_s": t_upload, "e2e_s": e2e, "msg_bytes": len(raw), "timing": m["metadata"].get("timing", {}),
            "points": m["metadata"].get("num_points"), "glb": m["metadata"]["glb_size_bytes"], "client_b64_s": decode_client}


async def upload_rate(binary, pipelined):
    n = a.uploads
    sid = http_create(f"max_images={n}&process_res={a.process_res}")
    ws = await open_ws(sid)
    img = images[0]
    t0 = time.perf_counter()
    if pipelined:
        async def sender():
            for _ in range(n):
                await upload(ws, img, binary)
        task = asyncio.ensure_future(sender())
        for _ in range(n):
            m = json.loads(await ws.recv())
            assert m["type"] == "ack", m
        await task
    else:
        for _ in range(n):
            await upload(ws, img, binary)
            m = json.loads(await ws.recv())
            assert m["type"] == "ack", m
    dt = time.perf_counter() - t0
    await ws.close()
    import urllib.request
    urllib.request.urlopen(urllib.request.Request(f"http://{base}/ws/session/{sid}", method="DELETE"))
    return n / dt


def peak_rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


async def main():
    runs = [await generate_run() for _ in range(a.repeats + 1)][1:]  # first run warms up
    med = lambda k: statistics.median(r[k] for r in runs)
    medt = lambda k: statistics.median(r["timing"].get(k, float("nan")) for r in runs)
    print(f"generate, {len(images)} images @ process_res {a.process_res} ({a.repeats} runs after a warm-up):")
    print(f"  upload + ack (all images)   {med('upload_s') * 1e3:9.1f} ms")
    e2e = med("e2e_s") * 1e3
    stages = [("queue wait", "queue_ms"), ("decode + preprocess", "decode_ms"), ("model", "model_ms"),
              ("fusion", "fusion_ms"), ("GLB write", "glb_ms")]
    for label, key in stages:
        print(f"  {label:27s} {medt(key):9.1f} ms")
    rest = statistics.median(r["e2e_s"] * 1e3 - sum(r["timing"].get(k, 0) for _, k in stages) for r in runs)
    print(f"  base64 + JSON + send + recv {rest:9.1f} ms")
    model = medt("model_ms")
    runs_text = ", ".join("%.2f" % r["e2e_s"] for r in runs)
    print(f"  end-to-end generate         {e2e:9.1f} ms   (runs: {runs_text} s)")
    print(f"  outside the model           {e2e - model:9.1f} ms = {(e2e - model) / e2e * 100:.2f}% of end-to-end")
    print(f"  points {runs[-1]['points']}, GLB {runs[-1]['glb'] / 1e6:.2f} MB, message {runs[-1]['msg_bytes'] / 1e6:.2f} MB")
    for binary in (False, True):
        for pipelined in (False, True):
            try:
                rate = await upload_rate(binary, pipelined)
            except AssertionError as e:  # e.g. the seed server has no binary frames
                print(f"uploads, {'binary' if binary else 'base64 JSON'}: not supported by this server ({str(e)[:80]})")
                break
            print(f"uploads acked/s, {'binary' if binary else 'base64 JSON'}, {'pipelined' if pipelined else 'sequential'}: {rate:8.1f}")
    if a.pid:
        print(f"front peak RSS: {peak_rss_mb(a.pid):.1f} MB")

asyncio.run(main())
