// The page (the module index.html loads): settings, the photo drop zone and previews, uploads,
// generate / finalize with progress, live updates, reconnect by id, the untrained-model banner,
// result stats and download, the API key of a server with keys (the key box in the header), and
// the 3D view's controls. The protocol (and where the key is kept) lives in protocol.js, the
// drawing in viewer.js; the viewer is imported on its own so that the rest of the page keeps
// working where three.js or WebGL is missing.
import {
  ApiError, checkKey, createSession, fetchReadiness, fetchStatus, forgetApiKey, getApiKey, isPlausibleKey,
  KEY_REFUSED, KEY_REQUIRED, openSession, resultGlb, setApiKey, STATUS_FORBIDDEN,
} from './protocol.js';

const $ = (id) => document.getElementById(id);
const el = {
  serverUrl: $('server-url'), serverStatus: $('server-status'), banner: $('untrained-banner'),
  bannerDetail: $('untrained-detail'), maxImages: $('max-images'), processRes: $('process-res'),
  numMaxPoints: $('num-max-points'), showCameras: $('show-cameras'), dropzone: $('dropzone'),
  fileInput: $('file-input'), thumbs: $('thumbs'), uploadBtn: $('upload-btn'), clearBtn: $('clear-btn'),
  newSessionBtn: $('new-session-btn'), generateBtn: $('generate-btn'), finalizeBtn: $('finalize-btn'),
  liveUpdate: $('live-update'), progress: $('progress'), progressFill: $('progress-fill'),
  progressText: $('progress-text'), sessionInfo: $('session-info'), reconnectId: $('reconnect-id'),
  reconnectBtn: $('reconnect-btn'), error: $('error'), log: $('log'), stats: $('stats'),
  noResult: $('no-result'), resultStats: $('result-stats'), statPoints: $('stat-points'),
  statSize: $('stat-size'), statFrames: $('stat-frames'), statFramesUnit: $('stat-frames-unit'),
  statExtra: $('stat-extra'), statFps: $('stat-fps'), download: $('download-link'), fitBtn: $('fit-btn'),
  screenshotBtn: $('screenshot-btn'), pointSize: $('point-size'), canvas: $('canvas'),
  viewerMessage: $('viewer-message'), keyBox: $('key-box'), apiKey: $('api-key'), keyUse: $('key-use'),
  keyForget: $('key-forget'), keyNote: $('key-note'),
};
const state = {
  items: [],             // the photos: {file, li, st, url, status}
  socket: null,          // the SessionSocket while connected
  sessionId: null,
  session: null,         // the create answer (its config) of the session this page created
  busy: false,           // connecting or uploading
  generating: false,
  genStart: 0,
  uploadedSinceGenerate: 0, // what live mode waits for before it generates again
  glbUrl: null,
  shownSession: null,    // whose result the view shows: a result of another session refits it
  resultCount: 0,
  keyAsked: false,       // the server answered 401 once: the key box stays shown
  keyState: '',          // '', 'required', 'refused', 'checking', 'ok', 'unchecked', 'invalid'
  statusReadable: true,  // false after /status answered 401/403: the pill shows /readyz instead
  statusNote: '',        // STATUS_FORBIDDEN once /status said 403 to this key
};

