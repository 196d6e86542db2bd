// Real-browser end-to-end test of the web client (web/), run by tests/integration/test_web_page.py.
// Drives Debian's Chromium through playwright-core against a running da3-server.
//   E2E_URL     base URL of the server (http://127.0.0.1:PORT)
//   E2E_IMAGES  JSON array of paths of JPEG files to upload
//   E2E_BAD     path of a file that is not an image (uploaded afterwards; must be rejected)
//   E2E_OUT     directory for the screenshot, the downloaded GLB and the browser profile
//   CHROMIUM    browser binary (default /usr/bin/chromium)
// Prints one JSON line (prefixed "E2E_RESULT ") with what it saw; exits 1 when a step failed.
'use strict';
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const url = process.env.E2E_URL;
const images = JSON.parse(process.env.E2E_IMAGES || '[]');
const bad = process.env.E2E_BAD;
const out = process.env.E2E_OUT;
const result = { consoleErrors: [], pageErrors: [], steps: [] };

function step(name) { result.steps.push(name); console.log('step:', name); }

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
      if (msg.type() === 'error') result.consoleErrors.push(msg.text());
    });
    page.on('pageerror', (err) => result.pageErrors.push(String(err)));

    step('open page');
    await page.goto(url + '/', { waitUntil: 'load' });
    result.serverUrlField = await page.inputValue('#server-url');
    result.renderer = await page.getAttribute('#canvas', 'data-renderer');
    // /status says the demo model is untrained, so the banner shows before any result.
    await page.waitForSelector('#untrained-banner:not([hidden])', { timeout: 20000 });
    result.bannerBeforeResult = true;

    step('settings');
    await page.fill('#process-res', '140');
    await page.fill('#num-max-points', '5000');

    step('attach photos');
    await page.setInputFiles('#file-input', images);
    await page.waitForFunction((n) => document.querySelectorAll('#thumbs li').length === n, images.length);
    result.thumbnails = await page.locator('#thumbs li img').count();

    step('create session & upload');
    await page.click('#upload-btn');
    await page.waitForFunction((n) => document.querySelectorAll('#thumbs li.done').length === n
      || !document.getElementById('error').hidden, images.length);
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
    await page.waitForFunction(() => document.getElementById('stat-points').dataset.count
      || !document.getElementById('error').hidden, null, { timeout: 300000, polling: 200 });
    result.errorAfterGenerate = await page.locator('#error:not([hidden])').count() ? await page.textContent('#error') : null;
    result.pointCount = Number(await page.getAttribute('#stat-points', 'data-count'));
    result.statsText = await page.textContent('#stats');
    result.frames = await page.textContent('#stat-frames');
    result.progressText = await page.textContent('#progress-text');
    result.bannerVisible = await page.isVisible('#untrained-banner');
    result.bannerText = (await page.textContent('#untrained-banner')).trim();

    step('check the viewer drew the cloud');
    await page.waitForTimeout(300); // one animation frame is enough; leave a margin
    result.canvasLitPixels = await page.evaluate(() => {
      const c = document.getElementById('canvas');
      const t = document.createElement('canvas');
      t.width = c.width; t.height = c.height;
      const g = t.getContext('2d');
      g.drawImage(c, 0, 0);
      const d = g.getImageData(0, 0, t.width, t.height).data;
      let lit = 0;
      for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - 17) + Math.abs(d[i + 1] - 21) + Math.abs(d[i + 2] - 28) > 24) lit++;
      return lit;
    });
    // Orbit and zoom once: must not throw.
    const box = await page.locator('#canvas').boundingBox();
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width / 2 + 60, box.y + box.height / 2 + 20, { steps: 4 });
    await page.mouse.up();
    await page.mouse.wheel(0, -200);

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
