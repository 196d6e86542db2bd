"""The client library: :class:`AsyncClient` (asyncio) and :class:`Client` (the same calls,
blocking, for scripts that do not use asyncio).

A session's life, in either flavour::

    client.create(process_res=504)        # v1: HTTP create; v2: opens the socket, sends init
    client.connect()                      # v1: opens the socket (v2: already open)
    client.upload("a.jpg")                # -> Ack; once per image
    result = client.generate()            # -> Result (progress to a callback, or iterate)
    result.save("scene.glb")
    client.delete()                       # optional: forget the session on the server

``connect(session_id)`` attaches to an existing session instead (reconnect and continue).
Errors are raised as the classes of :mod:`da3client.errors`, with the server's own text.

One client holds one socket and runs one request at a time: don't share a client between
tasks or threads without a lock of your own.
"""
import asyncio
import collections
import json
import threading
import urllib.error
import urllib.parse
import urllib.request

import websockets

from . import protocol as wire
from .errors import ConnectionFailed, Da3Error, InputRefused, ServerFailed, error_from_http, error_from_server
from .protocol import Ack, Progress, Result, SessionInfo

__all__ = ["AsyncClient", "Client"]

DEFAULT_BASE_URL = "http://127.0.0.1:8000"

# Server messages that may arrive at any time and answer nothing the client is waiting for.
_JOB_TYPES = ("progress", "complete", "delta")