// ------------------------------------------------------------------ small helpers
function log(msg) {
  el.log.textContent += `[${new Date().toLocaleTimeString()}] ${msg}\n`;
  el.log.scrollTop = el.log.scrollHeight;
}
function showError(msg) {
  el.error.textContent = msg || '';
  el.error.hidden = !msg;
  if (msg) log(`ERROR: ${msg}`);
}
function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1048576) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1048576).toFixed(2)} MiB`;
}
const fmtCount = (n) => n.toLocaleString('en-US');
function baseUrl() { return (el.serverUrl.value.trim() || location.origin).replace(/\/+$/, ''); }
function setProgress(frac, text) {
  el.progressFill.style.width = `${Math.max(0, Math.min(1, frac)) * 100}%`;
  el.progressText.textContent = text;
}
function elapsed() { return ((performance.now() - state.genStart) / 1000).toFixed(1); }

// ------------------------------------------------------------------ the 3D view
// Loaded on its own: without three.js (web/vendor/three/ not built) or WebGL the page still
// uploads, generates and offers the GLB for download.
let viewer = null; // the Viewer once loaded; null without one
const viewerReady = import('./viewer.js').then(({ Viewer }) => {
  try {
    return new Viewer(el.canvas, {
      onFrameRate: ({ fps, frameMs }) => { el.statFps.textContent = `${fps.toFixed(0)} fps · ${frameMs.toFixed(1)} ms/frame`; },
    });
  } catch (e) {
    return viewerUnavailable(`WebGL 2 is not available in this browser (${e.message})`);
  }
}, (e) => viewerUnavailable(`three.js could not be loaded (${e.message}); on the server, \`make web-assets\` puts it in web/vendor/three/`));

function viewerUnavailable(why) {
  el.viewerMessage.textContent = `No 3D view: ${why}. Results can still be downloaded as GLB.`;
  el.viewerMessage.hidden = false;
  log(`3D view unavailable: ${why}`);
  return null;
}

viewerReady.then((loaded) => {
  if (!loaded) return;
  viewer = loaded;
  window.da3Viewer = viewer; // for the browser console and the browser test (tests/web/e2e.js)
  el.canvas.dataset.renderer = 'three.js';
  viewer.setPointSize(Number(el.pointSize.value));
  viewer.setCamerasVisible(el.showCameras.checked);
  el.pointSize.addEventListener('input', () => viewer.setPointSize(Number(el.pointSize.value)));
  el.showCameras.addEventListener('change', () => viewer.setCamerasVisible(el.showCameras.checked));
  el.fitBtn.addEventListener('click', () => viewer.fitView());
  el.screenshotBtn.addEventListener('click', async () => {
    try {
      saveBlob(await viewer.screenshot(), `da3-${(state.shownSession || 'view').slice(0, 8)}-view.png`);
    } catch (e) {
      showError(`Screenshot failed: ${e.message}`);
    }
  });
});

function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10000); // the download has started by then
}

// ------------------------------------------------------------------ server status / model banner
function setModel(model) {
  if (!model) return;
  const untrained = model.trained === false;
  el.banner.hidden = !untrained;
  el.bannerDetail.textContent = untrained ? [model.name, model.warning].filter(Boolean).join(' — ') : '';
}
// The pill: /status (model, workers) where this page may read it; otherwise (no key yet, a refused
// key, or a key that may not read it: --private-status) /readyz, which needs no key. Without
// /status the untrained banner comes from the first result's metadata.model.
async function checkStatus() {
  const base = baseUrl();
  if (state.statusReadable) {
    try {
      const status = await fetchStatus(base);
      const workers = status.workers || {};
      el.serverStatus.textContent = `${status.status || 'ok'} · ${status.model ? status.model.name : '?'} · workers ${workers.ready}/${workers.configured}`;
      el.serverStatus.className = `pill ${status.status === 'ok' ? 'ok' : 'bad'}`;
      el.serverStatus.title = '';
      setModel(status.model);
      if (getApiKey(base) && (state.keyState === 'refused' || state.keyState === 'required')) setKeyState('ok');
      return;
    } catch (e) {
      if (!(e instanceof ApiError)) { serverUnreachable(); return; }
      state.statusReadable = false;
      if (e.status === 401) {
        keyProblem(e);
      } else if (e.status === 403) {
        // Not an error: the key works, it just may not see the server's internals.
        state.statusNote = STATUS_FORBIDDEN;
        log(STATUS_FORBIDDEN);
        setKeyState(getApiKey(base) ? 'ok' : state.keyState);
      }
    }
  }
  try {
    const ready = await fetchReadiness(base);
    const workers = ready.workers || {};
    el.serverStatus.textContent = `${ready.status || '?'} · workers ${workers.ready ?? '?'}/${workers.configured ?? '?'}`;
    el.serverStatus.className = `pill ${ready.status === 'ready' ? 'ok' : 'bad'}`;
    el.serverStatus.title = state.statusNote || 'from /readyz: /status needs an API key';
  } catch {
    serverUnreachable();
  }
}
function serverUnreachable() {
  el.serverStatus.textContent = 'server unreachable';
  el.serverStatus.className = 'pill bad';
  el.serverStatus.title = '';
}

