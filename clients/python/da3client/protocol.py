"""The wire protocol, without any I/O: URLs, the messages a client sends, and the typed views of
what the server sends back (docs/protocol.md has every message).

Two protocol versions are spoken:

* ``v1`` (the reference backend's): ``POST /ws/session/create`` over HTTP, then
  ``WS /ws/reconstruct/{session_id}``, whose first message is ``connected``.
* ``v2``: one bare ``WS /ws/reconstruct``; the client's first message is ``init`` (with the
  session parameters, or with ``session_id`` to resume) and the server answers
  ``session_created``. No HTTP call is needed to start.

Everything after the handshake (image, generate, finalize, ping) is the same in both.
"""
import base64
import json
import os
import struct
import urllib.parse
from dataclasses import dataclass, field

from .errors import ServerFailed

PROTOCOLS = ("v1", "v2")

# Session parameters, as the server names them (HTTP create query / v2 init fields).
SESSION_PARAMS = ("max_images", "process_res", "process_res_method", "conf_thresh_percentile",
                  "num_max_points", "show_cameras")
# Only v2's init knows this one: the server generates by itself after every N-th image.
V2_ONLY_PARAMS = ("auto_generate_after",)

PROCESS_RES_METHODS = ("upper_bound_resize", "upper_bound_crop", "lower_bound_resize", "lower_bound_crop")


