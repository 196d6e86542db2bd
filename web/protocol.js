// The page's client for protocol v1 (docs/protocol.md): the HTTP calls it needs and one session's
// WebSocket, and the API key of a server started with --api-keys (docs/security.md). Knows
// nothing of the DOM; the UI (ui.js) gets the server's messages through handlers.

// ------------------------------------------------------------------ API keys
// A server with keys wants `Authorization: Bearer KEY` on every HTTP request and `?token=KEY` in a
// WebSocket's URL (a browser cannot set headers on a WebSocket). The key lives in this tab's
// sessionStorage only (gone when the tab closes; never localStorage, never a cookie, never
// logged), filed under the server URL it was entered for, so that it is only ever sent there.
const KEY_ITEM = 'da3-server.api-key ';
const memoryKeys = new Map(); // only where sessionStorage is unusable (storage disabled)

function tabStorage() {
  try { return window.sessionStorage; } catch { return null; }
}
export function getApiKey(baseUrl) {
  const storage = tabStorage();
  if (storage) {
    try { return storage.getItem(KEY_ITEM + baseUrl) || memoryKeys.get(baseUrl) || ''; } catch { /* below */ }
  }
  return memoryKeys.get(baseUrl) || '';
}
export function setApiKey(baseUrl, key) {
  memoryKeys.delete(baseUrl);
  const storage = tabStorage();
  try {
    if (storage) { storage.setItem(KEY_ITEM + baseUrl, key); return; }
  } catch { /* quota or storage disabled: this page keeps it until it is closed or reloaded */ }
  memoryKeys.set(baseUrl, key);
}
export function forgetApiKey(baseUrl) {
  memoryKeys.delete(baseUrl);
  const storage = tabStorage();
  try { if (storage) storage.removeItem(KEY_ITEM + baseUrl); } catch { /* nothing stored */ }
}
// What a key may be (docs/security.md: printable characters without spaces); anything else could
// not even be put in a header.
export const isPlausibleKey = (key) => /^[\x21-\x7e]{1,256}$/.test(key);

export const KEY_REQUIRED = 'This server needs an API key';
export const KEY_REFUSED = 'The API key was refused';
export const STATUS_FORBIDDEN = 'This key may not read the server status';

// An HTTP answer that is not 2xx. status 401: no key or a refused one (keySent says which); 403
// on /status: a key that may not read it (--private-status); 404 on a session: unknown, expired,
// deleted or another key's (the server never says which).
export class ApiError extends Error {
  constructor(status, message, { detail = '', keySent = false } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.detail = detail;
    this.keySent = keySent;
  }
}

function keyError(status, keySent, detail) {
  return new ApiError(status, keySent ? KEY_REFUSED : KEY_REQUIRED, { detail, keySent });
}

// fetch with the key (the stored one, or `key` when given) and the JSON body: resolves to
// {response, body, keySent}; rejects only when the server cannot be reached.
async function send(baseUrl, path, { method = 'GET', key } = {}) {
  const k = key === undefined ? getApiKey(baseUrl) : key;
  const headers = k ? { Authorization: `Bearer ${k}` } : {};
  const response = await fetch(`${baseUrl}${path}`, { method, headers, credentials: 'omit' });
  let body = null;
  try { body = await response.json(); } catch { /* an error page that is not JSON: the status says enough */ }
  return { response, body: body || {}, keySent: !!k };
}

// The answer's JSON when it is 2xx; otherwise an ApiError: `what` failed (HTTP n): detail.
async function call(baseUrl, path, what, options) {
  const { response, body, keySent } = await send(baseUrl, path, options);
  if (response.ok) return body;
  const detail = typeof body.detail === 'string' ? body.detail : response.statusText;
  if (response.status === 401) throw keyError(401, keySent, detail);
  throw new ApiError(response.status, `${what} failed (HTTP ${response.status}): ${detail}`, { detail, keySent });
}

// Checks a key (the stored one, or `key`) with a request that needs one, GET /ws/sessions:
// resolves when the server takes it (or needs none), rejects with an ApiError (401) when not.
export async function checkKey(baseUrl, key) {
  await call(baseUrl, '/ws/sessions', 'Checking the API key', { key });
}

// GET /status. Any answer but 401/403 resolves to its JSON (a degraded server still says why);
// 401 and 403 reject with an ApiError (403: STATUS_FORBIDDEN).
export async function fetchStatus(baseUrl) {
  const { response, body, keySent } = await send(baseUrl, '/status');
  if (response.status === 401) throw keyError(401, keySent, body.detail);
  if (response.status === 403) throw new ApiError(403, STATUS_FORBIDDEN, { detail: body.detail, keySent });
  return body;
}

// GET /readyz (needs no key): {status: "ready" | "not ready", workers: {configured, ready, ...}},
// what the page shows where /status is not for its key.
export async function fetchReadiness(baseUrl) {
  return (await send(baseUrl, '/readyz')).body;
}

// POST /ws/session/create with the settings as a query string; resolves to the server's answer
// ({session_id, config, ...}) or rejects with an ApiError (the server's `detail`).
export async function createSession(baseUrl, settings) {
  const query = new URLSearchParams(settings);
  const body = await call(baseUrl, `/ws/session/create?${query}`, 'Creating the session', { method: 'POST' });
  if (!body.session_id) throw new Error('Creating the session failed: the answer has no session_id');
  return body;
}

