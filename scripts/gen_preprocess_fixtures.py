#!/usr/bin/python3
"""Generates the small committed fixtures for tests/unit/test_image_decode.c and test_preprocess.c.

Run once by a developer with Debian's python3-opencv and python3-pil:
    /usr/bin/python3 scripts/gen_preprocess_fixtures.py
CI never runs this; the C tests only read the files written here.

tests/data/images/      tiny JPEG/PNG decode cases, the expected RGB8 pixels (*.rgb, raw HxWx3)
                        and manifest.txt ("<file> <width> <height> <expected.rgb> <max abs diff>"),
                        plus crafted files whose headers claim 20000x20000 (or a too-long side)
tests/data/preprocess/  scenes (in_*.png), DA3-preprocessed results made with cv2 (out_*.png),
                        cases.txt, dims.txt (output sizes for many inputs) and norm.f32
                        (ImageNet-normalised value of every uint8 per channel, float32 LE)

The DA3 reference logic below re-states DA3's InputProcessor (utils/io/input_processor.py):
boundary resize with Python round(), cv2 INTER_AREA when shrinking / INTER_CUBIC when enlarging,
then the patch-14 fix-up by a second cv2 resize (nearest multiple, ties up) or a centre crop.
"""

import os
import struct
import sys
import warnings
import zlib

import cv2
import numpy as np
from PIL import Image, ImageOps

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
IMG_DIR = os.path.join(ROOT, "tests", "data", "images")
PRE_DIR = os.path.join(ROOT, "tests", "data", "preprocess")
PATCH = 14
MAX_PIXELS = 8192 * 8192  # IMAGE_MAX_PIXELS in common/image_decode.h
METHODS = ["upper_bound_resize", "upper_bound_crop", "lower_bound_resize", "lower_bound_crop"]


# ----------------------------------------------------------------------------------------------
# DA3 reference preprocessing (behaviour of InputProcessor, written from its description)
# ----------------------------------------------------------------------------------------------
def boundary_size(w, h, res, method):
    """Size after the boundary resize and whether cv2 is called at all / with which filter."""
    ref = max(w, h) if method.startswith("upper") else min(w, h)
    if ref == res:
        return w, h, None
    scale = res / float(ref)
    nw = max(1, int(round(w * scale)))  # Python round(): ties to even
    nh = max(1, int(round(h * scale)))
    return nw, nh, (cv2.INTER_CUBIC if scale > 1.0 else cv2.INTER_AREA)