def http_base(base_url):
    """The HTTP(S) base URL, without a trailing slash, of a base URL given as http(s):// or
    ws(s):// (a path prefix, for a server behind a proxy, is kept)."""
    parts = urllib.parse.urlsplit(base_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base URL must be http://host:port (or https://, ws://, wss://), not {base_url!r}")
    return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def ws_base(base_url):
    """The ws(s):// base URL matching :func:`http_base`."""
    url = http_base(base_url)
    return "wss" + url[5:] if url.startswith("https") else "ws" + url[4:]


def check_session_params(params, protocol):
    """Returns the session parameters the server will be sent: the known names whose value is
    not None. Unknown names raise TypeError (a typo should not be silently dropped); the values
    themselves are left for the server to judge, so its limits are the only ones."""
    known = SESSION_PARAMS + (V2_ONLY_PARAMS if protocol == "v2" else ())
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise TypeError(f"unknown session parameter(s) for protocol {protocol}: {', '.join(unknown)}")
    return {k: v for k, v in params.items() if v is not None}


def create_query(params):
    """The query string of a v1 create: booleans as true/false (what the server and the
    reference both parse)."""
    def text(v):
        return ("true" if v else "false") if isinstance(v, bool) else str(v)
    return urllib.parse.urlencode({k: text(v) for k, v in params.items()})


def init_message(params=None, session_id=None):
    """A v2 ``init``: new session with ``params``, or resume of ``session_id``."""
    msg = {"type": "init"}
    if session_id is not None:
        msg["session_id"] = session_id
    msg.update(params or {})
    return json.dumps(msg)


def image_message(data, filename=None, cameras=None):
    """A JSON image message: ``data`` (bytes) base64-encoded; ``cameras`` is None or a dict
    with ``extrinsics`` (4x4 or 3x4 world-to-camera) and ``intrinsics`` (3x3)."""
    msg = {"type": "image", "data": base64.b64encode(data).decode("ascii")}
    if filename is not None:
        msg["filename"] = filename
    if cameras is not None:
        msg["extrinsics"] = cameras["extrinsics"]
        msg["intrinsics"] = cameras["intrinsics"]
    return json.dumps(msg)


def generate_message(incremental=False):
    return json.dumps({"type": "generate", "incremental": bool(incremental)})


def finalize_message():
    return json.dumps({"type": "finalize"})


def ping_message():
    return json.dumps({"type": "ping"})


def parse_message(raw):
    """A server message as a dict. The server sends only JSON objects as text; anything else
    means this is not a da3 server (or a broken one), which is a server-side failure."""
    if isinstance(raw, (bytes, bytearray)):
        raise ServerFailed(f"the server sent a binary frame ({len(raw)} bytes) where JSON was expected")
    try:
        msg = json.loads(raw)
    except ValueError:
        raise ServerFailed(f"the server sent something that is not JSON: {raw[:200]!r}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ServerFailed(f"the server sent a message without a type: {raw[:200]!r}")
    return msg


def read_image(image):
    """(bytes, default filename) of an image given as bytes or as a file path."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image), None
    path = os.fspath(image)
    with open(path, "rb") as f:
        return f.read(), os.path.basename(path)


@dataclass
class SessionInfo:
    """What the server says when a socket is attached to a session (v1 ``connected``, v2
    ``session_created``): its id, the images it already holds, its limit, and (v2) its config."""
    session_id: str
    image_count: int = 0
    max_images: int = 0
    config: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_message(cls, msg):
        if not isinstance(msg.get("session_id"), str):
            raise ServerFailed(f"the server's {msg.get('type')} message has no session_id: {msg}")
        return cls(session_id=msg["session_id"], image_count=int(msg.get("image_count") or 0),
                   max_images=int(msg.get("max_images") or 0), config=dict(msg.get("config") or {}), raw=msg)


@dataclass
class Ack:
    """An image acknowledged: the session now holds ``image_count`` images; ``image_path`` is the
    name the server stored it under; ``camera`` says a known camera came with it."""
    image_count: int
    image_path: str = ""
    filename: str = None
    camera: bool = False
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_message(cls, msg):
        return cls(image_count=int(msg.get("image_count") or 0), image_path=msg.get("image_path") or "",
                   filename=msg.get("filename"), camera=bool(msg.get("camera")), raw=msg)


@dataclass
class Progress:
    """One progress message of a running job: ``stage`` (loading_model, inference, exporting,
    finalizing), ``progress`` in [0, 1] (never going backwards within one job), ``message``."""
    stage: str
    progress: float
    message: str
    raw: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_message(cls, msg):
        try:
            value = float(msg.get("progress") or 0.0)
        except (TypeError, ValueError):
            value = 0.0
        return cls(stage=str(msg.get("stage") or ""), progress=min(max(value, 0.0), 1.0),
                   message=str(msg.get("message") or ""), raw=msg)


class Result:
    """A job's result (``complete``, or ``delta`` for an incremental generate).

    ``kind`` is the message type, ``glb`` the decoded GLB bytes, ``metadata`` the server's
    metadata dict (cameras, counts, timing; docs/protocol.md), ``image_count`` the images it
    was made from.
    """

    def __init__(self, kind, image_count, glb, metadata):
        self.kind = kind
        self.image_count = image_count
        self.glb = glb
        self.metadata = metadata

    @classmethod
    def from_message(cls, msg):
        try:
            glb = base64.b64decode(msg.get("glb_base64") or "", validate=True)
        except ValueError as e:
            raise ServerFailed(f"the server's {msg['type']} message has an invalid glb_base64: {e}") from None
        metadata = msg.get("metadata")
        return cls(msg["type"], int(msg.get("image_count") or 0), glb, metadata if isinstance(metadata, dict) else {})

    @property
    def num_points(self):
        """The points in the cloud: the metadata's count, else (a server that does not send it,
        like the reference) the POINTS primitive's vertex count read from the GLB; None if neither."""
        n = self.metadata.get("num_points")
        return n if isinstance(n, int) else glb_point_count(self.glb)

    @property
    def num_frames(self):
        return self.metadata.get("num_frames", self.image_count)

    @property
    def session_id(self):
        return self.metadata.get("session_id")

    @property
    def extrinsics(self):
        """N x 3 x 4 world-to-camera matrices (OpenCV axes), or None."""
        return self.metadata.get("extrinsics")

    @property
    def intrinsics(self):
        """N x 3 x 3 in pixels of the processed image, or None."""
        return self.metadata.get("intrinsics")

    def save(self, path):
        """Writes the GLB to ``path`` (replacing it only once the whole file is written)."""
        write_atomically(path, self.glb)

    def save_metadata(self, path):
        """Writes the metadata as indented JSON to ``path``."""
        write_atomically(path, (json.dumps(self.metadata, indent=2) + "\n").encode())

    def __repr__(self):
        return (f"Result(kind={self.kind!r}, image_count={self.image_count}, glb={len(self.glb)} bytes, "
                f"num_points={self.num_points})")


def glb_point_count(glb):
    """Vertices of the POINTS primitives of a GLB (glTF 2.0 binary), or None when it cannot be read."""
    try:
        magic, version, _ = struct.unpack_from("<III", glb, 0)
        length, kind = struct.unpack_from("<II", glb, 12)
        if magic != 0x46546C67 or version != 2 or kind != 0x4E4F534A:  # "glTF", chunk "JSON"
            return None
        gltf = json.loads(glb[20:20 + length])
        return sum(gltf["accessors"][prim["attributes"]["POSITION"]]["count"]
                   for mesh in gltf.get("meshes", []) for prim in mesh.get("primitives", [])
                   if prim.get("mode") == 0)
    except (struct.error, ValueError, KeyError, IndexError, TypeError):
        return None


def write_atomically(path, data):
    """Writes ``data`` to ``path`` through a temporary file in the same folder, so a reader (or a
    crash) never sees half a file."""
    path = os.fspath(path)
    tmp = f"{path}.part{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
