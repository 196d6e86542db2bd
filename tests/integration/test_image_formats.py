"""HEIC and WebP uploads end to end on the real server (demo model): files made here with Debian's
heif-enc, cwebp and img2webp from the harness's synthetic photos, sent as base64 JSON and as binary
frames, acknowledged, stored as received (.heic / .webp), reconstructed, found again after a
restart; broken ones (cut, animated, AVIF) refused with a clear error and no ack; da3-infer reads
them too."""
import asyncio
import base64
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

from harness import (BUILD, Server, check, connect, finish, generate, glb_info, make_image, recv_json, run,
                     send_image, validate_glb)

for tool in ("heif-enc", "cwebp", "img2webp"):
    if not shutil.which(tool):
        print(f"FAIL: {tool} is missing (Debian packages libheif-examples and webp; "
              "scripts/install-deps.sh --test installs them)")
        sys.exit(1)

tmp = tempfile.mkdtemp(prefix="da3-formats-")


def encode(cmd, src_name, out_name):
    """Runs `cmd src -o out` in the temporary folder; returns the output's bytes."""
    src, out = os.path.join(tmp, src_name), os.path.join(tmp, out_name)
    subprocess.run(cmd + [src, "-o", out], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return open(out, "rb").read()


def with_exif_orientation(jpeg, orientation):
    """The JPEG with an APP1 Exif segment whose only tag is the orientation (big-endian TIFF)."""
    tiff = b"MM\x00\x2a" + struct.pack(">IH", 8, 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + b"\0\0\0\0"
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\0\0" + tiff
    return jpeg[:2] + app1 + jpeg[2:]


for i in range(4):
    open(os.path.join(tmp, f"p{i}.png"), "wb").write(make_image(140, 105, 40 + i, "png"))
heic = encode(["heif-enc", "-q", "85"], "p0.png", "a.heic")
webp = encode(["cwebp", "-q", "85"], "p1.png", "b.webp")
webp_ll = encode(["cwebp", "-lossless"], "p2.png", "c.webp")
open(os.path.join(tmp, "turned.jpg"), "wb").write(with_exif_orientation(make_image(140, 105, 43), 6))
webp_turned = encode(["cwebp", "-q", "85", "-metadata", "exif"], "turned.jpg", "d.webp")
animated = encode(["img2webp", "-lossy", os.path.join(tmp, "p0.png")], "p1.png", "anim.webp")
avif = encode(["heif-enc", "-A", "-q", "60"], "p3.png", "e.avif")

srv = Server()


async def refused(ws, data, binary, want, what):
    """Sends a broken image: an error naming the problem, no ack, the socket still usable."""
    m = await send_image(ws, data, filename=None if binary else "broken", binary=binary)
    check(m.get("type") == "error" and m.get("message", "").startswith(want),
          f"{what}: want an error starting {want!r}, got {m}")
    await ws.send(json.dumps({"type": "ping"}))
    check((await recv_json(ws)).get("type") == "pong", f"{what}: socket usable afterwards")


async def main():
    sid = srv.create("process_res=140&num_max_points=4000")
    ws, first = await connect(srv, sid)
    check(first.get("image_count") == 0, f"connected: {first}")

    # good ones: base64 JSON and binary frames, stored under the format's extension
    uploads = [(heic, False, "a.heic", "000000.heic"), (webp, True, None, "000001.webp"),
               (webp_ll, False, "c.webp", "000002.webp"), (heic, True, None, "000003.heic"),
               (webp_turned, False, "turned.webp", "000004.webp")]
    # broken ones in between: each refused, nothing stored, the count unchanged
    broken = [(heic[:len(heic) // 2], False, "Failed to process image: Invalid image data: truncated or corrupt HEIF: ",
               "HEIC cut in half (JSON)"),
              (heic[:len(heic) - 1], True, "Failed to process image: Invalid image data: truncated or corrupt HEIF: ",
               "HEIC missing its last byte (binary)"),
              (webp[:len(webp) * 2 // 3], True, "Failed to process image: Invalid image data: truncated or corrupt WebP: ",
               "WebP cut at 2/3 (binary)"),
              (animated, False, "Failed to process image: Invalid image data: animated WebP (2 frames) is not accepted",
               "animated WebP"),
              (avif, True, "Failed to process image: Invalid image data: AVIF images are not accepted", "AVIF"),
              (b"RIFF\x04\x00\x00\x00WEBP", True, "Failed to process image: Invalid image data: truncated or corrupt WebP: ",
               "empty WebP container")]
    for n, (data, binary, name, stored) in enumerate(uploads):
        a = await send_image(ws, data, filename=name, binary=binary)
        check(a.get("type") == "ack" and a.get("image_count") == n + 1 and a.get("image_path") == stored,
              f"ack for {stored}: {a}")
        if n < len(broken):
            await refused(ws, broken[n][0], broken[n][1], broken[n][2], broken[n][3])
    for data, binary, want, what in broken[len(uploads):]:
        await refused(ws, data, binary, want, what)
    status, info = srv.http("GET", f"/ws/session/{sid}")
    check(info.get("image_count") == len(uploads), f"only the good images count: {info}")

    # stored as received
    folder = os.path.join(srv.data_dir, "sessions", sid, "images")
    for data, _, _, stored in uploads:
        path = os.path.join(folder, stored)
        check(os.path.exists(path) and open(path, "rb").read() == data, f"{stored} stored byte for byte")
    check(sorted(f for f in os.listdir(folder) if not f.endswith(".json")) == sorted(u[3] for u in uploads),
          f"nothing else stored: {sorted(os.listdir(folder))}")

    _, res = await generate(ws)
    check(res.get("type") == "complete" and res["metadata"]["num_frames"] == len(uploads), f"generate: {str(res)[:300]}")
    if res.get("type") == "complete":
        glb = base64.b64decode(res["glb_base64"])
        check(glb_info(glb)[1] > 0 and validate_glb(glb, "formats"), "GLB from HEIC/WebP views validates")
    await ws.close()

    # a restart: the session comes back with its .heic/.webp images, and the worker reads them
    srv.stop()
    srv.start()
    status, info = srv.http("GET", f"/ws/session/{sid}")
    check(status == 200 and info.get("image_count") == len(uploads), f"after restart: {status} {info}")
    ws, first = await connect(srv, sid)
    check(first.get("image_count") == len(uploads), f"reconnected after restart: {first}")
    a = await send_image(ws, webp, binary=True)
    check(a.get("type") == "ack" and a.get("image_path") == f"{len(uploads):06d}.webp", f"ack after restart: {a}")
    _, res = await generate(ws)
    check(res.get("type") == "complete" and res["metadata"]["num_frames"] == len(uploads) + 1,
          f"generate after restart: {str(res)[:300]}")
    await ws.close()


run(main())

# da3-infer (offline) reads them as well
out = os.path.join(tmp, "infer.glb")
r = subprocess.run([os.path.join(BUILD, "da3-infer"), "--model", "demo", "--process-res", "140", "--num-max-points", "3000",
                    "--images", os.path.join(tmp, "a.heic"), os.path.join(tmp, "b.webp"), os.path.join(tmp, "d.webp"),
                    "--glb", out], capture_output=True, text=True, timeout=600)
check(r.returncode == 0 and os.path.exists(out) and validate_glb(open(out, "rb").read(), "infer-formats"),
      f"da3-infer on .heic/.webp: rc {r.returncode} {r.stderr[-500:]}")

srv.cleanup()
shutil.rmtree(tmp, ignore_errors=True)
finish("test_image_formats")