def nearest_multiple(x, p):
    down = (x // p) * p
    up = down + p
    return up if abs(up - x) <= abs(x - down) else down


def final_size(w, h, res, method):
    bw, bh, _ = boundary_size(w, h, res, method)
    if method.endswith("resize"):
        return max(1, nearest_multiple(bw, PATCH)), max(1, nearest_multiple(bh, PATCH))
    return (bw // PATCH) * PATCH, (bh // PATCH) * PATCH


def da3_preprocess(rgb, res, method):
    """uint8 HxWx3 -> uint8 processed image, as DA3 does it (PIL image in, cv2 for resizes)."""
    img = Image.fromarray(rgb).convert("RGB")
    w, h = img.size
    bw, bh, interp = boundary_size(w, h, res, method)
    if interp is not None:
        img = Image.fromarray(cv2.resize(np.asarray(img), (bw, bh), interpolation=interp))
    w, h = img.size
    if method.endswith("resize"):
        nw, nh = max(1, nearest_multiple(w, PATCH)), max(1, nearest_multiple(h, PATCH))
        if (nw, nh) != (w, h):
            interp = cv2.INTER_CUBIC if (nw > w or nh > h) else cv2.INTER_AREA
            img = Image.fromarray(cv2.resize(np.asarray(img), (nw, nh), interpolation=interp))
    else:
        nw, nh = (w // PATCH) * PATCH, (h // PATCH) * PATCH
        if (nw, nh) != (w, h):
            left, top = (w - nw) // 2, (h - nh) // 2
            img = img.crop((left, top, left + nw, top + nh))
    return np.asarray(img)


# ----------------------------------------------------------------------------------------------
# Synthetic scenes: gradients, sharp-edged shapes, 1-px lines (cubic overshoot), a noise patch
# ----------------------------------------------------------------------------------------------
def make_scene(w, h, seed, noise_side):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.int32)
    img[..., 0] = x * 255 // max(w - 1, 1)
    img[..., 1] = y * 255 // max(h - 1, 1)
    img[..., 2] = 255 - (x * y * 255) // max((w - 1) * (h - 1), 1)
    for _ in range(3):
        cx, cy = rng.integers(0, w), rng.integers(0, h)
        r = rng.integers(max(2, min(w, h) // 10), max(3, min(w, h) // 3))
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.integers(0, 256, 3)
    for _ in range(2):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        img[y0:y0 + rng.integers(2, max(3, h // 4)), x0:x0 + rng.integers(2, max(3, w // 4))] = \
            rng.integers(0, 256, 3)
    img[h // 3, :] = 255
    img[:, w // 3] = 0
    img[(2 * h) // 3, :] = (0, 0, 0)
    nw, nh = min(noise_side, w // 2), min(noise_side * 3 // 4, h // 2)
    img[h - nh:h, w - nw:w] = rng.integers(0, 256, (nh, nw, 3))
    return img.astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Hand-rolled PNG writer: every bit depth / colour type / Adam7, so the decoder sees all layouts
# ----------------------------------------------------------------------------------------------
def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def pack_row(samples, depth):
    """samples: 1-D ints (already interleaved channels) -> packed bytes for that bit depth."""
    if depth == 16:
        return b"".join(struct.pack(">H", int(v)) for v in samples)
    if depth == 8:
        return bytes(int(v) for v in samples)
    out, acc, nbits = bytearray(), 0, 0
    for v in samples:
        acc = (acc << depth) | int(v)
        nbits += depth
        if nbits == 8:
            out.append(acc)
            acc, nbits = 0, 0
    if nbits:
        out.append(acc << (8 - nbits))
    return bytes(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def encode_png(samples, depth, color_type, plte=None, trns=None, interlace=False, ihdr_size=None):
    """samples: (h, w, c) ints. ihdr_size overrides the IHDR dimensions (crafted files)."""
    h, w = samples.shape[:2]
    iw, ih = ihdr_size or (w, h)
    raw = bytearray()
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    for (x0, y0, dx, dy) in passes:
        sub = samples[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        for row in sub:
            raw += b"\x00" + pack_row(row.reshape(-1), depth)
    out = b"\x89PNG\r\n\x1a\n"
    out += png_chunk(b"IHDR", struct.pack(">IIBBBBB", iw, ih, depth, color_type, 0, 0, 1 if interlace else 0))
    if plte is not None:
        out += png_chunk(b"PLTE", bytes(np.asarray(plte, np.uint8).reshape(-1)))
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    out += png_chunk(b"IDAT", zlib.compress(bytes(raw), 9))
    out += png_chunk(b"IEND", b"")
    return out


# ----------------------------------------------------------------------------------------------
# EXIF (APP1) with an orientation tag, in either TIFF byte order
# ----------------------------------------------------------------------------------------------
def exif_app1(orientation, big_endian, extra_entry):
    e = ">" if big_endian else "<"
    entries = []
    if extra_entry:  # a Make tag first (ASCII with an out-of-line value), so the parser must walk the IFD
        entries.append(struct.pack(e + "HHI", 0x010F, 2, 6) + struct.pack(e + "I", 0))
    entries.append(struct.pack(e + "HHI", 0x0112, 3, 1) + struct.pack(e + "HH", orientation, 0))
    ifd_end = 8 + 2 + 12 * len(entries) + 4
    if extra_entry:  # patch the Make value offset to point after the IFD
        entries[0] = entries[0][:8] + struct.pack(e + "I", ifd_end)
    tiff = (b"MM\x00\x2a" if big_endian else b"II\x2a\x00") + struct.pack(e + "I", 8)
    tiff += struct.pack(e + "H", len(entries)) + b"".join(entries) + struct.pack(e + "I", 0)
    if extra_entry:
        tiff += b"Test\x00\x00"
    return b"Exif\x00\x00" + tiff


# Stored image = inverse of the display transform, so every file displays the same upright picture.
INVERSE = {1: None, 2: Image.FLIP_LEFT_RIGHT, 3: Image.ROTATE_180, 4: Image.FLIP_TOP_BOTTOM,
           5: Image.TRANSPOSE, 6: Image.ROTATE_90, 7: Image.TRANSVERSE, 8: Image.ROTATE_270}


def upright_pattern():
    """16x12: red top-left, green top-right, blue bottom-left, white bottom-right quadrants."""
    a = np.zeros((12, 16, 3), np.uint8)
    a[:6, :8] = (255, 0, 0)
    a[:6, 8:] = (0, 255, 0)
    a[6:, :8] = (0, 0, 255)
    a[6:, 8:] = (255, 255, 255)
    return a


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def gen_images():
    os.makedirs(IMG_DIR, exist_ok=True)
    manifest = []

    def expect(name, rgb, tol):
        rgb = np.ascontiguousarray(rgb, np.uint8)
        base = os.path.splitext(name)[0] + ".rgb"
        write(os.path.join(IMG_DIR, base), rgb.tobytes())
        manifest.append("%s %d %d %s %d" % (name, rgb.shape[1], rgb.shape[0], base, tol))

    # JPEG: 8 EXIF orientations (odd ones little-endian "II", even ones big-endian "MM")
    up = Image.fromarray(upright_pattern())
    for k in range(1, 9):
        stored = up if INVERSE[k] is None else up.transpose(INVERSE[k])
        name = "orient_%d.jpg" % k
        path = os.path.join(IMG_DIR, name)
        stored.save(path, quality=95, subsampling=0, exif=exif_app1(k, k % 2 == 0, k in (3, 6)))
        shown = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        assert shown.size == (16, 12), (k, shown.size)
        assert np.abs(np.asarray(shown).astype(int) - upright_pattern()).max() < 60, k
        expect(name, np.asarray(shown), 2)

    scene = make_scene(17, 13, 7, 4)
    Image.fromarray(scene).convert("L").save(os.path.join(IMG_DIR, "jpeg_gray.jpg"), quality=90)
    Image.fromarray(scene).save(os.path.join(IMG_DIR, "jpeg_progressive.jpg"), quality=90, progressive=True)
    Image.fromarray(scene).convert("CMYK").save(os.path.join(IMG_DIR, "jpeg_cmyk.jpg"), quality=90)
    for name in ("jpeg_gray.jpg", "jpeg_progressive.jpg", "jpeg_cmyk.jpg"):
        expect(name, np.asarray(Image.open(os.path.join(IMG_DIR, name)).convert("RGB")), 2)

    # PNG: every layout. Expected = 16-bit samples keep their high byte (like PIL for RGB/RGBA/LA),
    # low depths scale to 0..255, palette looks up, alpha and tRNS are ignored.
    rng = np.random.default_rng(3)
    H, W = 7, 9

    def png_case(name, samples, depth, ctype, expected, plte=None, trns=None, interlace=False, pil_check=True):
        data = encode_png(samples, depth, ctype, plte, trns, interlace)
        write(os.path.join(IMG_DIR, name), data)
        if pil_check:
            pil = np.asarray(Image.open(os.path.join(IMG_DIR, name)).convert("RGB"))
            assert np.array_equal(pil, expected), name
        expect(name, expected, 0)

    rgb8 = rng.integers(0, 256, (H, W, 3))
    a8 = rng.integers(0, 256, (H, W, 1))
    g8 = rng.integers(0, 256, (H, W, 1))
    rgb16 = rng.integers(0, 65536, (H, W, 3))
    a16 = rng.integers(0, 65536, (H, W, 1))
    g16 = rng.integers(0, 65536, (H, W, 1))
    gray3 = lambda g: np.repeat(g, 3, axis=2)
    png_case("png_rgb8.png", rgb8, 8, 2, rgb8)
    png_case("png_rgba8.png", np.concatenate([rgb8, a8], 2), 8, 6, rgb8)
    png_case("png_gray8.png", g8, 8, 0, gray3(g8))
    png_case("png_graya8.png", np.concatenate([g8, a8], 2), 8, 4, gray3(g8))
    for depth, mul in ((1, 255), (2, 85), (4, 17)):
        g = rng.integers(0, 1 << depth, (H, W, 1))
        png_case("png_gray%d.png" % depth, g, depth, 0, gray3(g * mul))
    # PIL clips 16-bit greyscale to 255 on .convert("RGB"); we keep the high byte instead.
    png_case("png_gray16.png", g16, 16, 0, gray3(g16 >> 8), pil_check=False)
    png_case("png_rgb16.png", rgb16, 16, 2, rgb16 >> 8)
    png_case("png_rgba16.png", np.concatenate([rgb16, a16], 2), 16, 6, rgb16 >> 8)
    png_case("png_graya16.png", np.concatenate([g16, a16], 2), 16, 4, gray3(g16 >> 8))
    pal = rng.integers(0, 256, (20, 3))
    idx = rng.integers(0, 20, (H, W, 1))
    png_case("png_pal8.png", idx, 8, 3, pal[idx[..., 0]], plte=pal)
    pal16 = rng.integers(0, 256, (16, 3))
    idx4 = rng.integers(0, 16, (H, W, 1))
    png_case("png_pal4_trns.png", idx4, 4, 3, pal16[idx4[..., 0]], plte=pal16, trns=bytes(range(0, 160, 10)))
    png_case("png_gray8_trns.png", g8, 8, 0, gray3(g8), trns=struct.pack(">H", int(g8[0, 0, 0])))
    png_case("png_rgb8_adam7.png", rgb8, 8, 2, rgb8, interlace=True)
    pal4 = rng.integers(0, 256, (4, 3))
    idx2 = rng.integers(0, 4, (H, W, 1))
    png_case("png_pal2_adam7.png", idx2, 2, 3, pal4[idx2[..., 0]], plte=pal4, interlace=True)

    with open(os.path.join(IMG_DIR, "manifest.txt"), "w") as f:
        f.write("# <file> <width> <height> <expected raw RGB8> <max abs diff allowed>\n")
        f.write("\n".join(manifest) + "\n")

    # Crafted headers without pixel data: a 20000x20000 PNG and JPEG, and a 16385-pixel-wide PNG.
    tiny = np.zeros((1, 1, 3), np.int32)
    huge = encode_png(tiny, 8, 2, ihdr_size=(20000, 20000))
    write(os.path.join(IMG_DIR, "huge.png"), huge[:huge.index(b"IEND") - 4])  # IDAT kept, no IEND
    write(os.path.join(IMG_DIR, "wide.png"), encode_png(tiny, 8, 2, ihdr_size=(16385, 1)))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save("/tmp/_tiny.jpg", quality=90)
    jpg = bytearray(open("/tmp/_tiny.jpg", "rb").read())
    sof = jpg.index(b"\xff\xc0")
    struct.pack_into(">HH", jpg, sof + 5, 20000, 20000)
    sos = jpg.index(b"\xff\xda")
    sos_end = sos + 2 + struct.unpack(">H", jpg[sos + 2:sos + 4])[0]
    write(os.path.join(IMG_DIR, "huge.jpg"), bytes(jpg[:sos_end]) + b"\x12\x34\x56\x78\xff\xd9")


def gen_preprocess():
    os.makedirs(PRE_DIR, exist_ok=True)
    # (input size, noise patch side, [(method, process_res), ...])
    plan = [
        ((100, 75), 8, [("upper_bound_resize", 140), ("upper_bound_crop", 140),    # cubic upscaling
                        ("lower_bound_resize", 70), ("lower_bound_crop", 70)]),
        ((30, 40), 4, [("upper_bound_resize", 70)]),            # portrait; 52.5 -> 52 (ties to even)
        ((40, 14), 4, [("upper_bound_resize", 140)]),           # 3.5x upscale, cubic fix-up
        ((280, 210), 12, [("upper_bound_resize", 140)]),        # INTER_AREA integer 2x, cubic fix-up
        ((210, 150), 8, [("upper_bound_crop", 70)]),            # INTER_AREA integer 3x
        ((280, 200), 8, [("upper_bound_resize", 70),            # INTER_AREA integer 4x
                         ("upper_bound_crop", 35)]),            # integer 8x, like 4032x3024 -> 504x378
        ((333, 250), 12, [("upper_bound_crop", 140), ("lower_bound_resize", 70)]),  # fractional area
        ((160, 44), 6, [("upper_bound_resize", 140), ("upper_bound_crop", 140)]),  # 38.5 -> 38
        ((141, 100), 8, [("upper_bound_resize", 140)]),         # 141 -> 140, tiny shrink
        ((640, 480), 32, [("upper_bound_resize", 504)]),        # the default 640x480 -> 504x378
    ]
    cases = []
    for (w, h), noise, runs in plan:
        scene = make_scene(w, h, w * 1000 + h, noise)
        in_name = "in_%dx%d.png" % (w, h)
        Image.fromarray(scene).save(os.path.join(PRE_DIR, in_name), optimize=True)
        for method, res in runs:
            out = da3_preprocess(scene, res, method)
            oh, ow = out.shape[:2]
            assert (ow, oh) == final_size(w, h, res, method)
            out_name = "out_%dx%d_%s_%d.png" % (w, h, method, res)
            Image.fromarray(out).save(os.path.join(PRE_DIR, out_name), optimize=True)
            cases.append("%s %s %d %d %d %s" % (in_name, method, res, ow, oh, out_name))
    with open(os.path.join(PRE_DIR, "cases.txt"), "w") as f:
        f.write("# <input> <method> <process_res> <out w> <out h> <expected (cv2-made)>\n")
        f.write("\n".join(cases) + "\n")

    # Output sizes: random inputs, DA3's own examples, and exact .5 ties of w*scale (banker's rounding).
    rng = np.random.default_rng(11)
    sizes = set()
    for _ in range(30):
        w, h = (int(v) for v in np.exp(rng.uniform(0, np.log(6000), 2)))
        sizes.add((max(w, 1), max(h, 1), int(rng.choice([140, 280, 504, 518, 640, 1024]))))
    sizes |= {(1920, 1080, 504), (1080, 1920, 504), (640, 640, 640), (4032, 3024, 504), (5, 600, 504),
              (600, 5, 504), (1, 1, 504), (13, 13, 13), (504, 376, 504), (1208, 680, 504), (680, 1208, 504)}
    ties = []
    for res in (140, 504):
        for longest in range(res + 1, 1200):
            scale = res / float(longest)
            for other in range(1, longest):
                v = other * scale
                if v - np.floor(v) == 0.5:
                    ties.append((longest, other, res))
                    ties.append((other, longest, res))
                    break
            if len(ties) > 24:
                break
    sizes |= set(ties)
    rows = []
    for (w, h, res) in sorted(sizes):
        for m in METHODS:
            fw, fh = final_size(w, h, res, m)
            bw, bh, _ = boundary_size(w, h, res, m)
            if fw < PATCH or fh < PATCH:
                fw, fh = 0, 0  # DA3 would produce a non-multiple-of-14 or empty image: refused
            elif max(bw * bh, fw * fh) > MAX_PIXELS:
                fw, fh = -1, -1  # DA3 would go on; the server refuses images over its pixel limit
            rows.append("%d %d %d %s %d %d" % (w, h, res, m, fw, fh))
    with open(os.path.join(PRE_DIR, "dims.txt"), "w") as f:
        f.write("# <w> <h> <process_res> <method> <out w> <out h>"
                "   (0 0: refused, under one patch; -1 -1: refused, over IMAGE_MAX_PIXELS)\n")
        f.write("\n".join(rows) + "\n")

    # ToTensor + Normalize in float32, as torch does it: (v / 255 - mean) / std.
    v = np.arange(256, dtype=np.float32) / np.float32(255)
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    table = np.stack([(v - mean[c]) / std[c] for c in range(3)]).astype("<f4")
    write(os.path.join(PRE_DIR, "norm.f32"), table.tobytes())


def main():
    # PIL nags about palette+tRNS when converting; dropping the transparency is the point here.
    warnings.filterwarnings("ignore", message="Palette images with Transparency")
    if cv2.__version__.split(".")[0] != "4":
        sys.exit("needs OpenCV 4.x, got " + cv2.__version__)
    gen_images()
    gen_preprocess()
    print("fixtures written with OpenCV %s, Pillow %s" % (cv2.__version__, Image.__version__))


if __name__ == "__main__":
    main()