// GET /ws/session/{id}: the session's state, or an ApiError (404: "Session <id> not found").
export async function getSession(baseUrl, sessionId) {
  try {
    return await call(baseUrl, `/ws/session/${encodeURIComponent(sessionId)}`, 'Looking up the session');
  } catch (e) {
    if (e.status === 404) throw new ApiError(404, `Session ${sessionId} not found`, { detail: e.detail, keySent: e.keySent });
    throw e;
  }
}

// Opens /ws/reconstruct/{id}; resolves to a SessionSocket once the server's "connected" arrives.
// handlers: onProgress(msg), onResult(msg) for "complete" and "delta", onError(msg) for errors
// that answer no upload (a failed generate, a takeover), onClose(event), onOther(msg).
// Rejects with an ApiError for a missing or refused key (401) and an unknown session (404): the
// session is looked up over HTTP first, because a browser shows a refused WebSocket upgrade only
// as a failed connection (close 1006) and prints the failed URL, token included, to its console.
export async function openSession(baseUrl, sessionId, handlers) {
  await getSession(baseUrl, sessionId);
  try {
    return await openSocket(baseUrl, sessionId, handlers);
  } catch (e) {
    // Refused before any message (the key was revoked since the lookup, say): ask over HTTP why.
    if (e.beforeAnyMessage) await checkKey(baseUrl);
    throw e;
  }
}

function openSocket(baseUrl, sessionId, handlers) {
  const url = `${baseUrl.replace(/^http/i, 'ws')}/ws/reconstruct/${encodeURIComponent(sessionId)}`;
  const key = getApiKey(baseUrl);
  return new Promise((resolve, reject) => {
    // The token goes in the URL only; `url`, which messages show, has none.
    const ws = new WebSocket(key ? `${url}?token=${encodeURIComponent(key)}` : url);
    let session = null;
    let gotMessage = false;
    ws.onmessage = (event) => {
      gotMessage = true;
      let msg;
      try { msg = JSON.parse(event.data); } catch { handlers.onOther({ type: 'non-JSON' }); return; }
      if (session) { session.dispatch(msg); return; }
      if (msg.type === 'connected') {
        session = new SessionSocket(ws, msg, sessionId, handlers);
        resolve(session);
      } else {
        const text = msg.message || `unexpected first message "${msg.type}"`;
        reject(/ not found$/.test(text) ? new ApiError(404, text, { keySent: !!key }) : new Error(text));
        ws.close();
      }
    };
    ws.onclose = (event) => {
      if (!session) {
        const e = new Error(`Cannot connect to ${url} (WebSocket closed before "connected", code ${event.code})`);
        e.beforeAnyMessage = !gotMessage;
        reject(e);
        return;
      }
      session.closed(event);
    };
  });
}

export class SessionSocket {
  constructor(ws, connected, sessionId, handlers) {
    this.ws = ws;
    this.id = connected.session_id || sessionId;
    this.imageCount = connected.image_count || 0;
    this.maxImages = connected.max_images || 0;
    this.handlers = handlers;
    this.isOpen = true;
    this.uploadReply = null; // resolves the upload in flight with its ack or error
  }

  // Sends one image as a binary frame (raw bytes, no base64) and resolves to the server's reply:
  // the ack, an error, or {type: 'closed'} when the socket closed first. One upload at a time:
  // the server answers in order, and the page sends no upload while a reconstruction runs, so
  // the next ack or error is this upload's.
  sendImage(bytes) {
    if (!this.isOpen) return Promise.resolve({ type: 'closed' });
    return new Promise((resolve) => {
      this.uploadReply = resolve;
      this.ws.send(bytes);
    });
  }

  // A reconstruction of every stored image; the result comes as "delta" when incremental.
  generate(incremental) { this.ws.send(JSON.stringify({ type: 'generate', incremental })); }

  finalize() { this.ws.send(JSON.stringify({ type: 'finalize' })); }

  close() {
    this.isOpen = false;
    this.ws.close();
  }

  dispatch(msg) {
    switch (msg.type) {
      case 'ack':
      case 'error':
        if (msg.type === 'ack') this.imageCount = msg.image_count;
        if (this.uploadReply) {
          const reply = this.uploadReply;
          this.uploadReply = null;
          reply(msg);
        } else if (msg.type === 'error') {
          this.handlers.onError(msg);
        }
        return;
      case 'progress':
        this.handlers.onProgress(msg);
        return;
      case 'complete':
      case 'delta':
        this.handlers.onResult(msg);
        return;
      default:
        this.handlers.onOther(msg);
    }
  }

  closed(event) {
    this.isOpen = false;
    if (this.uploadReply) {
      const reply = this.uploadReply;
      this.uploadReply = null;
      reply({ type: 'closed' });
    }
    this.handlers.onClose(event);
  }
}

// The result's GLB bytes. Uint8Array.fromBase64 where the browser has it; otherwise the browser's
// own decoder through a data: URL, which is much faster than atob on a 30 MB string.
export async function resultGlb(msg) {
  const b64 = msg.glb_base64 || '';
  if (Uint8Array.fromBase64) return Uint8Array.fromBase64(b64).buffer;
  const response = await fetch(`data:model/gltf-binary;base64,${b64}`);
  return response.arrayBuffer();
}
