// Real-browser end-to-end test of the web client (web/), run by tests/integration/test_web_page.py.
// Drives Debian's Chromium through playwright-core against a running da3-server.
//   E2E_URL           base URL of the server (http://127.0.0.1:PORT)
//   E2E_IMAGES        JSON array of paths of JPEG files: all but the last are uploaded first, the
//                     last one later in live mode (an incremental result)
//   E2E_BAD           path of a file that is not an image (uploaded afterwards; must be rejected)
//   E2E_BIG_IMAGE     path of a JPEG for the large-cloud step (one view at process_res 504,
//                     num_max_points 100000: a 100,000-point cloud)
//   E2E_OUT           directory for the screenshots, the downloads and the browser profile
//   E2E_README_SHOT   optional: also save the large-cloud page screenshot there (the README's)
//   CHROMIUM          browser binary (default /usr/bin/chromium)
//   E2E_SCENARIO      "keys": the API-key scenario instead (a server with --api-keys and
//                     --private-status): E2E_IMAGES are 2 photos, E2E_KEY and E2E_KEY2 two user
//                     keys of different owners, E2E_WRONG_KEY a key the server does not know
// Prints one JSON line (prefixed "E2E_RESULT ") with what it saw; exits 1 when a step failed.
'use strict';
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const url = process.env.E2E_URL;
const images = JSON.parse(process.env.E2E_IMAGES || '[]');
const bad = process.env.E2E_BAD;
const bigImage = process.env.E2E_BIG_IMAGE;
const out = process.env.E2E_OUT;
const readmeShot = process.env.E2E_README_SHOT;
const result = { consoleErrors: [], pageErrors: [], steps: [] };
const consoleTexts = []; // every console message, of any type (the keys scenario looks for its keys)

function step(name) { result.steps.push(name); console.log('step:', name); }

// In the page: pixels of the viewer's canvas that differ from its background (#11151c).
function litPixels() {
  const c = document.getElementById('canvas');
  const t = document.createElement('canvas');
  t.width = c.width; t.height = c.height;
  const g = t.getContext('2d');
  g.drawImage(c, 0, 0);
  const d = g.getImageData(0, 0, t.width, t.height).data;
  let lit = 0;
  for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - 17) + Math.abs(d[i + 1] - 21) + Math.abs(d[i + 2] - 28) > 24) lit++;
  return lit;
}

// In the page: what the three.js scene holds and what its last frame drew.
function sceneState() {
  const v = window.da3Viewer;
  return {
    scenePoints: v.pointCount,
    drawnPoints: v.renderer.info.render.points,
    cameras: v.cameraCount,
    camerasVisible: v.frustums ? v.frustums.visible : null,
    pointSize: v.pointSize,
    camera: v.camera.position.toArray(),
    frustumPositions: v.frustums ? Array.from(v.frustums.geometry.attributes.position.array) : [],
    framesDrawn: v.framesDrawn,
  };
}

// In the page: frame times while the view orbits (OrbitControls' autoRotate turns it a little
// every frame, so every frame is drawn), from requestAnimationFrame timestamps: `frames` frames
// or 6 s, whichever comes first.
async function orbitFrameTimes(frames) {
  const v = window.da3Viewer;
  const drawnBefore = v.framesDrawn;
  v.controls.autoRotate = true;
  v.controls.autoRotateSpeed = 30; // 3 degrees a frame
  v.requestRender();
  const stamps = [];
  const start = performance.now();
  await new Promise((resolve) => {
    const tick = (now) => {
      stamps.push(now);
      if (stamps.length <= frames && now - start < 6000) requestAnimationFrame(tick); else resolve();
    };
    requestAnimationFrame(tick);
  });
  v.controls.autoRotate = false;
  const gaps = stamps.slice(1).map((t, i) => t - stamps[i]).sort((a, b) => a - b);
  return {
    frames: gaps.length, drawn: v.framesDrawn - drawnBefore,
    medianMs: gaps[gaps.length >> 1], p90Ms: gaps[Math.floor(gaps.length * 0.9)], maxMs: gaps[gaps.length - 1],
  };
}

