"""The web client in a real browser: Debian's Chromium, driven by playwright-core (tests/web/e2e.js),
against the real da3-server with the demo model. Opens the page, sets process_res 140 and
num_max_points 5000, attaches 3 JPEGs, uploads them (binary frames), uploads a broken file (must be
rejected and shown), generates, then checks the page: point count > 0 in the page and in the
three.js scene (and drawn by its last frame), lit pixels on the canvas, the UNTRAINED banner, the
frustums drawn from the metadata where the GLB has its own, orbit / fit view / point size / cameras
toggle, the screenshot button's PNG, the "Download GLB" link gives a GLB matching the page; then
live mode: a 4th photo is uploaded and an incremental result ("delta") replaces the cloud in place
(same page, camera kept); reconnect by id works. Last, a 100,000-point cloud (one 640x480 view at
process_res 504): drawn, still orbiting under the mouse, and its median frame time while orbiting
printed (not asserted). The browser console must stay free of errors. Screenshots go to a temp dir
(printed).

A second, short scenario runs against a server with --api-keys and --private-status, as a user key
(keys_scenario below): the page loads without a key and asks for one, a wrong key is reported as
refused, the right one uploads 2 photos and generates (the cloud is drawn; /status is 403 for this
key, so the untrained banner comes from the result); the key is in sessionStorage only and
survives a reload; after "Forget key" and another user's key, the first key's session is not found
and the page starts a new one; no key shows up in the console, the page's log or its DOM.

`test_web_page.py --keys-only` runs the second scenario alone.
`test_web_page.py --readme-screenshot` also writes the 100,000-point page to
docs/images/web-page.png, the README's screenshot (run it only to refresh that image)."""
import json
import math
import os
import secrets
import shutil
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import REPO, Server, check, finish, glb_info, make_image  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
WEB_TESTS = os.path.join(REPO, "tests", "web")
README_SCREENSHOT = os.path.join(REPO, "docs", "images", "web-page.png")


def prerequisites():
    if not os.path.exists(CHROMIUM):
        print(f"test_web_page: FAIL: {CHROMIUM} is missing; install Debian's chromium package "
              "(apt-get install -y chromium, or scripts/install-deps.sh --test)", flush=True)
        sys.exit(1)
    if not shutil.which("node") or not shutil.which("npm"):
        print("test_web_page: FAIL: node and npm are needed (apt-get install -y nodejs npm)", flush=True)
        sys.exit(1)
    # The page's three.js (web/vendor/three/) is built by `make web-assets`, which `make test` runs
    # first; run directly, this test builds it itself.
    if not os.path.exists(os.path.join(REPO, "web", "vendor", "three", "build", "three.module.js")):
        if subprocess.run(["make", "-C", REPO, "--no-print-directory", "web-assets"]).returncode != 0:
            print("test_web_page: FAIL: make web-assets failed", flush=True)
            sys.exit(1)
    if not os.path.isdir(os.path.join(WEB_TESTS, "node_modules", "playwright-core")):
        r = subprocess.run(["npm", "ci", "--prefix", WEB_TESTS, "--no-audit", "--no-fund", "--loglevel=error"])
        if r.returncode != 0:
            print("test_web_page: FAIL: npm ci --prefix tests/web failed", flush=True)
            sys.exit(1)


def glb_line_vertices(glb):
    """The vertices of a GLB's LINES primitives (the server's frustums), as one flat list of floats."""
    gltf, _, _ = glb_info(glb)
    json_len = struct.unpack_from("<I", glb, 12)[0]
    bin_len = struct.unpack_from("<I", glb, 20 + json_len)[0]
    binary = glb[28 + json_len:28 + json_len + bin_len]
    out = []
    for mesh in gltf.get("meshes", []):
        for prim in mesh["primitives"]:
            if prim.get("mode") != 1:
                continue
            acc = gltf["accessors"][prim["attributes"]["POSITION"]]
            view = gltf["bufferViews"][acc["bufferView"]]
            stride = view.get("byteStride", 12)
            start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
            for i in range(acc["count"]):
                out.extend(struct.unpack_from("<3f", binary, start + i * stride))
    return out


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    return (struct.unpack(">II", head[16:24]) if head[:8] == b"\x89PNG\r\n\x1a\n" else None)


