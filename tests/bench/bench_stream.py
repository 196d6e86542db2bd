"""Per-image cost as a session grows: a streaming session (chunks of CHUNK views, OVERLAP shared)
against plain generates over every image, on a running da3-server (one worker). Prints, per
session size, the seconds each new image costs and the worker's memory; nothing is asserted.

    bench_stream.py BASE_URL WORKER_PID IMAGE_DIR VIEWS_LIST [--res 504] [--chunk 16] [--overlap 8]
                    [--plain-max 32] [--plain-limit-s 300]

* streaming: the images are sent one by one; each delta's time (from the ack that made its chunk
  due to the delta) divided by its new images is that chunk's per-image cost; reported at each
  size in VIEWS_LIST (the chunk ending there), with the worker's resident memory right after it.
* plain: a generate over all images every (CHUNK - OVERLAP) images, as a client wanting a fresh
  cloud that often would do; its time divided by the images added since the last one. Stopped
  after --plain-max views or once one generate takes longer than --plain-limit-s (it grows
  quadratically: the point is made well before 256 views).
Peak memory: VmHWM is a high-water mark since the worker started, so each size's figure is the
peak so far; VmRSS right after the job is printed beside it."""
import argparse
import asyncio
import json
import os
import time
import urllib.request

import websockets


def proc_kb(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def create(base, query):
    req = urllib.request.Request(f"{base}/ws/session/create?{query}", method="POST")
    return json.load(urllib.request.urlopen(req))["session_id"]


async def recv(ws, timeout=3600):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def streaming(args, images, sizes):
    sid = create(args.base, f"process_res={args.res}&streaming=true&chunk_size={args.chunk}&overlap={args.overlap}"
                            f"&num_max_points=200000&max_images={len(images)}")
    ws = await websockets.connect(f"{args.ws}/ws/reconstruct/{sid}", max_size=None, ping_interval=None)
    await recv(ws)
    rows, t_due, done = [], None, 0
    step = args.chunk - args.overlap
    for i, data in enumerate(images):
        await ws.send(data)
        while True:
            m = await recv(ws)
            if m["type"] == "ack":
                break
            if m["type"] == "error":
                raise RuntimeError(m)
        if i + 1 - done >= step or i + 1 == len(images):
            # The chunk runs now (streaming chunks start on the ack); wait for its delta before
            # sending more, so each chunk is timed alone.
            t_due = time.monotonic()
            if i + 1 - done < step:
                await ws.send(json.dumps({"type": "generate"}))
            while True:
                m = await recv(ws)
                if m["type"] == "delta":
                    break
                if m["type"] == "error":
                    raise RuntimeError(m)
            dt = time.monotonic() - t_due
            st = m["metadata"]["stream"]
            new = st["end"] - st["new_start"]
            done = st["end"]
            if done in sizes:
                rows.append((done, dt / new, proc_kb(args.pid, "VmRSS"), proc_kb(args.pid, "VmHWM"), dt, new))
                print(f"  streaming  {done:4d} views: {dt / new:7.2f} s per new image (chunk of {new} new in "
                      f"{dt:.1f} s), worker RSS {proc_kb(args.pid, 'VmRSS') / 1024:.0f} MB, peak so far "
                      f"{proc_kb(args.pid, 'VmHWM') / 1024:.0f} MB", flush=True)
    await ws.close()
    return rows


async def plain(args, images):
    sid = create(args.base, f"process_res={args.res}&num_max_points=200000&max_images={len(images)}")
    ws = await websockets.connect(f"{args.ws}/ws/reconstruct/{sid}", max_size=None, ping_interval=None)
    await recv(ws)
    rows, last = [], 0
    step = args.chunk - args.overlap
    for i, data in enumerate(images[: args.plain_max]):
        await ws.send(data)
        m = await recv(ws)
        if m["type"] != "ack":
            raise RuntimeError(m)
        n = i + 1
        if n % step and n != args.plain_max:
            continue
        t0 = time.monotonic()
        await ws.send(json.dumps({"type": "generate"}))
        while True:
            m = await recv(ws)
            if m["type"] in ("complete", "error"):
                break
        dt = time.monotonic() - t0
        if m["type"] == "error":
            raise RuntimeError(m)
        rows.append((n, dt / (n - last), proc_kb(args.pid, "VmRSS"), proc_kb(args.pid, "VmHWM"), dt, n - last))
        print(f"  plain      {n:4d} views: {dt / (n - last):7.2f} s per new image (generate over all {n} in {dt:.1f} s), "
              f"worker RSS {proc_kb(args.pid, 'VmRSS') / 1024:.0f} MB, peak so far {proc_kb(args.pid, 'VmHWM') / 1024:.0f} MB",
              flush=True)
        last = n
        if dt > args.plain_limit_s:
            print(f"  plain: stopped after {n} views (one generate took {dt:.0f} s > {args.plain_limit_s} s)")
            break
    await ws.close()
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("base")
    p.add_argument("pid", type=int)
    p.add_argument("image_dir")
    p.add_argument("views")
    p.add_argument("--res", type=int, default=504)
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--overlap", type=int, default=8)
    p.add_argument("--plain-max", type=int, default=32)
    p.add_argument("--plain-limit-s", type=float, default=300)
    args = p.parse_args()
    args.ws = args.base.replace("http://", "ws://")
    sizes = sorted(int(v) for v in args.views.split(","))
    names = sorted(os.listdir(args.image_dir))[: max(sizes)]
    images = [open(os.path.join(args.image_dir, f), "rb").read() for f in names]
    if len(images) < max(sizes):
        raise SystemExit(f"need {max(sizes)} images in {args.image_dir}")
    print(f"per-image cost, process_res {args.res}, chunk {args.chunk}, overlap {args.overlap}, one worker:")
    s = asyncio.run(streaming(args, images, set(sizes)))
    pl = asyncio.run(plain(args, images))
    if len(s) >= 2:
        costs = [r[1] for r in s]
        mems = [r[2] for r in s]
        print(f"  streaming: per-image cost {min(costs):.2f}..{max(costs):.2f} s "
              f"({(max(costs) / min(costs) - 1) * 100:.0f} % spread, target <= 20 %), worker RSS after each "
              f"{min(mems) / 1024:.0f}..{max(mems) / 1024:.0f} MB ({(max(mems) / min(mems) - 1) * 100:.0f} % spread, target <= 10 %)")
    if len(pl) >= 2:
        print(f"  plain: per-image cost {pl[0][1]:.2f} s at {pl[0][0]} views -> {pl[-1][1]:.2f} s at {pl[-1][0]} views "
              f"({pl[-1][1] / pl[0][1]:.1f}x for {pl[-1][0] / pl[0][0]:.0f}x the views)")


if __name__ == "__main__":
    main()