// In the page: the WebGL implementation Chromium gave the page.
function glRenderer() {
  const gl = window.da3Viewer.renderer.getContext();
  const info = gl.getExtension('WEBGL_debug_renderer_info');
  return info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER);
}

async function waitForResults(page, n) {
  await page.waitForFunction((k) => Number(document.getElementById('stats').dataset.results) >= k
    || !document.getElementById('error').hidden, n, { timeout: 300000, polling: 200 });
  return await page.locator('#error:not([hidden])').count() ? page.textContent('#error') : null;
}

async function drag(page, dx, dy) {
  const box = await page.locator('#canvas').boundingBox();
  const x = box.x + box.width / 2, y = box.y + box.height / 2;
  await page.mouse.move(x, y);
  await page.mouse.down();
  await page.mouse.move(x + dx, y + dy, { steps: 6 });
  await page.mouse.up();
}

// Waits until the view is still: no frame drawn for 250 ms (damping over, last frame drawn).
async function settle(page) {
  // Quiet for 250 ms with no frame pending: no frame drawn and the camera where it was (on a
  // loaded machine software GL can take longer than that between two frames while damping still
  // moves the camera).
  await page.evaluate(() => new Promise((resolve) => {
    let drawn = -1, where = '', since = 0;
    const poll = () => {
      const now = performance.now(), v = window.da3Viewer;
      const at = v.camera.position.toArray().join(',') + '|' + v.controls.target.toArray().join(',');
      if (v.framesDrawn !== drawn || at !== where) { drawn = v.framesDrawn; where = at; since = now; }
      if (now - since > 250 && !v.framePending) resolve(); else setTimeout(poll, 50);
    };
    poll();
  }));
}

