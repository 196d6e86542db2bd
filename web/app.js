// da3-server web client: uploads photos over the v1 WebSocket protocol (docs/protocol.md), runs
// generate/finalize, parses the returned GLB and shows the point cloud with a small WebGL viewer.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const el = {
    serverUrl: $('server-url'), serverStatus: $('server-status'), banner: $('untrained-banner'),
    bannerDetail: $('untrained-detail'), maxImages: $('max-images'), processRes: $('process-res'),
    numMaxPoints: $('num-max-points'), showCameras: $('show-cameras'), dropzone: $('dropzone'),
    fileInput: $('file-input'), thumbs: $('thumbs'), uploadBtn: $('upload-btn'), clearBtn: $('clear-btn'),
    newSessionBtn: $('new-session-btn'), generateBtn: $('generate-btn'), finalizeBtn: $('finalize-btn'),
    progress: $('progress'), progressFill: $('progress-fill'), progressText: $('progress-text'),
    sessionInfo: $('session-info'), reconnectId: $('reconnect-id'), reconnectBtn: $('reconnect-btn'),
    error: $('error'), log: $('log'), noResult: $('no-result'), resultStats: $('result-stats'),
    statPoints: $('stat-points'), statSize: $('stat-size'), statFrames: $('stat-frames'),
    statExtra: $('stat-extra'), download: $('download-link'), pointSize: $('point-size'), canvas: $('canvas'),
  };
  const state = {
    items: [], ws: null, sessionId: null, session: null, imageCount: 0, maxImages: 0,
    waiter: null, busy: false, generating: false, genStart: 0, glbUrl: null,
  };

  // ---------------------------------------------------------------- small helpers
  function log(msg) {
    const t = new Date().toLocaleTimeString();
    el.log.textContent += `[${t}] ${msg}\n`;
    el.log.scrollTop = el.log.scrollHeight;
  }
  function showError(msg) {
    el.error.textContent = msg || '';
    el.error.hidden = !msg;
    if (msg) log('ERROR: ' + msg);
  }
  function fmtBytes(n) {
    if (n < 1024) return n + ' B';
    if (n < 1048576) return (n / 1024).toFixed(1) + ' KiB';
    return (n / 1048576).toFixed(2) + ' MiB';
  }
  function baseUrl() { return (el.serverUrl.value.trim() || location.origin).replace(/\/+$/, ''); }
  function wsUrl(path) { return baseUrl().replace(/^http/i, 'ws') + path; }
  function setProgress(frac, text) {
    el.progressFill.style.width = Math.max(0, Math.min(1, frac)) * 100 + '%';
    el.progressText.textContent = text;
  }

  // ---------------------------------------------------------------- server status / model banner
  function setModel(model) {
    if (!model) return;
    const untrained = model.trained === false;
    el.banner.hidden = !untrained;
    el.bannerDetail.textContent = untrained ? [model.name, model.warning].filter(Boolean).join(' — ') : '';
  }
  async function checkStatus() {
    try {
      const r = await fetch(baseUrl() + '/status');
      const js = await r.json();
      const w = js.workers || {};
      el.serverStatus.textContent = `${js.status || 'ok'} · ${js.model ? js.model.name : '?'} · workers ${w.ready}/${w.configured}`;
      el.serverStatus.className = 'pill ' + (js.status === 'ok' ? 'ok' : 'bad');
      setModel(js.model);
    } catch (e) {
      el.serverStatus.textContent = 'server unreachable';
      el.serverStatus.className = 'pill bad';
    }
  }

  // ---------------------------------------------------------------- photos
  function addFiles(files) {
    for (const file of files) {
      if (!/^image\//.test(file.type) && !/\.(jpe?g|png)$/i.test(file.name)) {
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
  }
  function setItem(item, status, text) {
    item.status = status;
    item.li.className = status;
    item.st.textContent = text;
    item.li.title = `${item.file.name}: ${text}`;
  }
  function clearFiles() {
    for (const it of state.items) URL.revokeObjectURL(it.url);
    state.items = [];
    el.thumbs.textContent = '';
    updateButtons();
  }

  // ---------------------------------------------------------------- session + socket
  async function createSession() {
    const q = new URLSearchParams({
      max_images: el.maxImages.value, process_res: el.processRes.value,
      num_max_points: el.numMaxPoints.value, show_cameras: el.showCameras.checked ? 'true' : 'false',
    });
    const r = await fetch(`${baseUrl()}/ws/session/create?${q}`, { method: 'POST' });
    let js = {};
    try { js = await r.json(); } catch (e) { /* not JSON */ }
    if (!r.ok || !js.session_id) throw new Error(`Creating the session failed (HTTP ${r.status}): ${js.detail || r.statusText}`);
    log(`session ${js.session_id} created: ${JSON.stringify(js.config)}`);
    state.session = js;
    return js.session_id;
  }

  function connect(id) {
    closeSocket();
    return new Promise((resolve, reject) => {
      const url = wsUrl('/ws/reconstruct/' + encodeURIComponent(id));
      const ws = new WebSocket(url);
      ws.binaryType = 'arraybuffer';
      let opened = false;
      ws.onmessage = (ev) => {
        let m;
        try { m = JSON.parse(ev.data); } catch (e) { log('non-JSON message ignored'); return; }
        if (opened) { onMessage(m); return; }
        if (m.type === 'connected') {
          opened = true;
          state.ws = ws;
          state.sessionId = m.session_id || id;
          state.imageCount = m.image_count || 0;
          state.maxImages = m.max_images || 0;
          el.reconnectId.value = state.sessionId;
          log(`connected to ${state.sessionId} (${state.imageCount} images stored)`);
          updateSessionInfo();
          updateButtons();
          resolve(m);
        } else {
          reject(new Error(m.message || `unexpected first message "${m.type}"`));
          ws.close();
        }
      };
      ws.onerror = () => { if (!opened) reject(new Error('WebSocket connection failed: ' + url)); };
      ws.onclose = (ev) => {
        if (!opened) { reject(new Error(`WebSocket closed before "connected" (code ${ev.code})`)); return; }
        if (state.ws !== ws) return;
        state.ws = null;
        log(`socket closed (code ${ev.code}${ev.reason ? ', ' + ev.reason : ''})`);
        if (state.waiter) { const w = state.waiter; state.waiter = null; w({ type: 'closed' }); }
        if (state.generating) { endGenerate(false); showError('Connection closed while generating; reconnect by session id to continue.'); }
        updateSessionInfo();
        updateButtons();
      };
    });
  }
  function closeSocket() {
    if (!state.ws) return;
    const ws = state.ws;
    state.ws = null;
    ws.close();
  }
  function updateSessionInfo() {
    el.sessionInfo.textContent = '';
    if (!state.sessionId) { el.sessionInfo.textContent = 'no session'; return; }
    const code = document.createElement('code');
    code.textContent = state.sessionId;
    const cfg = state.session && state.session.session_id === state.sessionId ? state.session.config : null;
    const extra = cfg ? ` · process_res ${cfg.process_res} · max points ${cfg.num_max_points}` : '';
    el.sessionInfo.append(code, ` · ${state.imageCount}/${state.maxImages || '?'} images${extra} · ${state.ws ? 'connected' : 'disconnected'}`);
  }

  function onMessage(m) {
    switch (m.type) {
      case 'ack': case 'error':
        if (state.waiter) { const w = state.waiter; state.waiter = null; w(m); return; }
        if (m.type === 'error') {
          if (state.generating) endGenerate(false);
          showError(m.message);
        }
        return;
      case 'progress': {
        const secs = ((performance.now() - state.genStart) / 1000).toFixed(1);
        setProgress(m.progress, `${m.stage}: ${m.message} (${secs} s)`);
        return;
      }
      case 'complete': case 'delta':
        handleResult(m);
        return;
      case 'pong':
        log('pong');
        return;
      default:
        log(`unhandled message type "${m.type}"`);
    }
  }

  // Sends one message and waits for its ack/error (the server answers uploads in order).
  function sendAndWait(data) {
    return new Promise((resolve) => { state.waiter = resolve; state.ws.send(data); });
  }

  async function upload() {
    showError('');
    state.busy = true;
    updateButtons();
    el.progress.className = 'progress';
    try {
      if (!state.ws) await connect(await createSession());
      const todo = state.items.filter((it) => it.status === 'pending');
      const rejected = [];
      let n = 0;
      for (const item of todo) {
        if (!state.ws) throw new Error('Connection lost during upload; reconnect and upload again.');
        setItem(item, 'sending', 'sending…');
        const reply = await sendAndWait(await item.file.arrayBuffer());
        if (reply.type === 'ack') {
          state.imageCount = reply.image_count;
          setItem(item, 'done', `✓ image #${reply.image_count}`);
        } else if (reply.type === 'closed') {
          setItem(item, 'pending', 'not sent');
          throw new Error('Connection lost during upload; reconnect and upload again.');
        } else {
          setItem(item, 'failed', '✗ ' + reply.message);
          rejected.push(`${item.file.name}: ${reply.message}`);
        }
        n += 1;
        setProgress(n / todo.length, `uploaded ${n}/${todo.length} photos`);
        updateSessionInfo();
      }
      if (rejected.length) {
        el.progress.className = 'progress failed';
        showError(`${rejected.length} photo(s) rejected by the server:\n` + rejected.join('\n'));
      } else {
        el.progress.className = 'progress done';
      }
    } catch (e) {
      showError(e.message);
    } finally {
      state.busy = false;
      updateButtons();
    }
  }

  function startGenerate(finalize) {
    if (!state.ws) return;
    showError('');
    state.generating = true;
    state.genStart = performance.now();
    el.progress.className = 'progress';
    setProgress(0.02, finalize ? 'finalize requested…' : 'generate requested…');
    state.ws.send(JSON.stringify(finalize ? { type: 'finalize' } : { type: 'generate', incremental: false }));
    updateButtons();
  }
  function endGenerate(ok) {
    state.generating = false;
    el.progress.className = 'progress ' + (ok ? 'done' : 'failed');
    if (!ok) el.progressText.textContent += ' — failed';
    updateButtons();
  }

  async function decodeBase64(b64) {
    if (Uint8Array.fromBase64) return Uint8Array.fromBase64(b64).buffer;
    try {
      return await (await fetch('data:model/gltf-binary;base64,' + b64)).arrayBuffer();
    } catch (e) { /* fall back to atob in chunks */ }
    const out = new Uint8Array(Math.floor(b64.length * 3 / 4) + 3);
    let len = 0;
    for (let i = 0; i < b64.length; i += 1 << 20) {
      const s = atob(b64.slice(i, i + (1 << 20)));
      for (let j = 0; j < s.length; j++) out[len++] = s.charCodeAt(j);
    }
    return out.buffer.slice(0, len);
  }

  async function handleResult(m) {
    const secs = ((performance.now() - state.genStart) / 1000).toFixed(1);
    const md = m.metadata || {};
    if (md.model) setModel(md.model);
    try {
      const glb = await decodeBase64(m.glb_base64 || '');
      const scene = parseGLB(glb);
      if (state.glbUrl) URL.revokeObjectURL(state.glbUrl);
      state.glbUrl = URL.createObjectURL(new Blob([glb], { type: 'model/gltf-binary' }));
      el.download.href = state.glbUrl;
      el.download.download = `da3-${(md.session_id || state.sessionId || 'scene').slice(0, 8)}-${m.image_count}img.glb`;
      el.download.hidden = false;
      el.noResult.hidden = true;
      el.resultStats.hidden = false;
      el.statPoints.textContent = scene.pointCount.toLocaleString('en-US');
      el.statPoints.dataset.count = scene.pointCount;
      el.statSize.textContent = fmtBytes(glb.byteLength);
      el.statFrames.textContent = md.num_frames != null ? md.num_frames : m.image_count;
      el.statExtra.textContent = ` · ${scene.cameraCount} camera frustums · ${secs} s`;
      setProgress(1, `${m.type === 'delta' ? 'delta' : 'complete'}: ${scene.pointCount.toLocaleString('en-US')} points from ${m.image_count} images in ${secs} s`);
      log(`result "${m.type}": ${fmtBytes(glb.byteLength)} GLB, ${scene.pointCount} points`);
      viewer.setScene(scene);
      endGenerate(true);
    } catch (e) {
      endGenerate(false);
      showError('Could not read the result GLB: ' + e.message);
    }
  }

  // ---------------------------------------------------------------- GLB parsing
  const COMP = { 5120: Int8Array, 5121: Uint8Array, 5122: Int16Array, 5123: Uint16Array, 5125: Uint32Array, 5126: Float32Array };
  const NCOMP = { SCALAR: 1, VEC2: 2, VEC3: 3, VEC4: 4 };

  function readAccessor(gltf, bin, index) {
    const a = gltf.accessors[index];
    const T = COMP[a.componentType], n = NCOMP[a.type];
    if (!T || !n) throw new Error(`accessor ${index}: unsupported type`);
    const out = new T(a.count * n);
    if (a.bufferView == null) return { data: out, n, normalized: a.normalized };
    const bv = gltf.bufferViews[a.bufferView];
    const elem = T.BYTES_PER_ELEMENT * n, stride = bv.byteStride || elem;
    const start = (bv.byteOffset || 0) + (a.byteOffset || 0);
    if (!bin || a.count && start + stride * (a.count - 1) + elem > bin.byteLength) throw new Error(`accessor ${index} is out of range`);
    const bytes = new Uint8Array(out.buffer);
    if (stride === elem) bytes.set(bin.subarray(start, start + elem * a.count));
    else for (let i = 0; i < a.count; i++) bytes.set(bin.subarray(start + i * stride, start + i * stride + elem), i * elem);
    return { data: out, n, normalized: a.normalized };
  }

  // Colours as RGBA8: from COLOR_0 (any glTF encoding) or else a constant.
  function colorsRGBA8(acc, count, fallback) {
    if (acc && acc.n === 4 && acc.data instanceof Uint8Array) return acc.data;
    const out = new Uint8Array(count * 4);
    for (let i = 0; i < count; i++) {
      for (let k = 0; k < 4; k++) {
        let v = fallback[k];
        if (acc && k < acc.n) {
          const x = acc.data[i * acc.n + k];
          v = acc.data instanceof Float32Array ? x * 255 : acc.data instanceof Uint16Array ? x >> 8 : x;
        }
        out[i * 4 + k] = v;
      }
    }
    return out;
  }

  function nodeMatrix(node) {
    if (node.matrix) return Float32Array.from(node.matrix);
    const [x, y, z, w] = node.rotation || [0, 0, 0, 1], [sx, sy, sz] = node.scale || [1, 1, 1], t = node.translation || [0, 0, 0];
    return new Float32Array([
      (1 - 2 * (y * y + z * z)) * sx, 2 * (x * y + z * w) * sx, 2 * (x * z - y * w) * sx, 0,
      2 * (x * y - z * w) * sy, (1 - 2 * (x * x + z * z)) * sy, 2 * (y * z + x * w) * sy, 0,
      2 * (x * z + y * w) * sz, 2 * (y * z - x * w) * sz, (1 - 2 * (x * x + y * y)) * sz, 0,
      t[0], t[1], t[2], 1]);
  }

  function parseGLB(buf) {
    const dv = new DataView(buf);
    if (buf.byteLength < 20 || dv.getUint32(0, true) !== 0x46546C67) throw new Error('not a GLB (bad magic)');
    if (dv.getUint32(4, true) !== 2) throw new Error('unsupported glTF version ' + dv.getUint32(4, true));
    const total = Math.min(dv.getUint32(8, true), buf.byteLength);
    let off = 12, gltf = null, bin = null;
    while (off + 8 <= total) {
      const len = dv.getUint32(off, true), type = dv.getUint32(off + 4, true);
      if (off + 8 + len > total) throw new Error('truncated GLB chunk');
      if (type === 0x4E4F534A) gltf = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, off + 8, len)));
      else if (type === 0x004E4942 && !bin) bin = new Uint8Array(buf, off + 8, len);
      off += 8 + len;
    }
    if (!gltf) throw new Error('GLB has no JSON chunk');

    const parts = { points: [], lines: [] };
    let cameraCount = 0;
    const addMesh = (meshIndex, mat) => {
      for (const prim of gltf.meshes[meshIndex].primitives) {
        const mode = prim.mode == null ? 4 : prim.mode;
        if ((mode !== 0 && mode !== 1) || prim.attributes.POSITION == null) continue;
        let pos = readAccessor(gltf, bin, prim.attributes.POSITION).data;
        let col = prim.attributes.COLOR_0 != null ? readAccessor(gltf, bin, prim.attributes.COLOR_0) : null;
        const mat0 = prim.material != null && gltf.materials ? gltf.materials[prim.material] : null;
        const base = mat0 && mat0.pbrMetallicRoughness && mat0.pbrMetallicRoughness.baseColorFactor;
        let count = pos.length / 3;
        let rgba = colorsRGBA8(col, count, base ? base.map((v) => v * 255) : [200, 200, 200, 255]);
        if (prim.indices != null) { // expand indexed lines/points into plain arrays
          const idx = readAccessor(gltf, bin, prim.indices).data;
          const p2 = new Float32Array(idx.length * 3), c2 = new Uint8Array(idx.length * 4);
          idx.forEach((v, i) => { p2.set(pos.subarray(v * 3, v * 3 + 3), i * 3); c2.set(rgba.subarray(v * 4, v * 4 + 4), i * 4); });
          pos = p2; rgba = c2; count = idx.length;
        }
        if (mat) {
          for (let i = 0; i < pos.length; i += 3) {
            const x = pos[i], y = pos[i + 1], z = pos[i + 2];
            pos[i] = mat[0] * x + mat[4] * y + mat[8] * z + mat[12];
            pos[i + 1] = mat[1] * x + mat[5] * y + mat[9] * z + mat[13];
            pos[i + 2] = mat[2] * x + mat[6] * y + mat[10] * z + mat[14];
          }
        }
        parts[mode === 0 ? 'points' : 'lines'].push({ pos, rgba, count });
        if (mode === 1) cameraCount += 1;
      }
    };
    const visit = (ni, parent) => {
      const node = gltf.nodes[ni];
      const local = node.matrix || node.rotation || node.scale || node.translation ? nodeMatrix(node) : null;
      const mat = !local ? parent : !parent ? local : mat4mul(parent, local);
      if (node.mesh != null) addMesh(node.mesh, mat);
      for (const c of node.children || []) visit(c, mat);
    };
    const scene = gltf.scenes && gltf.scenes[gltf.scene || 0];
    if (scene && gltf.nodes) for (const ni of scene.nodes || []) visit(ni, null);
    else (gltf.meshes || []).forEach((_, i) => addMesh(i, null));

    const merge = (list) => {
      const count = list.reduce((s, p) => s + p.count, 0);
      const pos = new Float32Array(count * 3), rgba = new Uint8Array(count * 4);
      let o = 0;
      for (const p of list) { pos.set(p.pos, o * 3); rgba.set(p.rgba, o * 4); o += p.count; }
      return { pos, rgba, count };
    };
    const points = merge(parts.points), lines = merge(parts.lines);
    return { points, lines, pointCount: points.count, cameraCount, gltf };
  }

  // ---------------------------------------------------------------- matrices (column-major)
  function mat4mul(a, b) {
    const o = new Float32Array(16);
    for (let c = 0; c < 4; c++) for (let r = 0; r < 4; r++) {
      let s = 0;
      for (let k = 0; k < 4; k++) s += a[k * 4 + r] * b[c * 4 + k];
      o[c * 4 + r] = s;
    }
    return o;
  }
  function perspective(fovy, aspect, near, far) {
    const f = 1 / Math.tan(fovy / 2), nf = 1 / (near - far);
    return new Float32Array([f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) * nf, -1, 0, 0, 2 * far * near * nf, 0]);
  }
  function lookAt(eye, target, up) {
    const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
    const norm = (v) => { const l = Math.hypot(v[0], v[1], v[2]) || 1; return [v[0] / l, v[1] / l, v[2] / l]; };
    const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
    const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    const z = norm(sub(eye, target)), x = norm(cross(up, z)), y = cross(z, x);
    return new Float32Array([x[0], y[0], z[0], 0, x[1], y[1], z[1], 0, x[2], y[2], z[2], 0, -dot(x, eye), -dot(y, eye), -dot(z, eye), 1]);
  }

  // ---------------------------------------------------------------- viewer (WebGL, 2D fallback)
  const viewer = (() => {
    const canvas = el.canvas;
    const cam = { target: [0, 0, 0], dist: 3, yaw: 0, pitch: 0.15, home: null };
    let scene = null, gl = null, prog = null, bufs = null, ctx2d = null, pending = false;

    gl = canvas.getContext('webgl', { antialias: false, preserveDrawingBuffer: true });
    if (gl) {
      const sh = (type, src) => {
        const s = gl.createShader(type);
        gl.shaderSource(s, src);
        gl.compileShader(s);
        if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
        return s;
      };
      try {
        prog = gl.createProgram();
        gl.attachShader(prog, sh(gl.VERTEX_SHADER,
          'attribute vec3 p; attribute vec4 c; uniform mat4 m; uniform float s; varying vec3 v;' +
          'void main() { gl_Position = m * vec4(p, 1.0); gl_PointSize = s; v = c.rgb; }'));
        gl.attachShader(prog, sh(gl.FRAGMENT_SHADER,
          'precision mediump float; varying vec3 v; void main() { gl_FragColor = vec4(v, 1.0); }'));
        gl.linkProgram(prog);
        if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(prog));
      } catch (e) {
        log('WebGL unusable (' + e.message + '), using the 2D canvas');
        gl = null;
      }
    }
    if (!gl) { ctx2d = canvas.getContext('2d'); log('WebGL not available: drawing with the 2D canvas (slower)'); }

    function upload(part) {
      const p = gl.createBuffer(), c = gl.createBuffer();
      gl.bindBuffer(gl.ARRAY_BUFFER, p);
      gl.bufferData(gl.ARRAY_BUFFER, part.pos, gl.STATIC_DRAW);
      gl.bindBuffer(gl.ARRAY_BUFFER, c);
      gl.bufferData(gl.ARRAY_BUFFER, part.rgba, gl.STATIC_DRAW);
      return { p, c, count: part.count };
    }
    function bindDraw(b, mode) {
      if (!b.count) return;
      const lp = gl.getAttribLocation(prog, 'p'), lc = gl.getAttribLocation(prog, 'c');
      gl.bindBuffer(gl.ARRAY_BUFFER, b.p);
      gl.enableVertexAttribArray(lp);
      gl.vertexAttribPointer(lp, 3, gl.FLOAT, false, 0, 0);
      gl.bindBuffer(gl.ARRAY_BUFFER, b.c);
      gl.enableVertexAttribArray(lc);
      gl.vertexAttribPointer(lc, 4, gl.UNSIGNED_BYTE, true, 0, 0);
      gl.drawArrays(mode, 0, b.count);
    }

    // Frames the view on the central 96 % of a sample of the points (robust to stray points).
    function frame() {
      const src = scene.points.count ? scene.points : scene.lines;
      const n = src.count;
      if (!n) { cam.target = [0, 0, 0]; cam.dist = 3; return; }
      const step = Math.max(1, Math.floor(n / 20000));
      const lo = [], hi = [];
      for (let k = 0; k < 3; k++) {
        const v = [];
        for (let i = 0; i < n; i += step) v.push(src.pos[i * 3 + k]);
        v.sort((a, b) => a - b);
        lo.push(v[Math.floor(v.length * 0.02)]);
        hi.push(v[Math.min(v.length - 1, Math.floor(v.length * 0.98))]);
      }
      cam.target = [0, 1, 2].map((k) => (lo[k] + hi[k]) / 2);
      cam.dist = Math.max(1e-3, Math.hypot(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]) * 1.1);
      cam.yaw = 0;
      cam.pitch = 0.15;
    }

    function matrix() {
      const w = canvas.width, h = canvas.height;
      const cp = Math.cos(cam.pitch), t = cam.target;
      const eye = [t[0] + cam.dist * cp * Math.sin(cam.yaw), t[1] + cam.dist * Math.sin(cam.pitch), t[2] + cam.dist * cp * Math.cos(cam.yaw)];
      return { m: mat4mul(perspective(50 * Math.PI / 180, w / Math.max(1, h), cam.dist * 0.01, cam.dist * 100), lookAt(eye, t, [0, 1, 0])), w, h };
    }

    function draw() {
      pending = false;
      const dpr = window.devicePixelRatio || 1;
      const w = Math.max(1, Math.round(canvas.clientWidth * dpr)), h = Math.max(1, Math.round(canvas.clientHeight * dpr));
      if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
      const { m } = matrix();
      const size = Number(el.pointSize.value) * dpr;
      const showCams = el.showCameras.checked;
      if (gl) {
        gl.viewport(0, 0, w, h);
        gl.clearColor(0.067, 0.082, 0.11, 1);
        gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
        if (!scene) return;
        gl.enable(gl.DEPTH_TEST);
        gl.useProgram(prog);
        gl.uniformMatrix4fv(gl.getUniformLocation(prog, 'm'), false, m);
        gl.uniform1f(gl.getUniformLocation(prog, 's'), size);
        bindDraw(bufs.points, gl.POINTS);
        if (showCams) bindDraw(bufs.lines, gl.LINES);
        return;
      }
      draw2D(m, w, h, Math.max(1, Math.round(size)), showCams);
    }

    function project(m, pos, i, w, h) {
      const x = pos[i], y = pos[i + 1], z = pos[i + 2];
      const cw = m[3] * x + m[7] * y + m[11] * z + m[15];
      if (cw <= 1e-6) return null;
      return [((m[0] * x + m[4] * y + m[8] * z + m[12]) / cw * 0.5 + 0.5) * w,
        (0.5 - (m[1] * x + m[5] * y + m[9] * z + m[13]) / cw * 0.5) * h,
        (m[2] * x + m[6] * y + m[10] * z + m[14]) / cw];
    }
    function draw2D(m, w, h, size, showCams) {
      const img = ctx2d.createImageData(w, h), px = new Uint32Array(img.data.buffer);
      px.fill(0xff1c1511); // background, ABGR little-endian
      if (scene) {
        const depth = new Float32Array(w * h).fill(Infinity), { pos, rgba, count } = scene.points;
        for (let i = 0; i < count; i++) {
          const q = project(m, pos, i * 3, w, h);
          if (!q || q[2] < -1 || q[2] > 1) continue;
          const c = 0xff000000 | (rgba[i * 4 + 2] << 16) | (rgba[i * 4 + 1] << 8) | rgba[i * 4];
          const x0 = Math.round(q[0] - size / 2), y0 = Math.round(q[1] - size / 2);
          for (let y = Math.max(0, y0); y < Math.min(h, y0 + size); y++) {
            for (let x = Math.max(0, x0); x < Math.min(w, x0 + size); x++) {
              const k = y * w + x;
              if (q[2] < depth[k]) { depth[k] = q[2]; px[k] = c; }
            }
          }
        }
      }
      ctx2d.putImageData(img, 0, 0);
      if (!scene || !showCams) return;
      const { pos, rgba, count } = scene.lines;
      ctx2d.lineWidth = 1;
      for (let i = 0; i + 1 < count; i += 2) {
        const a = project(m, pos, i * 3, w, h), b = project(m, pos, i * 3 + 3, w, h);
        if (!a || !b) continue;
        ctx2d.strokeStyle = `rgb(${rgba[i * 4]},${rgba[i * 4 + 1]},${rgba[i * 4 + 2]})`;
        ctx2d.beginPath();
        ctx2d.moveTo(a[0], a[1]);
        ctx2d.lineTo(b[0], b[1]);
        ctx2d.stroke();
      }
    }

    function render() { if (!pending) { pending = true; requestAnimationFrame(draw); } }

    // Mouse / touch: drag orbits, right- or shift-drag pans, wheel zooms, double-click resets.
    let drag = null;
    canvas.addEventListener('pointerdown', (e) => {
      drag = { x: e.clientX, y: e.clientY, pan: e.button === 2 || e.shiftKey };
      canvas.setPointerCapture(e.pointerId);
      canvas.classList.add('dragging');
    });
    canvas.addEventListener('pointermove', (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      drag.x = e.clientX;
      drag.y = e.clientY;
      if (drag.pan) {
        const k = cam.dist / Math.max(1, canvas.clientHeight) * 0.93;
        const cy = Math.cos(cam.yaw), sy = Math.sin(cam.yaw), sp = Math.sin(cam.pitch), cp = Math.cos(cam.pitch);
        const right = [cy, 0, -sy], up = [-sy * sp, cp, -cy * sp];
        for (let i = 0; i < 3; i++) cam.target[i] += (-dx * right[i] + dy * up[i]) * k;
      } else {
        cam.yaw -= dx * 0.006;
        cam.pitch = Math.max(-1.55, Math.min(1.55, cam.pitch + dy * 0.006));
      }
      render();
    });
    const endDrag = () => { drag = null; canvas.classList.remove('dragging'); };
    canvas.addEventListener('pointerup', endDrag);
    canvas.addEventListener('pointercancel', endDrag);
    canvas.addEventListener('contextmenu', (e) => e.preventDefault());
    canvas.addEventListener('wheel', (e) => {
      e.preventDefault();
      cam.dist *= Math.exp(Math.max(-100, Math.min(100, e.deltaY)) * 0.002);
      render();
    }, { passive: false });
    canvas.addEventListener('dblclick', () => { if (scene) { frame(); render(); } });
    new ResizeObserver(render).observe(canvas);
    el.pointSize.addEventListener('input', render);
    el.showCameras.addEventListener('change', render);

    return {
      setScene(s) {
        scene = s;
        if (gl) {
          if (bufs) for (const b of [bufs.points, bufs.lines]) { gl.deleteBuffer(b.p); gl.deleteBuffer(b.c); }
          bufs = { points: upload(s.points), lines: upload(s.lines) };
        }
        frame();
        render();
      },
      mode: gl ? 'webgl' : '2d',
      render,
    };
  })();
  el.canvas.dataset.renderer = viewer.mode;

  // ---------------------------------------------------------------- buttons and wiring
  function updateButtons() {
    const idle = !state.busy && !state.generating;
    const pending = state.items.filter((it) => it.status === 'pending').length;
    el.uploadBtn.disabled = !idle || !pending;
    el.uploadBtn.textContent = !state.ws ? 'Create session & upload'
      : pending ? `Upload ${pending} more photo${pending === 1 ? '' : 's'}` : 'Upload more photos';
    el.clearBtn.disabled = state.busy || !state.items.length;
    el.newSessionBtn.disabled = !idle || !state.sessionId;
    el.generateBtn.disabled = el.finalizeBtn.disabled = !idle || !state.ws || !state.imageCount;
    el.reconnectBtn.disabled = !idle;
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
    state.imageCount = 0;
    for (const it of state.items) if (it.status !== 'pending') setItem(it, 'pending', fmtBytes(it.file.size));
    updateSessionInfo();
    updateButtons();
  });
  el.generateBtn.addEventListener('click', () => startGenerate(false));
  el.finalizeBtn.addEventListener('click', () => startGenerate(true));
  el.reconnectBtn.addEventListener('click', async () => {
    const id = el.reconnectId.value.trim();
    if (!id) { showError('Enter a session id to reconnect.'); return; }
    showError('');
    state.busy = true;
    updateButtons();
    try { await connect(id); } catch (e) { showError(`Reconnecting to ${id} failed: ${e.message}`); }
    state.busy = false;
    updateSessionInfo();
    updateButtons();
  });
  el.serverUrl.addEventListener('change', () => {
    closeSocket();
    updateSessionInfo();
    updateButtons();
    checkStatus();
  });

  el.serverUrl.value = /^https?:$/.test(location.protocol) ? location.origin : 'http://localhost:8000';
  updateButtons();
  checkStatus();
  setInterval(() => { if (!document.hidden && !state.generating) checkStatus(); }, 15000);
})();
