"""The exceptions the library raises, one class per kind of failure.

Every failure the client can meet falls in one of three kinds, and each kind has its own
process exit code in the command-line client, so a script can tell them apart:

    ConnectionFailed (3)  the server could not be reached, or the connection was lost
    InputRefused     (4)  the server refused what was sent: an image, a parameter, a session id
    ServerFailed     (5)  the server took the request but could not carry it out

``message`` is the server's own text where there is one (its ``{"type":"error"}`` message or an
HTTP ``detail``), unchanged, so it can be shown to the user as it is.
"""


class Da3Error(Exception):
    """Base class of every error the library raises on purpose.

    Attributes: ``message`` (the text to show), ``exit_code`` (the CLI's exit status for this
    kind), ``status`` (the HTTP status when the failure came from an HTTP answer, else None).
    """

    exit_code = 1

    def __init__(self, message, *, status=None):
        super().__init__(message)
        self.message = message
        self.status = status


class ConnectionFailed(Da3Error):
    """The server could not be reached, refused the WebSocket upgrade, did not answer in time,
    or closed the connection without saying why (or because another client took the session over)."""

    exit_code = 3


class InputRefused(Da3Error):
    """The server refused the client's input: an image it cannot decode or that goes past a
    limit, a bad session parameter (HTTP 4xx), an unknown session id, a message it cannot parse."""

    exit_code = 4


class ServerFailed(Da3Error):
    """The server accepted the request but failed it: a reconstruction error, a full job queue,
    a session deleted or expired on the server, capacity (HTTP 5xx), or an answer this client
    does not understand."""

    exit_code = 5


# What the server's {"type":"error"} texts start with, and the kind each one is. Texts not
# listed are treated as server-side failures: the client cannot have caused what it cannot name.
_REFUSED_PREFIXES = (
    "Failed to process image",        # bad image, image limit, bad camera
    "Invalid message format",         # JSON the server could not parse (or nested too deep)
    "Unknown message type",
    "Message too large",              # past --max-message-mb (then close code 1009)
    "No images in session",
    "No session initialized",         # v2: a request before init
)
_CONNECTION_PREFIXES = (
    "Another connection took over this session",  # this socket is gone, the session is not
)
# v2's init answers "Failed to create session: <why>" / "Failed to resume session: <why>": the
# why is about the client's settings or id, except when the server is at capacity.
_INIT_PREFIXES = ("Failed to create session: ", "Failed to resume session: ")
_CAPACITY_PREFIXES = ("Maximum number of sessions",)


def error_from_server(message):
    """Returns the exception for a server ``{"type":"error","message":...}`` text.

    ``Session <id> not found`` (the id the client gave is unknown) and a refused v2 ``init``
    are refused input, unless the server is at capacity; a text naming a lost connection is
    ConnectionFailed; everything else (``Failed to generate point cloud: ...``, ``Session
    deleted``, ...) is ServerFailed.
    """
    text = str(message)
    if text.startswith(_INIT_PREFIXES):
        why = text.split(": ", 1)[1]
        return ServerFailed(text) if why.startswith(_CAPACITY_PREFIXES) else InputRefused(text)
    if text.startswith(_REFUSED_PREFIXES) or (text.startswith("Session ") and text.endswith(" not found")):
        return InputRefused(text)
    if text.startswith(_CONNECTION_PREFIXES):
        return ConnectionFailed(text)
    return ServerFailed(text)


def error_from_http(status, detail):
    """Returns the exception for an HTTP error answer: 4xx is refused input, anything else
    (5xx, or a status this client does not expect) a server-side failure."""
    text = f"HTTP {status}: {detail}"
    if 400 <= status < 500:
        return InputRefused(text, status=status)
    return ServerFailed(text, status=status)