async function pageScenario(page) {
  const first = images.slice(0, -1), later = images[images.length - 1];

  step('open page');
  await page.goto(url + '/', { waitUntil: 'load' });
  result.serverUrlField = await page.inputValue('#server-url');
  // /status says the demo model is untrained, so the banner shows before any result.
  await page.waitForSelector('#untrained-banner:not([hidden])', { timeout: 20000 });
  result.bannerBeforeResult = true;
  await page.waitForFunction(() => window.da3Viewer || !document.getElementById('viewer-message').hidden);
  result.viewerMessage = await page.isVisible('#viewer-message') ? await page.textContent('#viewer-message') : null;
  result.renderer = await page.getAttribute('#canvas', 'data-renderer');
  result.glRenderer = await page.evaluate(glRenderer);

  step('settings');
  await page.fill('#process-res', '140');
  await page.fill('#num-max-points', '5000');

  step('attach photos');
  await page.setInputFiles('#file-input', first);
  await page.waitForFunction((n) => document.querySelectorAll('#thumbs li').length === n, first.length);
  result.thumbnails = await page.locator('#thumbs li img').count();

  step('create session & upload');
  await page.click('#upload-btn');
  await page.waitForFunction((n) => document.querySelectorAll('#thumbs li.done').length === n
    || !document.getElementById('error').hidden, first.length);
  result.uploaded = await page.locator('#thumbs li.done').count();
  result.errorAfterUpload = await page.locator('#error:not([hidden])').count() ? await page.textContent('#error') : null;
  result.sessionId = await page.inputValue('#reconnect-id');
  result.sessionInfo = await page.textContent('#session-info');

  if (bad) {
    step('upload an invalid image');
    await page.setInputFiles('#file-input', bad);
    await page.click('#upload-btn');
    await page.waitForSelector('#thumbs li.failed');
    result.badImageStatus = await page.textContent('#thumbs li.failed .st');
    result.badImageError = await page.textContent('#error');
  }

  step('generate');
  await page.click('#generate-btn');
  result.errorAfterGenerate = await waitForResults(page, 1);
  result.pointCount = Number(await page.getAttribute('#stat-points', 'data-count'));
  result.statsText = await page.textContent('#stats');
  result.frames = await page.textContent('#stat-frames');
  result.progressText = await page.textContent('#progress-text');
  result.bannerVisible = await page.isVisible('#untrained-banner');
  result.bannerText = (await page.textContent('#untrained-banner')).trim();

  step('check the viewer drew the cloud');
  await settle(page);
  result.scene = await page.evaluate(sceneState);
  result.canvasLitPixels = await page.evaluate(litPixels);

  step('orbit, zoom, fit view');
  await drag(page, 80, 30);
  await page.mouse.wheel(0, -200);
  await settle(page);
  result.cameraAfterOrbit = (await page.evaluate(sceneState)).camera;
  await page.click('#fit-btn');
  await settle(page);
  result.cameraAfterFit = (await page.evaluate(sceneState)).camera;
  await drag(page, -60, 20);
  await settle(page);
  await page.click('#fit-btn');
  await settle(page);
  result.cameraAfterSecondFit = (await page.evaluate(sceneState)).camera;

  step('point size and cameras toggle');
  await page.fill('#point-size', '6');
  await settle(page);
  result.pointSizeSet = (await page.evaluate(sceneState)).pointSize;
  result.litPixelsBigPoints = await page.evaluate(litPixels);
  await page.fill('#point-size', '2');
  await page.uncheck('#show-cameras');
  result.camerasVisibleUnchecked = (await page.evaluate(sceneState)).camerasVisible;
  await page.check('#show-cameras');
  result.camerasVisibleChecked = (await page.evaluate(sceneState)).camerasVisible;

  step('screenshot button');
  const [shot] = await Promise.all([page.waitForEvent('download'), page.click('#screenshot-btn')]);
  result.viewShotPath = path.join(out, 'view.png');
  await shot.saveAs(result.viewShotPath);
  result.viewShotName = shot.suggestedFilename();
  result.canvasSize = await page.evaluate(() => [document.getElementById('canvas').width, document.getElementById('canvas').height]);

  step('download GLB');
  result.downloadVisible = await page.isVisible('#download-link');
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-link')]);
  const glbPath = path.join(out, 'download.glb');
  await download.saveAs(glbPath);
  const glb = fs.readFileSync(glbPath);
  result.glbPath = glbPath;
  result.glbMagic = glb.subarray(0, 4).toString('latin1');
  result.glbSize = glb.length;
  result.glbSizeShown = await page.textContent('#stat-size');

  step('live update: one more photo, an incremental result in place');
  await page.evaluate(() => { window.e2eSamePage = true; }); // gone if the page reloaded
  await drag(page, -40, 0);
  await settle(page);
  result.cameraBeforeDelta = (await page.evaluate(sceneState)).camera;
  await page.check('#live-update');
  await page.setInputFiles('#file-input', later);
  result.errorAfterDelta = await waitForResults(page, 2);
  await settle(page);
  result.deltaProgressText = await page.textContent('#progress-text');
  result.deltaFrames = await page.textContent('#stat-frames');
  result.deltaPointCount = Number(await page.getAttribute('#stat-points', 'data-count'));
  result.deltaScene = await page.evaluate(sceneState);
  result.deltaSamePage = await page.evaluate(() => window.e2eSamePage === true);
  await page.uncheck('#live-update');

  step('reconnect by session id');
  await page.fill('#reconnect-id', result.sessionId);
  await page.click('#reconnect-btn');
  await page.waitForFunction(() => (document.getElementById('log').textContent.match(/connected to /g) || []).length === 2
    || !document.getElementById('error').hidden);
  result.errorAfterReconnect = await page.locator('#error:not([hidden])').count() ? await page.textContent('#error') : null;
  result.sessionInfoAfterReconnect = await page.textContent('#session-info');

  step('screenshot');
  result.screenshot = path.join(out, 'web_page.png');
  await page.screenshot({ path: result.screenshot, fullPage: true });

  if (bigImage) {
    step('large cloud: a new session');
    await page.click('#clear-btn');
    await page.click('#new-session-btn');
    await page.fill('#process-res', '504');
    await page.fill('#num-max-points', '100000');
    await page.setInputFiles('#file-input', bigImage);
    await page.click('#upload-btn');
    await page.waitForFunction(() => document.querySelectorAll('#thumbs li.done').length === 1
      || !document.getElementById('error').hidden);
    await page.click('#generate-btn');
    const t0 = Date.now();
    result.bigError = await waitForResults(page, 3);
    result.bigResultSeconds = (Date.now() - t0) / 1000;
    await settle(page);
    result.bigPointCount = Number(await page.getAttribute('#stat-points', 'data-count'));
    const big = await page.evaluate(sceneState);
    result.bigScene = { scenePoints: big.scenePoints, drawnPoints: big.drawnPoints, cameras: big.cameras };
    result.bigLitPixels = await page.evaluate(litPixels);

    step('large cloud: frame time while orbiting');
    result.bigFrameTimes = await page.evaluate(orbitFrameTimes, 60);
    await drag(page, 60, 20);
    await settle(page);
    result.bigCameraMovedByMouse = JSON.stringify((await page.evaluate(sceneState)).camera) !== JSON.stringify(big.camera);
    result.bigFpsShown = await page.textContent('#stat-fps');
    await page.click('#fit-btn');
    await settle(page);

    step('large cloud: screenshot');
    result.bigScreenshot = path.join(out, 'web_page_100k.png');
    await page.screenshot({ path: result.bigScreenshot, fullPage: true });
    if (readmeShot) fs.copyFileSync(result.bigScreenshot, readmeShot);
  }
}