// ------------------------------------------------------------------ API key
// The key box shows once the server asked for a key (a 401 from any call) or while a key is
// stored. The key itself is never put back into the field, the log or a message.
const KEY_TEXT = {
  required: KEY_REQUIRED, refused: KEY_REFUSED, checking: 'checking the key…',
  ok: 'key in use', unchecked: 'key saved (not checked: the server did not answer)',
  invalid: 'Not an API key: printable characters, no spaces',
};
function setKeyState(keyState) {
  state.keyState = keyState;
  updateKeyBox();
}
function updateKeyBox() {
  const stored = !!getApiKey(baseUrl());
  const keyState = state.keyState;
  el.keyBox.hidden = !(stored || state.keyAsked);
  el.apiKey.placeholder = stored ? 'key saved' : 'API key';
  const idle = !state.busy && !state.generating && keyState !== 'checking';
  el.keyUse.disabled = !idle || !el.apiKey.value.trim();
  el.keyForget.disabled = !idle || !stored;
  const bad = keyState === 'required' || keyState === 'refused' || keyState === 'invalid';
  // "This key may not read the server status" says the key is in use: said alone, it fits the header.
  el.keyNote.textContent = bad || !state.statusNote ? KEY_TEXT[keyState] || '' : state.statusNote;
  el.keyNote.className = `key-note ${bad ? 'bad' : keyState === 'ok' ? 'ok' : ''}`;
  el.keyBox.dataset.key = stored ? 'stored' : 'none'; // for the browser test
}
// A 401 (no key, or a refused one): show the key box and say which.
function keyProblem(e) {
  state.keyAsked = true;
  setKeyState(e.keySent ? 'refused' : 'required');
}
// The key changed (or is gone): a socket opened with the old one is closed (the server checked
// the key only when it opened), /status is asked again. The session id stays: the next upload
// resumes it, or starts a new session where it is another key's.
function keyChanged() {
  closeSocket();
  state.statusReadable = true;
  state.statusNote = '';
  updateSessionInfo();
  updateButtons();
}
async function useKey() {
  const key = el.apiKey.value.trim();
  if (!key) return;
  const base = baseUrl();
  el.apiKey.value = '';
  if (!isPlausibleKey(key)) { setKeyState('invalid'); return; }
  setKeyState('checking');
  let verdict = 'ok';
  try {
    await checkKey(base, key);
  } catch (e) {
    verdict = e instanceof ApiError && e.status === 401 ? 'refused' : 'unchecked';
  }
  if (verdict === 'refused') {
    log(KEY_TEXT.refused); // a stored key that works stays in use
    setKeyState('refused');
    return;
  }
  const changed = getApiKey(base) !== key;
  setApiKey(base, key);
  log(verdict === 'ok' ? 'API key accepted (kept in this tab only)' : 'API key saved; the server did not answer to check it');
  if (changed) keyChanged();
  if (verdict === 'ok' && /API key/.test(el.error.textContent)) showError('');
  setKeyState(verdict);
  checkStatus();
}
function forgetKey() {
  forgetApiKey(baseUrl());
  log('API key forgotten');
  keyChanged();
  setKeyState('');
  checkStatus();
}
// An error of an upload or a reconnect, shown in the error box; a 401 also shows the key box.
function showRequestError(e, prefix = '', suffix = '') {
  if (e instanceof ApiError && e.status === 401) {
    keyProblem(e);
    showError(`${prefix}${e.message}: enter it in the key box at the top of the page.`);
    el.apiKey.focus();
    return;
  }
  showError(`${prefix}${e.message}${suffix}`);
}