def same_place(a, b):
    """Two camera positions equal but for float rounding."""
    if not a or not b:
        return False
    return max(abs(x - y) for x, y in zip(a, b)) < 1e-4 * max(1e-9, max(abs(v) for v in b))


def run_e2e(env):
    """Runs tests/web/e2e.js with env; returns (its result dict or None, stderr)."""
    try:
        r = subprocess.run(["node", os.path.join(WEB_TESTS, "e2e.js")], env=env, capture_output=True,
                           text=True, timeout=600)
        stdout, stderr = r.stdout, r.stderr
    except subprocess.TimeoutExpired as e:
        stdout, stderr = e.stdout or "", e.stderr or ""
        stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
        stderr = stderr.decode() if isinstance(stderr, bytes) else stderr
        check(False, "e2e.js timed out after 600 s")
    lines = [l for l in stdout.splitlines() if l.startswith("E2E_RESULT ")]
    if not check(lines, "e2e.js printed no result"):
        print(stdout, stderr, sep="\n")
        return None, stderr
    return json.loads(lines[-1][len("E2E_RESULT "):]), stderr


def keys_scenario(out, images):
    """The page against a server with --api-keys and --private-status, as a user key."""
    t0 = time.time()
    admin, user, user2 = (secrets.token_hex(16) for _ in range(3))
    wrong = secrets.token_hex(16)
    key_file = os.path.join(out, "keys")
    with open(key_file, "w") as f:
        f.write(f"# test_web_page\n{admin} ops admin\n{user} alice\n{user2} bob user\n")
    os.chmod(key_file, 0o600)
    server = Server("--api-keys", key_file, "--private-status", key=admin)
    try:
        env = dict(os.environ, E2E_URL=server.base, E2E_IMAGES=json.dumps(images[:2]), E2E_OUT=out,
                   E2E_SCENARIO="keys", E2E_KEY=user, E2E_KEY2=user2, E2E_WRONG_KEY=wrong, CHROMIUM=CHROMIUM)
        for name in ("E2E_BAD", "E2E_BIG_IMAGE", "E2E_README_SHOT"):
            env.pop(name, None)
        res, stderr = run_e2e(env)
        if res is None:
            return
        print(json.dumps({k: v for k, v in res.items() if k != "steps"}, indent=1), flush=True)
        if not check(res.get("ok"), f"keys: browser steps failed at '{(res.get('steps') or ['?'])[-1]}': {res.get('exception')}"):
            print(stderr[-4000:])
            print(server.log_text()[-4000:])

        def holds(store, key):
            return any(key in k or key in v for k, v in (res.get(store) or {}).get("session", []))

        check("This server needs an API key" in (res.get("noKeyNote") or ""), f"keys: the page asks for a key: {res.get('noKeyNote')}")
        check("workers 1/1" in (res.get("pillNoKey") or ""), f"keys: worker state from /readyz without a key: {res.get('pillNoKey')}")
        check("This server needs an API key" in (res.get("noKeyUploadError") or ""),
              f"keys: an upload without a key says a key is needed: {res.get('noKeyUploadError')}")
        check("The API key was refused" in (res.get("wrongKeyNote") or ""), f"keys: a wrong key is refused: {res.get('wrongKeyNote')}")
        check(res.get("wrongKeyStored") is False, "keys: a refused key is not kept")
        check("This key may not read the server status" in (res.get("keyNote") or ""),
              f"keys: the user key may not read /status (403), said quietly: {res.get('keyNote')}")
        check(res.get("errorAfterKey") is None, f"keys: no error box once the key is accepted: {res.get('errorAfterKey')}")
        check(res.get("keyFieldAfterUse") == "", "keys: the key field is emptied once the key is used")
        check(res.get("bannerWithoutStatus") is False, "keys: no untrained banner before a result without /status")
        check(res.get("keyUploaded") == 2 and res.get("keyErrorAfterUpload") is None,
              f"keys: 2 photos uploaded with the key: {res.get('keyUploaded')} {res.get('keyErrorAfterUpload') or ''}")
        scene = res.get("keyScene") or {}
        points = res.get("keyPointCount") or 0
        check(res.get("keyErrorAfterGenerate") is None and 0 < points <= 5000,
              f"keys: generate gave a cloud: {points} points {res.get('keyErrorAfterGenerate') or ''}")
        check(scene.get("scenePoints") == points and scene.get("drawnPoints") == points and scene.get("cameras") == 2,
              f"keys: the cloud is in the scene and drawn: {scene}")
        check((res.get("keyLitPixels") or 0) > 50, f"keys: lit pixels: {res.get('keyLitPixels')}")
        check("UNTRAINED random weights" in (res.get("keyBannerAfterResult") or ""),
              f"keys: untrained banner from the result's metadata: {res.get('keyBannerAfterResult')}")
        st = res.get("keyStorage") or {}
        check(holds("keyStorage", user), "keys: sessionStorage holds the key")
        check(not any(user in k or user in v for k, v in st.get("local", [])), f"keys: localStorage does not: {st.get('local')}")
        check(st.get("cookie") == "", f"keys: no cookie: {st.get('cookie')!r}")
        check(holds("storageAfterReload", user) and res.get("keyBoxAfterReload") == "stored"
              and "may not read the server status" in (res.get("noteAfterReload") or ""),
              f"keys: a reload keeps the key: {res.get('keyBoxAfterReload')} {res.get('noteAfterReload')}")
        check(res.get("reconnectError") is None and "2/" in (res.get("reconnectInfo") or ""),
              f"keys: reconnect by id after the reload: {res.get('reconnectInfo')} {res.get('reconnectError') or ''}")
        check(not holds("storageAfterForget", user) and "needs an API key" in (res.get("noteAfterForget") or ""),
              f"keys: 'Forget key' removes it: {res.get('noteAfterForget')}")
        check(res.get("switchError") is None and res.get("switchLoggedNotFound")
              and res.get("switchSessionId") not in ("", res.get("keySessionId")) and "1/" in (res.get("switchInfo") or ""),
              f"keys: with another key the first key's session is not found and a new one is made: "
              f"{res.get('switchSessionId')} {res.get('switchInfo')} {res.get('switchError') or ''}")
        check(res.get("keyInConsole") == 0 and res.get("keyInLogOrPage") is False,
              f"keys: no key in the console ({res.get('keyInConsole')} messages), the log or the page")
        # The browser reports the 401/403 answers it was given ("Failed to load resource"); nothing else.
        others = [t for t in res.get("consoleErrors") or [] if "Failed to load resource" not in t]
        check(not others and not res.get("pageErrors"), f"keys: no other console or page errors: {others} {res.get('pageErrors')}")
        log = server.log_text()
        check(not any(k in log for k in (admin, user, user2, wrong)), "keys: no key in the server log")
    finally:
        server.cleanup()
    print(f"keys scenario: {time.time() - t0:.1f} s", flush=True)


