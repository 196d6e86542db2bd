"""The web client in a real browser: Debian's Chromium, driven by playwright-core (tests/web/e2e.js),
against the real da3-server with the demo model. Opens the page, sets process_res 140 and
num_max_points 5000, attaches 3 JPEGs, uploads them (binary frames), uploads a broken file (must be
rejected and shown), generates, then checks the page: point count > 0, the UNTRAINED banner, the
viewer drew something, the "Download GLB" link gives a GLB matching the page, reconnect by id works,
and the browser console has no errors. Leaves a screenshot in a temp dir (printed)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import REPO, Server, check, finish, glb_info, make_image  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
WEB_TESTS = os.path.join(REPO, "tests", "web")


def prerequisites():
    if not os.path.exists(CHROMIUM):
        print(f"test_web_page: FAIL: {CHROMIUM} is missing; install Debian's chromium package "
              "(apt-get install -y chromium, or scripts/install-deps.sh --test)", flush=True)
        sys.exit(1)
    if not shutil.which("node") or not shutil.which("npm"):
        print("test_web_page: FAIL: node and npm are needed (apt-get install -y nodejs npm)", flush=True)
        sys.exit(1)
    if not os.path.isdir(os.path.join(WEB_TESTS, "node_modules", "playwright-core")):
        r = subprocess.run(["npm", "ci", "--prefix", WEB_TESTS, "--no-audit", "--no-fund", "--loglevel=error"])
        if r.returncode != 0:
            print("test_web_page: FAIL: npm ci --prefix tests/web failed", flush=True)
            sys.exit(1)


def main():
    prerequisites()
    out = tempfile.mkdtemp(prefix="da3-web-test-")
    images = []
    for i, (w, h) in enumerate([(160, 120), (160, 120), (120, 160)]):
        p = os.path.join(out, f"photo_{i + 1}.jpg")
        with open(p, "wb") as f:
            f.write(make_image(w, h, seed=10 + i))
        images.append(p)
    bad = os.path.join(out, "broken.jpg")
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 this is not really a JPEG" + bytes(200))

    server = Server()
    try:
        env = dict(os.environ, E2E_URL=server.base, E2E_IMAGES=json.dumps(images), E2E_BAD=bad, E2E_OUT=out,
                   CHROMIUM=CHROMIUM)
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
            finish("test_web_page")
        res = json.loads(lines[-1][len("E2E_RESULT "):])
        print(json.dumps({k: v for k, v in res.items() if k != "steps"}, indent=1), flush=True)
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
        check(res.get("errorAfterGenerate") is None, f"no error after generate: {res.get('errorAfterGenerate')}")
        points = res.get("pointCount") or 0
        check(0 < points <= 5000, f"page shows a point count in (0, 5000]: {points}")
        check(res.get("frames") == "3", f"page shows 3 frames: {res.get('frames')}")
        check(res.get("bannerVisible") and "UNTRAINED random weights" in (res.get("bannerText") or ""),
              f"untrained banner visible after the result: {res.get('bannerText')}")
        check((res.get("canvasLitPixels") or 0) > 50, f"the viewer drew points ({res.get('renderer')}): "
              f"{res.get('canvasLitPixels')} lit pixels")
        check(res.get("downloadVisible"), "Download GLB link shown")
        check(res.get("glbMagic") == "glTF", f"downloaded file starts with glTF: {res.get('glbMagic')!r}")
        if res.get("glbPath") and os.path.exists(res["glbPath"]):
            glb = open(res["glbPath"], "rb").read()
            _, glb_points, glb_lines = glb_info(glb)
            check(glb_points == points, f"GLB point count {glb_points} == page's {points}")
            check(glb_lines == 3, f"GLB has 3 camera frustums: {glb_lines}")
        check(res.get("errorAfterReconnect") is None and "3/" in (res.get("sessionInfoAfterReconnect") or ""),
              f"reconnect by id: {res.get('sessionInfoAfterReconnect')} {res.get('errorAfterReconnect') or ''}")
        check(not res.get("consoleErrors"), f"no console errors: {res.get('consoleErrors')}")
        check(not res.get("pageErrors"), f"no uncaught page errors: {res.get('pageErrors')}")
        if res.get("screenshot"):
            print("screenshot:", res["screenshot"], flush=True)
    finally:
        server.cleanup()
    finish("test_web_page")


if __name__ == "__main__":
    main()