// The API-key scenario (a server with --api-keys and --private-status, a user key): the page asks
// for a key, says when one is refused, works with the right one without /status (403 for it),
// keeps the key in sessionStorage only (across a reload), and a session of another key is not
// found: the page starts a new one.
async function keysScenario(page) {
  const key = process.env.E2E_KEY, key2 = process.env.E2E_KEY2, wrong = process.env.E2E_WRONG_KEY;
  const waitNote = (re) => page.waitForFunction((src) => new RegExp(src).test(document.getElementById('key-note').textContent),
    re.source, { timeout: 20000 });
  const note = () => page.textContent('#key-note');
  const errorText = async () => (await page.locator('#error:not([hidden])').count() ? page.textContent('#error') : null);
  const storage = () => page.evaluate(() => ({
    session: Object.keys(sessionStorage).map((k) => [k, sessionStorage.getItem(k)]),
    local: Object.keys(localStorage).map((k) => [k, localStorage.getItem(k)]),
    cookie: document.cookie,
  }));
  const uploaded = (n) => page.waitForFunction((k) => document.querySelectorAll('#thumbs li.done').length === k
    || !document.getElementById('error').hidden, n);

  step('keys: open the page without a key');
  await page.goto(url + '/', { waitUntil: 'load' });
  await page.waitForSelector('#key-box:not([hidden])', { timeout: 20000 });
  await waitNote(/needs an API key/);
  result.noKeyNote = await note();
  await page.waitForFunction(() => /workers/.test(document.getElementById('server-status').textContent));
  result.pillNoKey = await page.textContent('#server-status');

  step('keys: upload without a key');
  await page.fill('#process-res', '140');
  await page.fill('#num-max-points', '5000');
  await page.setInputFiles('#file-input', images);
  await page.click('#upload-btn');
  await page.waitForSelector('#error:not([hidden])');
  result.noKeyUploadError = await errorText();

  step('keys: a wrong key');
  await page.fill('#api-key', wrong);
  await page.click('#key-use');
  await waitNote(/refused/);
  result.wrongKeyNote = await note();
  result.wrongKeyStored = JSON.stringify(await storage()).includes(wrong);

  step('keys: the right key');
  await page.fill('#api-key', key);
  await page.click('#key-use');
  await waitNote(/may not read the server status/);
  result.keyNote = await note();
  result.keyFieldAfterUse = await page.inputValue('#api-key');
  result.errorAfterKey = await errorText();
  result.pillWithKey = await page.textContent('#server-status');
  result.bannerWithoutStatus = await page.isVisible('#untrained-banner');

  step('keys: upload and generate with the key');
  await page.click('#upload-btn');
  await uploaded(images.length);
  result.keyUploaded = await page.locator('#thumbs li.done').count();
  result.keyErrorAfterUpload = await errorText();
  result.keySessionId = await page.inputValue('#reconnect-id');
  await page.click('#generate-btn');
  result.keyErrorAfterGenerate = await waitForResults(page, 1);
  result.keyPointCount = Number(await page.getAttribute('#stat-points', 'data-count'));
  await settle(page);
  const scene = await page.evaluate(sceneState);
  result.keyScene = { scenePoints: scene.scenePoints, drawnPoints: scene.drawnPoints, cameras: scene.cameras };
  result.keyLitPixels = await page.evaluate(litPixels);
  result.keyBannerAfterResult = await page.isVisible('#untrained-banner') ? (await page.textContent('#untrained-banner')).trim() : null;

  step('keys: where the key is kept');
  result.keyStorage = await storage();

  step('keys: a reload keeps the key');
  await page.reload({ waitUntil: 'load' });
  await waitNote(/may not read the server status/);
  result.noteAfterReload = await note();
  result.keyBoxAfterReload = await page.getAttribute('#key-box', 'data-key');
  result.storageAfterReload = await storage();

  step('keys: reconnect with the kept key');
  await page.fill('#reconnect-id', result.keySessionId);
  await page.click('#reconnect-btn');
  await page.waitForFunction(() => /connected to /.test(document.getElementById('log').textContent)
    || !document.getElementById('error').hidden);
  result.reconnectError = await errorText();
  result.reconnectInfo = await page.textContent('#session-info');

  step('keys: forget the key');
  await page.click('#key-forget');
  await waitNote(/needs an API key/);
  result.noteAfterForget = await note();
  result.storageAfterForget = await storage();

  step("keys: another key: the first key's session is not found, a new one is made");
  await page.fill('#api-key', key2);
  await page.click('#key-use');
  await waitNote(/may not read the server status/);
  await page.setInputFiles('#file-input', images[0]);
  await page.click('#upload-btn');
  await page.waitForFunction(() => document.querySelectorAll('#thumbs li.done').length === 1
    || !document.getElementById('error').hidden);
  result.switchError = await errorText();
  result.switchSessionId = await page.inputValue('#reconnect-id');
  result.switchInfo = await page.textContent('#session-info');
  const logText = await page.textContent('#log');
  result.switchLoggedNotFound = logText.includes(`session ${result.keySessionId} not found`);

  step('keys: no key in the console, the log or the page');
  const keys = [key, key2, wrong];
  const html = await page.evaluate(() => document.documentElement.outerHTML);
  result.keyInConsole = consoleTexts.filter((t) => keys.some((k) => t.includes(k))).length;
  result.keyInLogOrPage = keys.some((k) => logText.includes(k) || html.includes(k));
  result.screenshot = path.join(out, 'web_page_keys.png');
  await page.screenshot({ path: result.screenshot });
}

async function main() {
  const profile = fs.mkdtempSync(path.join(out, 'chromium-profile-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    acceptDownloads: true,
    viewport: { width: 1280, height: 860 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-angle=swiftshader', '--enable-unsafe-swiftshader'],
  });
  try {
    const page = context.pages()[0] || await context.newPage();
    page.setDefaultTimeout(60000);
    page.on('console', (msg) => {
      consoleTexts.push(msg.text());
      if (msg.type() === 'error') result.consoleErrors.push(msg.text());
    });
    page.on('pageerror', (err) => result.pageErrors.push(String(err)));
    if (process.env.E2E_SCENARIO === 'keys') await keysScenario(page);
    else await pageScenario(page);
    result.ok = true;
  } finally {
    await context.close();
  }
}

main().catch((e) => {
  result.ok = false;
  result.exception = String(e && e.stack || e);
}).finally(() => {
  console.log('E2E_RESULT ' + JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
});