def main():
    prerequisites()
    readme_shot = "--readme-screenshot" in sys.argv[1:]
    out = tempfile.mkdtemp(prefix="da3-web-test-")
    images = []
    for i, (w, h) in enumerate([(160, 120), (160, 120), (120, 160), (160, 120)]):
        p = os.path.join(out, f"photo_{i + 1}.jpg")
        with open(p, "wb") as f:
            f.write(make_image(w, h, seed=10 + i))
        images.append(p)
    # One 640x480 view at process_res 504 is 504x378 pixels, of which the confidence threshold
    # (10th percentile) keeps ~171,000: downsampled to num_max_points, exactly 100,000 points.
    big = os.path.join(out, "big.jpg")
    with open(big, "wb") as f:
        f.write(make_image(640, 480, seed=21))
    bad = os.path.join(out, "broken.jpg")
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 this is not really a JPEG" + bytes(200))

    if "--keys-only" in sys.argv[1:]:  # just the API-key scenario (while working on it)
        keys_scenario(out, images)
        finish("test_web_page")
        return
    server = Server()
    try:
        env = dict(os.environ, E2E_URL=server.base, E2E_IMAGES=json.dumps(images), E2E_BAD=bad, E2E_OUT=out,
                   E2E_BIG_IMAGE=big, CHROMIUM=CHROMIUM)
        if readme_shot:
            os.makedirs(os.path.dirname(README_SCREENSHOT), exist_ok=True)
            env["E2E_README_SHOT"] = README_SCREENSHOT
        res, stderr = run_e2e(env)
        if res is None:
            finish("test_web_page")
        bulky = ("steps", "scene", "deltaScene")  # frustum vertices: checked below, not printed
        print(json.dumps({k: v for k, v in res.items() if k not in bulky}, indent=1), flush=True)
        if not check(res.get("ok"), f"browser steps failed at '{(res.get('steps') or ['?'])[-1]}': {res.get('exception')}"):
            print(stderr[-4000:])
            print(server.log_text()[-4000:])

        check(res.get("serverUrlField") == server.base, f"server URL defaults to the page origin: {res.get('serverUrlField')}")
        check(res.get("bannerBeforeResult"), "untrained banner shown from /status")
        check(res.get("thumbnails") == 3, f"3 thumbnails: {res.get('thumbnails')}")
        check(res.get("uploaded") == 3, f"3 images acknowledged: {res.get('uploaded')}")
        check(res.get("errorAfterUpload") is None, f"no error after the good uploads: {res.get('errorAfterUpload')}")
        check("Invalid image" in (res.get("badImageStatus") or ""), f"broken file marked rejected: {res.get('badImageStatus')}")
        check("rejected" in (res.get("badImageError") or ""), f"rejection shown in the error box: {res.get('badImageError')}")
        check(res.get("renderer") == "three.js" and not res.get("viewerMessage"),
              f"three.js viewer loaded: {res.get('renderer')} {res.get('viewerMessage') or ''}")
        check(res.get("errorAfterGenerate") is None, f"no error after generate: {res.get('errorAfterGenerate')}")
        points = res.get("pointCount") or 0
        scene = res.get("scene") or {}
        check(0 < points <= 5000, f"page shows a point count in (0, 5000]: {points}")
        check(scene.get("scenePoints") == points, f"three.js scene holds the page's {points} points: {scene.get('scenePoints')}")
        check(scene.get("drawnPoints") == points, f"three.js drew {points} points in its last frame: {scene.get('drawnPoints')}")
        check(res.get("frames") == "3", f"page shows 3 frames: {res.get('frames')}")
        check(res.get("bannerVisible") and "UNTRAINED random weights" in (res.get("bannerText") or ""),
              f"untrained banner visible after the result: {res.get('bannerText')}")
        check((res.get("canvasLitPixels") or 0) > 50, f"the viewer drew points: {res.get('canvasLitPixels')} lit pixels")
        check(scene.get("cameras") == 3 and scene.get("camerasVisible"), f"3 frustums shown: {scene.get('cameras')}")
        check(res.get("cameraAfterOrbit") != scene.get("camera"), "dragging and the wheel moved the camera")
        # Fit view is a function of the cloud and the canvas: two fits give one camera. (Not
        # compared with the first automatic fit: the page's layout can still change the canvas's
        # aspect after it, e.g. when a slow server's last progress line goes away.)
        check(same_place(res.get("cameraAfterFit"), res.get("cameraAfterSecondFit")),
              f"fit view returns to the fitted camera: {res.get('cameraAfterFit')} vs {res.get('cameraAfterSecondFit')}")
        first, fit = scene.get("camera") or [0, 0, 0], res.get("cameraAfterFit") or [0, 0, 0]
        check(abs(math.dist(first, [0, 0, 0]) - math.dist(fit, [0, 0, 0])) < 0.1 * math.dist(first, [0, 0, 0]) + 1e-9,
              f"and near the first automatic fit: {fit} vs {first}")
        check(res.get("pointSizeSet") == 6 and (res.get("litPixelsBigPoints") or 0) > (res.get("canvasLitPixels") or 0),
              f"point size 6 draws larger points: {res.get('litPixelsBigPoints')} lit pixels "
              f"(size {res.get('pointSizeSet')}) vs {res.get('canvasLitPixels')}")
        check(res.get("camerasVisibleUnchecked") is False and res.get("camerasVisibleChecked") is True,
              "'Show cameras' hides and shows the frustums")
        shot = res.get("viewShotPath")
        check(shot and png_size(shot) == tuple(res.get("canvasSize") or ()) and (res.get("viewShotName") or "").endswith(".png"),
              f"screenshot button saves the view as PNG: {res.get('viewShotName')} "
              f"{png_size(shot) if shot and os.path.exists(shot) else None} (canvas {res.get('canvasSize')})")
        check(res.get("downloadVisible"), "Download GLB link shown")
        check(res.get("glbMagic") == "glTF", f"downloaded file starts with glTF: {res.get('glbMagic')!r}")
        if res.get("glbPath") and os.path.exists(res["glbPath"]):
            glb = open(res["glbPath"], "rb").read()
            gltf, glb_points, glb_lines = glb_info(glb)
            check(glb_points == points, f"GLB point count {glb_points} == page's {points}")
            check(glb_lines == 3, f"GLB has 3 camera frustums: {glb_lines}")
            # The page draws the frustums from the metadata (cameras, hf_alignment): they must land
            # where the server put its own in the GLB.
            server_lines = glb_line_vertices(glb)
            page_lines = scene.get("frustumPositions") or []
            acc = gltf["accessors"][0]
            size = max(1e-9, max(b - a for a, b in zip(acc["min"], acc["max"])))
            worst = max((abs(a - b) for a, b in zip(page_lines, server_lines)), default=float("inf"))
            check(len(page_lines) == len(server_lines) and worst < 1e-4 * size,
                  f"frustums from the metadata match the GLB's: {len(page_lines)} vs {len(server_lines)} values, "
                  f"largest difference {worst:.3g} (cloud size {size:.3g})")
        delta = res.get("deltaScene") or {}
        check(res.get("errorAfterDelta") is None and (res.get("deltaProgressText") or "").startswith("delta:"),
              f"live mode: the 4th photo gave an incremental result: {res.get('deltaProgressText')} {res.get('errorAfterDelta') or ''}")
        check(res.get("deltaFrames") == "4" and delta.get("cameras") == 4,
              f"the view shows 4 frames and 4 frustums: {res.get('deltaFrames')}, {delta.get('cameras')}")
        check(0 < (res.get("deltaPointCount") or 0) == delta.get("scenePoints") == delta.get("drawnPoints"),
              f"the new cloud is in the scene and drawn: page {res.get('deltaPointCount')}, scene "
              f"{delta.get('scenePoints')}, drawn {delta.get('drawnPoints')}")
        check(res.get("deltaSamePage"), "the incremental result updated the page without a reload")
        check(same_place(delta.get("camera"), res.get("cameraBeforeDelta")),
              f"the incremental result kept the user's camera: {delta.get('camera')} vs {res.get('cameraBeforeDelta')}")
        check(res.get("errorAfterReconnect") is None and "4/" in (res.get("sessionInfoAfterReconnect") or ""),
              f"reconnect by id: {res.get('sessionInfoAfterReconnect')} {res.get('errorAfterReconnect') or ''}")
        big_scene = res.get("bigScene") or {}
        check(res.get("bigError") is None and res.get("bigPointCount") == 100000,
              f"large cloud: 100,000 points shown: {res.get('bigPointCount')} {res.get('bigError') or ''}")
        check(big_scene.get("scenePoints") == 100000 and big_scene.get("drawnPoints") == 100000,
              f"large cloud in the scene and drawn: {big_scene}")
        check((res.get("bigLitPixels") or 0) > 1000, f"large cloud lit pixels: {res.get('bigLitPixels')}")
        frames = res.get("bigFrameTimes") or {}
        check(frames.get("drawn", 0) >= frames.get("frames", 1) > 0,
              f"every frame drawn while orbiting: {frames.get('drawn')} of {frames.get('frames')}")
        check(res.get("bigCameraMovedByMouse"), "large cloud: the mouse still orbits it")
        check(not res.get("consoleErrors"), f"no console errors: {res.get('consoleErrors')}")
        check(not res.get("pageErrors"), f"no uncaught page errors: {res.get('pageErrors')}")
        if frames.get("medianMs"):
            print(f"100,000-point cloud: median frame time while orbiting {frames['medianMs']:.1f} ms "
                  f"(p90 {frames['p90Ms']:.1f} ms, max {frames['maxMs']:.1f} ms, {frames['frames']} frames; "
                  f"WebGL: {res.get('glRenderer')}); result shown {res.get('bigResultSeconds')} s after generate", flush=True)
        for key in ("screenshot", "bigScreenshot"):
            if res.get(key):
                print("screenshot:", res[key], flush=True)
        if readme_shot and os.path.exists(README_SCREENSHOT):
            print("README screenshot written:", README_SCREENSHOT, os.path.getsize(README_SCREENSHOT), "bytes", flush=True)
    finally:
        server.cleanup()
    keys_scenario(out, images)
    finish("test_web_page")


if __name__ == "__main__":
    main()