// ------------------------------------------------------------------ photos
function addFiles(files) {
  for (const file of files) {
    if (!/^image\//.test(file.type) && !/\.(jpe?g|png|heic|heif|webp)$/i.test(file.name)) {
      log(`skipped ${file.name}: not an image`);
      continue;
    }
    const li = document.createElement('li');
    const img = document.createElement('img');
    const url = URL.createObjectURL(file);
    img.src = url;
    img.onerror = () => { img.style.visibility = 'hidden'; };
    img.alt = file.name;
    const name = document.createElement('div');
    name.className = 'name';
    name.textContent = file.name;
    const st = document.createElement('div');
    st.className = 'st';
    li.append(img, name, st);
    el.thumbs.append(li);
    const item = { file, li, st, url, status: '' };
    setItem(item, 'pending', fmtBytes(file.size));
    state.items.push(item);
  }
  updateButtons();
  live();
}
function setItem(item, status, text) {
  item.status = status;
  item.li.className = status;
  item.st.textContent = text;
  item.li.title = `${item.file.name}: ${text}`;
}
function clearFiles() {
  for (const item of state.items) URL.revokeObjectURL(item.url);
  state.items = [];
  el.thumbs.textContent = '';
  updateButtons();
}

// ------------------------------------------------------------------ session and socket
async function connect(id) {
  closeSocket();
  // The handlers run only once the socket is connected, by when `socket` is set.
  let socket = null;
  socket = await openSession(baseUrl(), id, {
    onProgress: (m) => setProgress(m.progress, `${m.stage}: ${m.message} (${elapsed()} s)`),
    onResult: (m) => handleResult(m),
    onError: (m) => {
      showError(m.message);
      if (!state.generating) return;
      endGenerate(false);
      live(); // photos added during the failed job still go up
    },
    onClose: (ev) => {
      if (state.socket !== socket) return; // a socket this page closed itself
      state.socket = null;
      log(`socket closed (code ${ev.code}${ev.reason ? `, ${ev.reason}` : ''})`);
      if (state.generating) {
        endGenerate(false);
        showError('Connection closed while generating; reconnect by session id to continue.');
      }
      updateSessionInfo();
      updateButtons();
    },
    onOther: (m) => log(m.type === 'pong' ? 'pong' : `unhandled message type "${m.type}"`),
  });
  state.socket = socket;
  state.sessionId = socket.id;
  state.uploadedSinceGenerate = 0;
  el.reconnectId.value = socket.id;
  log(`connected to ${socket.id} (${socket.imageCount} images stored)`);
  updateSessionInfo();
}
function closeSocket() {
  if (!state.socket) return;
  const socket = state.socket;
  state.socket = null;
  socket.close();
}
function updateSessionInfo() {
  el.sessionInfo.textContent = '';
  if (!state.sessionId) { el.sessionInfo.textContent = 'no session'; return; }
  const code = document.createElement('code');
  code.textContent = state.sessionId;
  const socket = state.socket;
  const cfg = state.session && state.session.session_id === state.sessionId ? state.session.config : null;
  const extra = cfg ? ` · process_res ${cfg.process_res} · max points ${cfg.num_max_points}` : '';
  const count = socket ? `${socket.imageCount}/${socket.maxImages || '?'} images` : 'images: ?';
  el.sessionInfo.append(code, ` · ${count}${extra} · ${socket ? 'connected' : 'disconnected'}`);
}

