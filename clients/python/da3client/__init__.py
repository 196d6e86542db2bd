"""da3client: the Python client of da3-server (protocol v1 and v2), as a library and as the
``da3-client`` command (docs/clients.md).

    from da3client import Client
    with Client("http://127.0.0.1:8000") as c:
        c.create(process_res=504)
        c.connect()
        for path in ["a.jpg", "b.jpg"]:
            c.upload(path)
        c.generate(progress=lambda p: print(p.stage, p.message)).save("scene.glb")

Needs Python 3.11 and websockets 10.4 or later (Debian 12's python3-websockets); reading videos
needs OpenCV (python3-opencv), the command's progress bars tqdm (python3-tqdm).
"""
__version__ = "0.1.0"

from .client import AsyncClient, Client  # noqa: E402
from .errors import ConnectionFailed, Da3Error, InputRefused, ServerFailed  # noqa: E402
from .protocol import Ack, Progress, Result, SessionInfo  # noqa: E402

__all__ = ["AsyncClient", "Client", "Da3Error", "ConnectionFailed", "InputRefused", "ServerFailed",
           "Ack", "Progress", "Result", "SessionInfo", "__version__"]