class AsyncClient:
    """An asyncio client for one session at a time.

    ``base_url``: the server, ``http://host:port`` (or https, ws, wss; a path prefix is kept).
    ``protocol``: ``"v1"`` (HTTP create + ``/ws/reconstruct/{id}``, every server of this
    protocol) or ``"v2"`` (one ``/ws/reconstruct`` socket, ``init`` first).
    ``api_key``: sent as ``Authorization: Bearer <key>`` on every HTTP request and on the
    WebSocket upgrade (servers without keys ignore it).
    ``reply_timeout``: seconds to wait for the handshake and for each ack or pong; a job's
    result is waited for as long as the connection lives (``job_timeout`` to bound it).
    ``ping_interval``: seconds between the client's own keep-alive pings, None (the default)
    for none: da3-server pings idle sockets itself, and a server that blocks while it computes
    (the reference one) could not answer them in time.

    Messages are not size-capped: results are tens of MB of base64.
    """

    def __init__(self, base_url=DEFAULT_BASE_URL, *, protocol="v1", api_key=None, reply_timeout=120.0,
                 job_timeout=None, open_timeout=30.0, ping_interval=None):
        if protocol not in wire.PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(wire.PROTOCOLS)}, not {protocol!r}")
        self.http_url = wire.http_base(base_url)
        self.ws_url = wire.ws_base(base_url)
        self.protocol = protocol
        self.api_key = api_key
        self.reply_timeout = reply_timeout
        self.job_timeout = job_timeout
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.session_id = None
        self.session = None         # SessionInfo of the attached socket, None while detached
        self._ws = None
        # Job messages read while waiting for something else (an ack), kept for the next
        # reader of job events, in order: a server may start a job by itself (v2's
        # auto_generate_after) and its progress then interleaves with acks.
        self._stashed = collections.deque()

    # ---- context manager ------------------------------------------------------------------

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    # ---- HTTP -----------------------------------------------------------------------------

    def _headers(self):
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _http_blocking(self, method, path):
        """One HTTP request; returns the parsed JSON body. Raises ConnectionFailed when the
        server cannot be reached, InputRefused / ServerFailed for an HTTP error status."""
        url = self.http_url + path
        req = urllib.request.Request(url, method=method, headers=self._headers(), data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=self.reply_timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                detail = json.loads(body).get("detail", body.decode(errors="replace"))
            except (ValueError, AttributeError):
                detail = body.decode(errors="replace").strip() or e.reason
            raise error_from_http(e.code, detail) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ConnectionFailed(f"cannot reach {self.http_url}: {reason}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise ServerFailed(f"{method} {path}: the server's answer is not JSON: {raw[:200]!r}") from None

    async def _http(self, method, path):
        return await asyncio.to_thread(self._http_blocking, method, path)

    async def info(self, session_id=None):
        """The server's view of a session (``GET /ws/session/{id}``): status, image_count,
        max_images, error_message."""
        return await self._http("GET", f"/ws/session/{urllib.parse.quote(self._sid(session_id))}")

    async def delete(self, session_id=None):
        """Deletes a session on the server (``DELETE /ws/session/{id}``): its images and any job
        in flight are gone. Deleting the attached session also detaches this client."""
        sid = self._sid(session_id)
        await self._http("DELETE", f"/ws/session/{urllib.parse.quote(sid)}")
        if sid == self.session_id:
            await self.close()
            self.session_id = None

    def _sid(self, session_id):
        sid = session_id or self.session_id
        if not sid:
            raise ValueError("no session: create() or connect() one first, or pass session_id")
        return sid

    # ---- session set-up -------------------------------------------------------------------

    async def create(self, **params):
        """Creates a session with the given parameters (``max_images``, ``process_res``,
        ``process_res_method``, ``conf_thresh_percentile``, ``num_max_points``, ``show_cameras``;
        v2 also ``auto_generate_after``; None or absent means the server's default) and returns
        its id. v1 creates it over HTTP (the socket opens at :meth:`connect`); v2 opens the
        socket and sends ``init``, so the client is attached when this returns. A bad value is
        InputRefused with the server's reason."""
        params = wire.check_session_params(params, self.protocol)
        await self.close()
        if self.protocol == "v1":
            query = wire.create_query(params)
            answer = await self._http("POST", "/ws/session/create" + ("?" + query if query else ""))
            if not isinstance(answer, dict) or not isinstance(answer.get("session_id"), str):
                raise ServerFailed(f"the create answer has no session_id: {answer}")
            self.session_id = answer["session_id"]
        else:
            await self._open(self.ws_url + "/ws/reconstruct", wire.init_message(params))
        return self.session_id

    async def connect(self, session_id=None):
        """Attaches the socket to ``session_id`` (default: the one :meth:`create` made) and returns
        its :class:`SessionInfo` (``image_count`` counts the images it already holds). A socket
        already attached to that session is kept. An unknown id is InputRefused."""
        sid = session_id or self.session_id
        if not sid:
            raise ValueError("connect() needs a session id (or create() first)")
        if self._ws is not None and self.session is not None and self.session.session_id == sid:
            return self.session
        await self.close()
        if self.protocol == "v1":
            await self._open(f"{self.ws_url}/ws/reconstruct/{urllib.parse.quote(sid)}", None)
        else:
            await self._open(self.ws_url + "/ws/reconstruct", wire.init_message(session_id=sid))
        return self.session

    async def _open(self, url, first_message):
        """Opens the socket, sends ``first_message`` (v2's init) if any, and reads the server's
        handshake answer (``connected`` / ``session_created``) into ``self.session``."""
        try:
            self._ws = await websockets.connect(
                url, max_size=None, compression=None, ping_interval=self.ping_interval,
                open_timeout=self.open_timeout, close_timeout=5, extra_headers=self._headers())
        except websockets.InvalidStatusCode as e:
            # 401/403: the credentials (api_key) were refused, like an HTTP 4xx; 5xx: the server is
            # at capacity or failing; anything else (404): there is no such WebSocket here.
            status = e.status_code
            hint = ""
            if status == 401:
                hint = " (an API key is needed, or this one is not valid)"
            elif self.protocol == "v2" and status in (403, 404):
                hint = " (does this server speak protocol v2? try protocol v1)"
            cls = InputRefused if status in (401, 403) else ServerFailed if status >= 500 else ConnectionFailed
            raise cls(f"the server refused the WebSocket {url} with HTTP {status}{hint}", status=status) from None
        except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as e:
            raise ConnectionFailed(f"cannot connect to {url}: {e or type(e).__name__}") from None
        self._stashed.clear()
        try:
            if first_message is not None:
                await self._send(first_message)
            msg = await self._recv(self.reply_timeout)
            while msg["type"] not in ("connected", "session_created"):
                if msg["type"] == "error":
                    raise error_from_server(msg.get("message", ""))
                if msg["type"] not in ("pong",):
                    raise ServerFailed(f"the server's first message is not connected/session_created: {msg}")
                msg = await self._recv(self.reply_timeout)
        except Da3Error:
            await self.close()
            raise
        self.session = SessionInfo.from_message(msg)
        self.session_id = self.session.session_id

    async def close(self):
        """Closes the socket (the session stays on the server: connect() again to go on)."""
        ws, self._ws, self.session = self._ws, None, None
        if ws is not None:
            try:
                await ws.close()
            except (OSError, websockets.WebSocketException):
                pass

    # ---- socket I/O -----------------------------------------------------------------------

    def _socket(self):
        if self._ws is None:
            raise ValueError("not connected: call connect() (or create() with protocol v2) first")
        return self._ws

    async def _send(self, data):
        ws = self._socket()
        try:
            await ws.send(data)
        except websockets.ConnectionClosed:
            # The server may have said why before closing (an oversized message gets "Message
            # too large" then close 1009): that reason, already received, is the error to
            # raise. _recv raises by itself once the messages received before the close are read.
            while True:
                msg = await self._recv(1.0)
                if msg["type"] == "error":
                    raise error_from_server(msg.get("message", "")) from None

    async def _recv(self, timeout):
        """The next server message as a dict. A close becomes an error: the server's reason if
        it sent one (read first, as a message), else ConnectionFailed with the close code."""
        ws = self._socket()
        try:
            raw = await asyncio.wait_for(ws.recv(), timeout)
        except asyncio.TimeoutError:
            raise ConnectionFailed(f"no answer from the server within {timeout:g} s") from None
        except websockets.ConnectionClosed as e:
            self._ws, self.session = None, None
            code = e.rcvd.code if e.rcvd else (e.sent.code if e.sent else 1006)
            reason = (e.rcvd.reason if e.rcvd else "") or ""
            server_closed_first = e.rcvd is not None and (e.sent is None or e.rcvd_then_sent)
            said = f": {reason}" if reason else ""
            if code == 1009 and server_closed_first:
                raise InputRefused(f"message too large for the server (close code 1009){said}") from None
            raise ConnectionFailed(f"the server closed the connection (code {code}{said})") from None
        return wire.parse_message(raw)

    async def _reply(self, wanted):
        """Reads until a message of a type in ``wanted`` (returned) or an error (raised); job
        messages read meanwhile are stashed for the next job reader, pongs and unknown
        informational messages skipped."""
        while True:
            msg = await self._recv(self.reply_timeout)
            t = msg["type"]
            if t in wanted:
                return msg
            if t == "error":
                raise error_from_server(msg.get("message", ""))
            if t in _JOB_TYPES:
                self._stashed.append(msg)

    # ---- requests -------------------------------------------------------------------------

    async def upload(self, image, *, filename=None, binary=False, cameras=None):
        """Sends one image and returns its :class:`Ack`.

        ``image``: bytes (JPEG/PNG as stored in a file) or a file path. ``filename``: display
        name for the server (default: the path's base name). ``binary=True`` sends the raw bytes
        as one binary frame (a third less to send; no filename, no camera). ``cameras``: a dict
        ``{"extrinsics": 4x4 or 3x4 world-to-camera, "intrinsics": 3x3}`` for known cameras.
        A refused image is InputRefused with the server's reason; nothing is stored then.
        """
        data, default_name = wire.read_image(image)
        if binary:
            if cameras is not None:
                raise ValueError("a binary frame carries no camera: send images with cameras as JSON (binary=False)")
            await self._send(data)
        else:
            await self._send(wire.image_message(data, filename if filename is not None else default_name,
                                                           cameras))
        return Ack.from_message(await self._reply(("ack",)))

    async def ping(self):
        """Sends a protocol ping and waits for its pong."""
        await self._send(wire.ping_message())
        await self._reply(("pong",))

    def generate_events(self, *, incremental=False):
        """Asks for a reconstruction of every image stored so far; an async iterator of
        :class:`Progress` items ending with the :class:`Result` (``kind`` ``"delta"`` when
        ``incremental``, else ``"complete"``). A failure raises (ServerFailed etc.) instead.
        Iterate to the end: a result left unread would be taken for the next request's."""
        return self._job_events(wire.generate_message(incremental))

    def finalize_events(self):
        """Like :meth:`generate_events` for ``finalize``: the final reconstruction, after which the
        server marks the session ``completed``."""
        return self._job_events(wire.finalize_message())

    def result_events(self):
        """The events of a job the server started without a request (v2 ``auto_generate_after``):
        like :meth:`generate_events` but sends nothing, and includes what arrived during uploads."""
        return self._job_events(None)

    async def generate(self, *, incremental=False, progress=None):
        """Runs :meth:`generate_events` to its end and returns the :class:`Result`;
        ``progress(Progress)`` is called for each progress message."""
        return await self._drain(self.generate_events(incremental=incremental), progress)

    async def finalize(self, *, progress=None):
        """Runs :meth:`finalize_events` to its end and returns the :class:`Result`."""
        return await self._drain(self.finalize_events(), progress)

    async def wait_result(self, *, progress=None):
        """Runs :meth:`result_events` to its end and returns the :class:`Result`."""
        return await self._drain(self.result_events(), progress)

    @staticmethod
    async def _drain(events, progress):
        async for event in events:
            if isinstance(event, Result):
                return event
            if progress is not None:
                progress(event)
        raise ServerFailed("the job ended without a result")

    async def _job_events(self, request):
        if request is not None:
            self._socket()
            await self._send(request)
        while True:
            msg = self._stashed.popleft() if self._stashed else await self._recv(self.job_timeout)
            t = msg["type"]
            if t == "progress":
                yield Progress.from_message(msg)
            elif t in ("complete", "delta"):
                yield Result.from_message(msg)
                return
            elif t == "error":
                raise error_from_server(msg.get("message", ""))
            # else: a pong or a message type this client does not know; neither ends the job


class _LoopThread:
    """An asyncio event loop running in a daemon thread, so that a blocking client's socket keeps
    answering the server's pings between calls."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="da3client-loop", daemon=True)
        self.thread.start()

    def run(self, coro):
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C in the caller: stop the coroutine too
            raise

    def stop(self):
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
        self.loop.close()


class Client:
    """The blocking twin of :class:`AsyncClient`: same arguments, same methods, results
    returned instead of awaited, ``*_events`` as plain iterators. Use it as a context manager
    (or call :meth:`close`): it owns a background thread running the socket."""

    def __init__(self, base_url=DEFAULT_BASE_URL, **options):
        self._async = AsyncClient(base_url, **options)
        self._runner = _LoopThread()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getattr__(self, name):
        # session_id, session, protocol, http_url ... read through to the async client
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._async, name)

    def _run(self, coro):
        return self._runner.run(coro)

    def create(self, **params):
        return self._run(self._async.create(**params))

    def connect(self, session_id=None):
        return self._run(self._async.connect(session_id))

    def upload(self, image, *, filename=None, binary=False, cameras=None):
        return self._run(self._async.upload(image, filename=filename, binary=binary, cameras=cameras))

    def ping(self):
        return self._run(self._async.ping())

    def info(self, session_id=None):
        return self._run(self._async.info(session_id))

    def delete(self, session_id=None):
        return self._run(self._async.delete(session_id))

    def generate_events(self, *, incremental=False):
        return self._iterate(self._async.generate_events(incremental=incremental))

    def finalize_events(self):
        return self._iterate(self._async.finalize_events())

    def result_events(self):
        return self._iterate(self._async.result_events())

    def generate(self, *, incremental=False, progress=None):
        return self._drain(self.generate_events(incremental=incremental), progress)

    def finalize(self, *, progress=None):
        return self._drain(self.finalize_events(), progress)

    def wait_result(self, *, progress=None):
        return self._drain(self.result_events(), progress)

    @staticmethod
    def _drain(events, progress):
        # The callback runs in the caller's thread, not in the socket's.
        for event in events:
            if isinstance(event, Result):
                return event
            if progress is not None:
                progress(event)
        raise ServerFailed("the job ended without a result")

    def _iterate(self, agen):
        try:
            while True:
                try:
                    item = self._run(agen.__anext__())
                except StopAsyncIteration:
                    return
                yield item
        finally:
            self._run(agen.aclose())

    def close(self):
        """Closes the socket and stops the background thread; the client cannot be used after."""
        if self._runner is not None:
            try:
                self._run(self._async.close())
            finally:
                self._runner.stop()
                self._runner = None