async function upload() {
  showError('');
  state.busy = true;
  updateButtons();
  el.progress.className = 'progress';
  try {
    if (!state.socket && state.sessionId) {
      // A session this page had (its socket dropped, or the key changed): resume it, unless the
      // server does not know it (expired, deleted, or another key's).
      try {
        await connect(state.sessionId);
      } catch (e) {
        if (!(e instanceof ApiError && e.status === 404)) throw e;
        log(`session ${state.sessionId} not found (expired, deleted, or another key's): starting a new session`);
        state.sessionId = null;
        updateSessionInfo();
      }
    }
    if (!state.socket) {
      state.session = await createSession(baseUrl(), {
        max_images: el.maxImages.value, process_res: el.processRes.value,
        num_max_points: el.numMaxPoints.value, show_cameras: el.showCameras.checked ? 'true' : 'false',
      });
      log(`session ${state.session.session_id} created: ${JSON.stringify(state.session.config)}`);
      await connect(state.session.session_id);
    }
    const todo = state.items.filter((item) => item.status === 'pending');
    const rejected = [];
    let n = 0;
    for (const item of todo) {
      setItem(item, 'sending', 'sending…');
      const reply = await state.socket.sendImage(await item.file.arrayBuffer());
      if (reply.type === 'ack') {
        state.uploadedSinceGenerate += 1;
        setItem(item, 'done', `✓ image #${reply.image_count}`);
      } else if (reply.type === 'closed') {
        setItem(item, 'pending', 'not sent');
        throw new Error('Connection lost during upload; reconnect and upload again.');
      } else {
        setItem(item, 'failed', `✗ ${reply.message}`);
        rejected.push(`${item.file.name}: ${reply.message}`);
      }
      n += 1;
      setProgress(n / todo.length, `uploaded ${n}/${todo.length} photos`);
      updateSessionInfo();
    }
    if (rejected.length) {
      el.progress.className = 'progress failed';
      showError(`${rejected.length} photo(s) rejected by the server:\n${rejected.join('\n')}`);
    } else {
      el.progress.className = 'progress done';
    }
  } catch (e) {
    showRequestError(e);
  } finally {
    state.busy = false;
    updateButtons();
  }
}

// incremental: a "generate" answered with "delta" (live mode) rather than "complete".
function startGenerate({ finalize = false, incremental = false } = {}) {
  if (!state.socket) return;
  showError('');
  state.generating = true;
  state.genStart = performance.now();
  state.uploadedSinceGenerate = 0;
  el.progress.className = 'progress';
  setProgress(0.02, finalize ? 'finalize requested…' : 'generate requested…');
  if (finalize) state.socket.finalize();
  else state.socket.generate(incremental);
  updateButtons();
}
function endGenerate(ok) {
  state.generating = false;
  el.progress.className = `progress ${ok ? 'done' : 'failed'}`;
  if (!ok) el.progressText.textContent += ' — failed';
  updateButtons();
}

// Live mode: photos added are uploaded as soon as the page is idle, then the cloud is generated
// again (one job per session at a time: photos added meanwhile wait for the result).
async function live() {
  if (!el.liveUpdate.checked || state.busy || state.generating) return;
  if (state.items.some((item) => item.status === 'pending')) await upload();
  if (el.liveUpdate.checked && state.socket && state.uploadedSinceGenerate > 0 && !state.busy && !state.generating) {
    startGenerate({ incremental: true });
  }
}

async function handleResult(m) {
  const secs = elapsed();
  const md = m.metadata || {};
  if (md.model) setModel(md.model);
  try {
    const glb = await resultGlb(m);
    const sessionId = md.session_id || state.sessionId;
    if (state.glbUrl) URL.revokeObjectURL(state.glbUrl);
    state.glbUrl = URL.createObjectURL(new Blob([glb], { type: 'model/gltf-binary' }));
    el.download.href = state.glbUrl;
    el.download.download = `da3-${(sessionId || 'scene').slice(0, 8)}-${m.image_count}img.glb`;
    el.download.hidden = false;

    await viewerReady;
    let points = md.num_points, cameras = (md.extrinsics || []).length;
    if (viewer) {
      await viewer.showResult(glb, md, { keepView: state.shownSession === sessionId });
      points = viewer.pointCount;
      cameras = viewer.cameraCount;
    }
    state.shownSession = sessionId;
    state.resultCount += 1;
    el.noResult.hidden = true;
    el.resultStats.hidden = false;
    el.statPoints.textContent = fmtCount(points);
    el.statPoints.dataset.count = points;
    el.statSize.textContent = fmtBytes(glb.byteLength);
    const frames = md.num_frames != null ? md.num_frames : m.image_count;
    el.statFrames.textContent = frames;
    el.statFramesUnit.textContent = frames === 1 ? ' frame' : ' frames';
    el.statExtra.textContent = ` · ${cameras} camera frustum${cameras === 1 ? '' : 's'} · ${secs} s`;
    el.stats.dataset.results = state.resultCount;
    setProgress(1, `${m.type}: ${fmtCount(points)} points from ${m.image_count} image${m.image_count === 1 ? '' : 's'} in ${secs} s`);
    log(`result "${m.type}": ${fmtBytes(glb.byteLength)} GLB, ${points} points`);
    endGenerate(true);
  } catch (e) {
    endGenerate(false);
    showError(`Could not show the result: ${e.message}`);
  }
  live();
}

