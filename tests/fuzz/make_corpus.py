#!/usr/bin/python3
"""Writes the fuzz harnesses' seed corpus, tests/fuzz/corpus/<name>/ (committed; run only to
regenerate it). Seeds are small, valid and broken inputs for each parser; the regression inputs
of fixed bugs (regress-*) are kept as they are. Images come from the project's own fixtures
(tests/data/images), from tests/tools/make_jpeg (MAKE_JPEG=path, default build/tools/make_jpeg)
and, for HEIC/WebP, from heif-enc and cwebp when installed. Nothing is downloaded.

    MAKE_JPEG=build/tools/make_jpeg /usr/bin/python3 tests/fuzz/make_corpus.py
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(ROOT))
CORPUS = os.path.join(ROOT, "corpus")


def reset(name):
    d = os.path.join(CORPUS, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if not f.startswith("regress-"):
            os.unlink(os.path.join(d, f))
    return d


def put(d, fname, data):
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data)


def dumps(o):
    return json.dumps(o, separators=(",", ":"))


CAM = {"extrinsics": [[1, 0, 0, 0.5], [0, 1, 0, -0.25], [0, 0, 1, 2], [0, 0, 0, 1]],
       "intrinsics": [[500, 0, 320], [0, 500, 240], [0, 0, 1]]}
# A rotation about an oblique axis (3x4 form) with skew in the intrinsics.
CAM34 = {"extrinsics": [[0.36, 0.48, -0.8, 1], [-0.8, 0.6, 0, 2], [0.48, 0.64, 0.6, 3]],
         "intrinsics": [[500, 0.5, 320], [0, 480, 240], [0, 0, 1]]}


def json_bounded():
    d = reset("json_bounded")
    put(d, "object", '{"type":"image","data":"QUJD","filename":"a.jpg","n":[1,2.5,-3e2,true,false,null]}')
    put(d, "brackets-in-strings", '{"a":"[[[{{{","b":"\\"]}\\\\","c":"\\u005b"}')
    put(d, "depth-32", "[" * 32 + "]" * 32)
    put(d, "depth-33", "[" * 33 + "]" * 33)
    put(d, "deep-objects", '{"a":' * 20 + "1" + "}" * 20)
    put(d, "unterminated-string", '{"a":"[[[')
    put(d, "stray-closers", "]]]}{[1]")
    put(d, "trailing-garbage", '{"a":1} x')
    put(d, "camera", dumps(CAM))
    put(d, "utf8", '{"name":"caf\u00e9 \u2603 \U0001f600"}')
    put(d, "bad-escape", '{"a":"\\x"}')


def b64():
    d = reset("b64")
    put(d, "empty", "")
    put(d, "three", "QUJD")
    put(d, "pad1", "QUI=")
    put(d, "pad2", "QQ==")
    put(d, "unpadded", "QUJDRA")
    put(d, "whitespace", "QU JD\r\nRE\tVG")
    put(d, "long", "TWFueSBoYW5kcyBtYWtlIGxpZ2h0IHdvcmsu" * 8)
    put(d, "data-after-pad", "QQ==QQ==")
    put(d, "bad-char", "QU*D")
    put(d, "lone-char", "QUJDR")
    put(d, "three-pads", "Q===")
    put(d, "nonzero-tail-bits", "QR==")


def ws_message():
    d = reset("ws_message")
    put(d, "image", dumps({"type": "image", "data": "/9j/4AAQSkZJRg==", "filename": "IMG_0001.jpg"}))
    put(d, "image-camera", dumps(dict({"type": "image", "data": "iVBORw0KGgo=", "filename": "b.png"}, **CAM)))
    put(d, "image-camera34", dumps(dict({"type": "image", "data": "iVBORw0KGgo="}, **CAM34)))
    put(d, "image-dataurl", dumps({"type": "image", "data": "data:image/jpeg;base64,/9j/4AAQ"}))
    put(d, "image-null-camera", dumps({"type": "image", "data": "QUJD", "extrinsics": None, "intrinsics": None}))
    put(d, "image-data-first", '{"data":"QUJD","type":"image"}')
    put(d, "image-escaped", '{"type":"image","data":"QU\\/D"}')
    put(d, "image-bad-b64", dumps({"type": "image", "data": "QU*D"}))
    put(d, "image-bad-rotation", dumps({"type": "image", "data": "QUJD",
                                        "extrinsics": [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]],
                                        "intrinsics": CAM["intrinsics"]}))
    put(d, "init", dumps({"type": "init", "max_images": 20, "process_res": 280,
                          "process_res_method": "lower_bound_crop", "conf_thresh_percentile": 5.5,
                          "num_max_points": 50000, "show_cameras": False, "auto_generate_after": 4}))
    put(d, "init-streaming", dumps({"type": "init", "streaming": True, "chunk_size": 8, "overlap": 3}))
    put(d, "init-resume", dumps({"type": "init", "session_id": "0f8b6f64-2c47-4c1e-9d1a-6f1d2b3c4d5e"}))
    put(d, "init-bad", dumps({"type": "init", "process_res": 1e300, "overlap": 900}))
    put(d, "generate", dumps({"type": "generate", "incremental": True}))
    put(d, "finalize", dumps({"type": "finalize"}))
    put(d, "ping", dumps({"type": "ping"}))
    put(d, "not-object", "[1,2,3]")
    put(d, "nested", '{"type":"image","x":' + "[" * 40 + "]" * 40 + ',"data":"QUJD"}')
    put(d, "truncated", '{"type":"image","data":"QUJD')


def image():
    d = reset("image")
    src = os.path.join(REPO, "tests", "data", "images")
    # The decoder's own fixtures: 8 EXIF orientations, grey/CMYK/progressive JPEG, PNG layouts.
    for f in sorted(os.listdir(src)):
        if f.endswith((".jpg", ".png")) and not f.startswith("huge") and os.path.getsize(os.path.join(src, f)) <= 1024:
            shutil.copy(os.path.join(src, f), os.path.join(d, f))
    make_jpeg = os.environ.get("MAKE_JPEG", os.path.join(REPO, "build", "tools", "make_jpeg"))
    tmp = tempfile.mkdtemp()
    try:
        made = {}
        for name, args in [("mj_16x12_q50.jpg", ["16", "12", "3", "50"]), ("mj_9x7_q90.jpg", ["9", "7", "5", "90"]),
                           ("mj_8x6.png", ["8", "6", "3"])]:
            out = os.path.join(tmp, name)
            subprocess.run([make_jpeg, out] + args, check=True)
            made[name] = open(out, "rb").read()
            put(d, name, made[name])
        # Broken: truncated halfway, header only; and one byte flipped (in the entropy data, in the
        # chunk after IHDR), which the decoders may or may not notice.
        jpg = made["mj_16x12_q50.jpg"]
        put(d, "broken_truncated.jpg", jpg[: len(jpg) // 2])
        put(d, "broken_header_only.jpg", jpg[:200])
        put(d, "flipped_entropy_byte.jpg", jpg[:-40] + bytes([jpg[-40] ^ 0xFF]) + jpg[-39:])
        png = made["mj_8x6.png"]
        put(d, "broken_truncated.png", png[: len(png) - 20])
        put(d, "flipped_byte40.png", png[:40] + bytes([png[40] ^ 1]) + png[41:])
        pngsrc = os.path.join(tmp, "mj_8x6.png")
        rot = os.path.join(src, "orient_6.jpg")
        for tool, args, name in [
            ("heif-enc", ["-q", "30", pngsrc, "-o"], "heic_8x6.heic"),
            ("cwebp", ["-quiet", "-q", "30", pngsrc, "-o"], "webp_lossy_8x6.webp"),
            ("cwebp", ["-quiet", "-lossless", pngsrc, "-o"], "webp_lossless_8x6.webp"),
            ("cwebp", ["-quiet", "-q", "20", "-metadata", "exif", rot, "-o"], "webp_exif_orient6.webp"),
        ]:
            if not shutil.which(tool):
                print(f"make_corpus: {tool} not installed, {name} not made", file=sys.stderr)
                continue
            out = os.path.join(tmp, name)
            subprocess.run([tool] + args + [out], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            data = open(out, "rb").read()
            put(d, name, data)
            put(d, "broken_truncated_" + name, data[: len(data) * 2 // 3])
    finally:
        shutil.rmtree(tmp)
    put(d, "garbage", b"GIF89a\x01\x00\x01\x00")


def frame(op, payload, fin=True, mask=b"\x37\xfa\x21\x3d", masked=True, rsv=0, form=None):
    b0 = (0x80 if fin else 0) | rsv | op
    n = len(payload)
    m = 0x80 if masked else 0
    form = form or (0 if n < 126 else 126 if n < 65536 else 127)
    if form == 0:
        hdr = bytes([b0, m | n])
    elif form == 126:
        hdr = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if not masked:
        return hdr + payload
    return hdr + mask + bytes(p ^ mask[i % 4] for i, p in enumerate(payload))


def ws_frame():
    d = reset("ws_frame")
    # The first byte also sets the trickle chunk size (1 + byte % 8) of the second reading.
    put(d, "text", frame(1, b'{"type":"ping"}'))
    put(d, "fragmented-with-ping", frame(1, b"Hel", fin=False) + frame(9, b"pi") + frame(0, "lo \u00e9".encode()))
    put(d, "close", frame(8, struct.pack(">H", 1000) + b"bye"))
    put(d, "close-empty", frame(8, b""))
    put(d, "close-bad-code", frame(8, struct.pack(">H", 1005)))
    put(d, "close-bad-utf8", frame(8, struct.pack(">H", 1001) + b"\xc3\x28"))
    put(d, "binary-16bit-len", frame(2, bytes(range(256)) * 2))
    put(d, "binary-64bit-len", frame(2, b"\x00\x01\x02", form=127))
    put(d, "pong-then-text", frame(10, b"x") + frame(1, "\u2603\U0001f600".encode()))
    put(d, "unmasked", frame(1, b"hi", masked=False))
    put(d, "rsv-set", frame(1, b"hi", rsv=0x40))
    put(d, "bad-opcode", frame(3, b"hi"))
    put(d, "long-ping", frame(9, b"p" * 126))
    put(d, "fragmented-ping", frame(9, b"p", fin=False))
    put(d, "orphan-continuation", frame(0, b"x"))
    put(d, "text-bad-utf8", frame(1, b"\xed\xa0\x80"))
    put(d, "huge-announced", bytes([0x82, 0xFF]) + struct.pack(">Q", 1 << 40) + b"\x00\x00\x00\x00")
    put(d, "msb-length", bytes([0x82, 0xFF]) + struct.pack(">Q", 1 << 63) + b"\x00\x00\x00\x00")
    put(d, "partial-header", bytes([0x81, 0xFE, 0x01]))


def http_head():
    d = reset("http_head")
    put(d, "upgrade", "GET /ws/reconstruct HTTP/1.1\r\nHost: example.org\r\nUpgrade: websocket\r\n"
        "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n")
    put(d, "create-post", "POST /ws/session/create?process_res=504&max_images=10 HTTP/1.1\r\nHost: a\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    put(d, "bare-lf", "GET / HTTP/1.0\nHost: a\n\n")
    put(d, "mixed-terminator", "GET /status HTTP/1.1\nAccept: */*\r\n\r\n")
    put(d, "bare-cr", "GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n")
    put(d, "http2", "GET / HTTP/2.0\r\n\r\n")
    put(d, "no-version", "GET /\r\n\r\n")
    put(d, "obs-fold", "GET / HTTP/1.1\r\nX: a\r\n  b\r\n\r\n")
    put(d, "empty-name", "GET / HTTP/1.1\r\n: v\r\n\r\n")
    put(d, "control-in-value", "GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n")
    put(d, "tabs-and-blanks", "DELETE /ws/session/x HTTP/1.1\r\nX-A:\t v \t\r\nX-B:\r\n\r\n")
    put(d, "chunked", "POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    put(d, "many-headers", "GET / HTTP/1.1\r\n" + "".join(f"H{i}: {i}\r\n" for i in range(65)) + "\r\n")
    put(d, "incomplete", "GET / HTTP/1.1\r\nHost: a\r\n")


def safetensors_file(entries, data, meta=None, hlen=None):
    h = dict(entries)
    if meta is not None:
        h["__metadata__"] = meta
    t = json.dumps(h).encode()
    t += b" " * ((8 - len(t) % 8) % 8)
    return struct.pack("<Q", len(t) if hlen is None else hlen) + t + data


def safetensors():
    d = reset("safetensors")
    f32 = struct.pack("<4f", 1, 2, 3, 4)
    put(d, "valid", safetensors_file({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                                      "b": {"dtype": "I64", "shape": [1], "data_offsets": [16, 24]}},
                                     f32 + struct.pack("<q", 7), {"format": "pt"}))
    put(d, "scalar-and-empty", safetensors_file({"s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},
                                                 "e": {"dtype": "BF16", "shape": [0, 3], "data_offsets": [4, 4]}},
                                                f32[:4]))
    put(d, "unknown-dtype", safetensors_file({"x": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8))
    put(d, "offsets-past-end", safetensors_file({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 32]}}, f32))
    put(d, "size-mismatch", safetensors_file({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, f32))
    put(d, "nine-dims", safetensors_file({"w": {"dtype": "U8", "shape": [1] * 9, "data_offsets": [0, 1]}}, b"\0"))
    put(d, "header-too-long", safetensors_file({}, b"", hlen=1 << 40))
    put(d, "not-object", struct.pack("<Q", 8) + b"[1,2,3] ")
    put(d, "short", b"\x08\x00\x00")


def camera():
    d = reset("camera")
    put(d, "4x4", dumps(CAM))
    put(d, "3x4-skew", dumps(CAM34))
    put(d, "stored-precision", json.dumps({"extrinsics": [[0.99999999999999978, 0, 0, 1e-17], [0, 1, 0, 0],
                                                          [0, 0, 1, 123456.78901234567], [0, 0, 0, 1]],
                                           "intrinsics": [[1234.5678901234567, 0, 640.5], [0, 1234.5, 360.25], [0, 0, 1]]}))
    put(d, "reflection", dumps({"extrinsics": [[-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], "intrinsics": CAM["intrinsics"]}))
    put(d, "bad-last-row", dumps({"extrinsics": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]],
                                  "intrinsics": CAM["intrinsics"]}))
    put(d, "bad-intrinsics", dumps({"extrinsics": CAM["extrinsics"], "intrinsics": [[0, 0, 1], [0, 1, 1], [0, 0, 1]]}))
    put(d, "far-translation", dumps({"extrinsics": [[1, 0, 0, 1e10], [0, 1, 0, 0], [0, 0, 1, 0]], "intrinsics": CAM["intrinsics"]}))
    put(d, "missing-intrinsics", dumps({"extrinsics": CAM["extrinsics"]}))
    put(d, "strings", '{"extrinsics":[["1",0,0,0]],"intrinsics":null}')
    put(d, "huge-number", '{"extrinsics":[[1e999,0,0,0],[0,1,0,0],[0,0,1,0]],"intrinsics":[[1,0,0],[0,1,0],[0,0,1]]}')


SEP = "\n--8<--\n"
SID = "0f8b6f64-2c47-4c1e-9d1a-6f1d2b3c4d5e"
CFG = {"process_res": 504, "process_res_method": "upper_bound_resize", "conf_thresh_percentile": 10.0,
       "num_max_points": 100000, "show_cameras": True, "auto_generate_after": 0}
STATE = {"session_id": SID, "created_at": 1733100000.25, "last_activity": 1733100100.5, "status": "completed",
         "max_images": 100, "config": CFG}


def session_store():
    d = reset("session_store")
    # Parts: session.json, images/000000.meta.json, images/000000.camera.json, stream/state.json.
    put(d, "current", dumps(STATE) + SEP + dumps({"name": "IMG_0001.jpg"}) + SEP + dumps(CAM))
    put(d, "current-no-meta", dumps(dict(STATE, status="error", error_message="worker died")))
    put(d, "processing-auto", dumps(dict(STATE, status="processing", last_auto_generate_count=1,
                                         config=dict(CFG, auto_generate_after=2))))
    put(d, "streaming", dumps(dict(STATE, config=dict(CFG, streaming=True, chunk_size=8, overlap=4)))
        + SEP + SEP + SEP + dumps({"done": 2}))
    put(d, "legacy", dumps(dict(STATE, images=[{"file": "000000.jpg", "name": "a.jpg", "camera": False},
                                               {"file": "000001.png", "name": "b.png", "camera": True}])))
    put(d, "legacy-bad-file", dumps(dict(STATE, images=[{"file": "../000000.jpg"}, {"file": "000001.png"}])))
    put(d, "long-name", dumps(STATE) + SEP + dumps({"name": "\u00e9" * 200}))
    put(d, "bad-camera", dumps(STATE) + SEP + SEP + '{"extrinsics":[[2,0,0,0]]}')
    put(d, "not-object", "[]")
    put(d, "bad-values", dumps(dict(STATE, max_images=-3, status=7, config={"process_res": "x", "overlap": 1e300})))


def session_config():
    d = reset("session_config")
    put(d, "query", "process_res=504&max_images=10&process_res_method=upper_bound_crop")
    put(d, "query-encoded", "process_res_method=lower%5Fbound%5Fresize&show_cameras=OFF&conf_thresh_percentile=1e1")
    put(d, "query-and-body", "show_cameras=no&conf_thresh_percentile=12.5\0"
        + dumps({"num_max_points": 1000, "streaming": True, "chunk_size": 8, "overlap": 3}))
    put(d, "body-only", "\0" + dumps({"process_res": 280.0, "auto_generate_after": 5, "show_cameras": False}))
    put(d, "body-conflict", "\0" + dumps({"streaming": True, "auto_generate_after": 5}))
    put(d, "body-not-object", "\0[1]")
    put(d, "query-bad", "process_res=abc&max_images=0")
    put(d, "query-overflow", "num_max_points=99999999999999999999999&overlap=-1")
    put(d, "body-huge-real", "\0" + '{"max_images":1e300,"chunk_size":-1e300}')
    put(d, "query-long-value", "process_res_method=" + "a" * 300)


def client_address():
    d = reset("client_address")
    for name, v in (("v4", "10.0.0.1"), ("v4-blanks", " \t192.0.2.7 "), ("v6", "2001:db8:1:2:3:4:5:6"),
                    ("v6-short", "::1"), ("mapped", "::ffff:10.1.2.3"), ("xff", "1.1.1.1, 2.2.2.2,3.3.3.3"),
                    ("xff-v6", "10.0.0.1, 2001:db8::1"), ("bad-octet", "10.0.0.256"), ("junk", "evil, x"),
                    ("zone", "fe80::1%eth0"), ("brackets", "[::1]"), ("crlf", "10.0.0.1\r\nX-Evil: 1"),
                    ("long", "1" * 80), ("empty-last", "10.0.0.1,")):
        put(d, name, v)


def main():
    os.makedirs(CORPUS, exist_ok=True)
    for gen in (json_bounded, b64, ws_message, image, ws_frame, http_head, safetensors, camera, session_store,
                session_config, client_address):
        gen()
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(CORPUS) for f in fs)
    print(f"make_corpus: {total} bytes in {CORPUS}")


if __name__ == "__main__":
    main()