// ------------------------------------------------------------------ buttons and wiring
function updateButtons() {
  const idle = !state.busy && !state.generating;
  const pending = state.items.filter((item) => item.status === 'pending').length;
  el.uploadBtn.disabled = !idle || !pending;
  el.uploadBtn.textContent = !state.socket ? 'Create session & upload'
    : pending ? `Upload ${pending} more photo${pending === 1 ? '' : 's'}` : 'Upload more photos';
  el.clearBtn.disabled = state.busy || !state.items.length;
  el.newSessionBtn.disabled = !idle || !state.sessionId;
  el.generateBtn.disabled = el.finalizeBtn.disabled = !idle || !state.socket || !state.socket.imageCount;
  el.reconnectBtn.disabled = !idle;
  el.fitBtn.disabled = el.screenshotBtn.disabled = !viewer || !viewer.hasResult;
  updateKeyBox();
}

el.dropzone.addEventListener('dragover', (e) => { e.preventDefault(); el.dropzone.classList.add('over'); });
el.dropzone.addEventListener('dragleave', () => el.dropzone.classList.remove('over'));
el.dropzone.addEventListener('drop', (e) => {
  e.preventDefault();
  el.dropzone.classList.remove('over');
  addFiles(e.dataTransfer.files);
});
el.dropzone.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') el.fileInput.click(); });
el.fileInput.addEventListener('change', () => { addFiles(el.fileInput.files); el.fileInput.value = ''; });
el.uploadBtn.addEventListener('click', upload);
el.clearBtn.addEventListener('click', clearFiles);
el.newSessionBtn.addEventListener('click', () => {
  closeSocket();
  state.sessionId = null;
  for (const item of state.items) if (item.status !== 'pending') setItem(item, 'pending', fmtBytes(item.file.size));
  updateSessionInfo();
  updateButtons();
});
el.generateBtn.addEventListener('click', () => startGenerate());
el.finalizeBtn.addEventListener('click', () => startGenerate({ finalize: true }));
el.liveUpdate.addEventListener('change', live);
el.reconnectBtn.addEventListener('click', async () => {
  const id = el.reconnectId.value.trim();
  if (!id) { showError('Enter a session id to reconnect.'); return; }
  showError('');
  state.busy = true;
  updateButtons();
  try {
    await connect(id);
  } catch (e) {
    const notFound = e instanceof ApiError && e.status === 404;
    showRequestError(e, `Reconnecting to ${id} failed: `, notFound ? ' (expired, deleted, or created with another API key)' : '');
  }
  state.busy = false;
  updateSessionInfo();
  updateButtons();
});
el.serverUrl.addEventListener('change', () => {
  // Keys are kept per server URL: another server gets only the key entered for it.
  state.keyAsked = false;
  state.keyState = '';
  keyChanged();
  checkStatus();
});
el.keyUse.addEventListener('click', useKey);
el.keyForget.addEventListener('click', forgetKey);
el.apiKey.addEventListener('input', updateKeyBox);
el.apiKey.addEventListener('keydown', (e) => { if (e.key === 'Enter') useKey(); });

el.serverUrl.value = /^https?:$/.test(location.protocol) ? location.origin : 'http://localhost:8000';
if (getApiKey(baseUrl())) state.keyState = 'ok'; // kept in this tab from before a reload; /status tells
updateButtons();
checkStatus();
setInterval(() => { if (!document.hidden && !state.generating) checkStatus(); }, 15000);
