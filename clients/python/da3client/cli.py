"""``da3-client``: photos (or a video's frames) in, a GLB point cloud out (docs/clients.md).

Exit status: 0 success; 1 a local failure after the start (the output could not be written) or a
bug; 2 a bad command line or local input (missing file, unreadable video, bad cameras file);
3 connection (server unreachable, connection lost); 4 input refused by the server (an image, a
parameter, an unknown session id); 5 server-side failure (the reconstruction failed, the server
is at capacity); 130 interrupted.
"""
import argparse
import asyncio
import json
import os
import sys
import time

from . import __version__
from .client import AsyncClient
from .errors import Da3Error
from .progress import Display
from .protocol import PROCESS_RES_METHODS, PROTOCOLS

EXIT_OK, EXIT_LOCAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
PROG = "da3-client"


class UsageError(Exception):
    """A problem with the command line or the local files it names (exit 2)."""


def build_parser():
    p = argparse.ArgumentParser(
        prog=PROG, description="Reconstruct a 3D point cloud (GLB) from photos or a video with a da3-server.",
        epilog="Exit status: 0 ok, 2 usage, 3 connection, 4 input refused by the server, 5 server-side failure.")
    p.add_argument("--base-url", default="http://127.0.0.1:8000",
                   help="the server (default http://127.0.0.1:8000; https://, ws://, wss:// work too)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--images", nargs="+", metavar="FILE", help="image files (JPEG/PNG), the views of one scene")
    src.add_argument("--video", metavar="FILE", help="a video: --num-frames frames spread evenly over it are sent")
    p.add_argument("--num-frames", type=int, default=10, metavar="N", help="frames taken from --video (default 10)")
    p.add_argument("--output", default="output.glb", metavar="FILE", help="where the GLB goes (default output.glb)")
    p.add_argument("--json", metavar="FILE", help="also write the result's metadata (cameras, counts, timing) as JSON")
    p.add_argument("--incremental", action="store_true",
                   help="ask for an incremental reconstruction (the server answers a delta, written to --output)")
    p.add_argument("--finalize", action="store_true",
                   help="finalize instead of generate: the final reconstruction; the session becomes completed")
    p.add_argument("--session", metavar="ID",
                   help="reconnect to this existing session and continue: the images given are added to it")
    p.add_argument("--delete-session", action="store_true", help="delete the session on the server at the end")
    p.add_argument("--binary", action="store_true", help="send images as raw binary frames (no base64)")
    p.add_argument("--cameras", metavar="FILE",
                   help='known cameras, JSON {"extrinsics": [N x 4x4 or 3x4 world-to-camera], '
                        '"intrinsics": [N x 3x3]}, one per image in order (the file da3-infer --cameras reads)')
    g = p.add_argument_group("session settings (for a new session; a resumed one keeps its own)")
    g.add_argument("--max-images", type=int, metavar="N", help="most images the session takes (server default 100)")
    g.add_argument("--process-res", type=int, metavar="N", help="processing resolution (server default 504)")
    g.add_argument("--process-res-method", metavar="M",
                   help=f"resize rule: {', '.join(PROCESS_RES_METHODS)} (server default upper_bound_resize)")
    g.add_argument("--num-max-points", type=int, metavar="N", help="most points in the cloud")
    g.add_argument("--conf-thresh-percentile", type=float, metavar="P",
                   help="drop roughly the lowest P%% of points by confidence (server default 10)")
    g.add_argument("--no-cameras", action="store_true", help="leave the camera frustums out of the GLB")
    p.add_argument("--protocol", choices=PROTOCOLS, default="v1",
                   help="v1: HTTP create + /ws/reconstruct/{id} (default; every server); v2: one /ws/reconstruct socket")
    p.add_argument("--api-key", default=os.environ.get("DA3_API_KEY"), metavar="KEY",
                   help="sent as 'Authorization: Bearer KEY' (default $DA3_API_KEY; servers without keys ignore it)")
    p.add_argument("--quiet", action="store_true", help="print errors only")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def session_params(args):
    """The session settings given on the command line (None: the server's default)."""
    return {"max_images": args.max_images, "process_res": args.process_res,
            "process_res_method": args.process_res_method, "num_max_points": args.num_max_points,
            "conf_thresh_percentile": args.conf_thresh_percentile,
            "show_cameras": False if args.no_cameras else None}


def check_args(args):
    """Checks what can be checked before the server is contacted; raises UsageError."""
    if not args.images and not args.video and not args.session:
        raise UsageError("give --images or --video (or --session ID to continue a session)")
    if args.incremental and args.finalize:
        raise UsageError("--incremental and --finalize exclude each other (finalize is the final, whole result)")
    if args.binary and args.cameras:
        raise UsageError("--binary frames carry no camera: send images with --cameras as JSON (without --binary)")
    if args.num_frames < 1:
        raise UsageError("--num-frames must be at least 1")
    if args.session:
        given = [f"--{k.replace('_', '-')}" for k, v in session_params(args).items() if v is not None]
        if given:
            raise UsageError(f"{', '.join(given)} set a new session's settings; a resumed session (--session) keeps its own")
    for path in args.images or []:
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            raise UsageError(f"cannot read the image {path}")
    if args.video and not os.path.isfile(args.video):
        raise UsageError(f"cannot read the video {args.video}")
    for flag, path in (("--output", args.output), ("--json", args.json)):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and not os.path.isdir(folder):
            raise UsageError(f"{flag} {path}: the folder {folder} does not exist")


def load_cameras(path, count):
    """One camera dict per image from a da3-infer --cameras file; raises UsageError."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read the cameras file {path}: {e}") from None
    ext = doc.get("extrinsics") if isinstance(doc, dict) else None
    intr = doc.get("intrinsics") if isinstance(doc, dict) else None
    if not isinstance(ext, list) or not isinstance(intr, list) or len(ext) != count or len(intr) != count:
        raise UsageError(f'{path}: needs "extrinsics" and "intrinsics" arrays with one entry per image ({count})')
    return [{"extrinsics": e, "intrinsics": k} for e, k in zip(ext, intr)]


def collect_images(args):
    """The images to send, as a list of (display name, source) where source is a path or bytes."""
    if args.images:
        return [(os.path.basename(p), p) for p in args.images]
    if args.video:
        from .video import VideoError, sample_frames
        try:
            return sample_frames(args.video, args.num_frames)
        except VideoError as e:
            raise UsageError(str(e)) from None
    return []


def human_size(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0


async def run(args, display, state):
    """One whole run; raises Da3Error / UsageError / OSError. ``state`` receives the client (for
    the clean-up in main) as soon as it exists."""
    images = collect_images(args)
    cameras = load_cameras(args.cameras, len(images)) if args.cameras else None
    if args.video and len(images) < args.num_frames:
        display.note(f"the video has {len(images)} frames: sending all of them")
    t0 = time.monotonic()
    client = AsyncClient(args.base_url, protocol=args.protocol, api_key=args.api_key)
    state["client"] = client
    if args.session:
        info = await client.connect(args.session)
        display.note(f"session {info.session_id} resumed: it holds {info.image_count} image(s) of {info.max_images}")
    else:
        await client.create(**session_params(args))
        info = await client.connect()
        display.note(f"session {info.session_id} created (up to {info.max_images} images)")

    if images:
        display.upload_start(len(images))
        for i, (name, source) in enumerate(images, 1):
            ack = await client.upload(source, filename=None if args.binary else name, binary=args.binary,
                                      cameras=cameras[i - 1] if cameras else None)
            display.upload_done(i, len(images), name, ack)
        display.close()

    what = "finalizing" if args.finalize else "generating"
    display.job_start(what)
    t_job = time.monotonic()
    if args.finalize:
        result = await client.finalize(progress=display.job_progress)
    else:
        result = await client.generate(incremental=args.incremental, progress=display.job_progress)
    job_s = time.monotonic() - t_job
    display.job_done(result)

    result.save(args.output)
    if args.json:
        result.save_metadata(args.json)
    model = result.metadata.get("model") or {}
    if model.get("trained") is False:
        display.note(f"note: {model.get('warning') or 'the server runs an untrained model'}")
    if display.mode != "quiet":
        points = result.num_points
        print(f"{points if points is not None else '?'} points, {human_size(len(result.glb))} GLB -> {args.output}, "
              f"{result.num_frames} frames, {time.monotonic() - t0:.1f} s ({what} {job_s:.1f} s; "
              f"session {client.session_id}{', ' + result.kind if result.kind != 'complete' else ''})", flush=True)


async def cleanup(args, display, state, failed):
    """--delete-session at the end (also after a failure, as the reference does); otherwise,
    after a failure, says how to continue. Returns an exit code for a failed delete, else None."""
    client = state.get("client")
    if client is None:
        return None
    code = None
    sid = client.session_id
    try:
        if args.delete_session and sid:
            await client.delete(sid)
            display.note(f"session {sid} deleted")
        elif failed and sid:
            print(f"{PROG}: session {sid} is kept on the server; continue with --session {sid}", file=sys.stderr)
    except Da3Error as e:
        print(f"{PROG}: error: deleting session {sid}: {e.message}", file=sys.stderr)
        code = e.exit_code
    finally:
        await client.close()
    return code


def main(argv=None):
    """The command line; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    display = Display("quiet" if args.quiet else "auto")
    try:
        check_args(args)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_USAGE

    async def whole():
        state, code, failed = {}, EXIT_OK, True
        try:
            await run(args, display, state)
            failed = False
        except Da3Error as e:
            display.close()
            print(f"{PROG}: error: {e.message}", file=sys.stderr)
            code = e.exit_code
        except UsageError as e:
            display.close()
            print(f"{PROG}: error: {e}", file=sys.stderr)
            code = EXIT_USAGE
        except OSError as e:
            display.close()
            print(f"{PROG}: error: {e}", file=sys.stderr)
            code = EXIT_LOCAL
        finally:
            cleanup_code = await cleanup(args, display, state, failed)
        return code if code != EXIT_OK else (cleanup_code or EXIT_OK)

    try:
        return asyncio.run(whole())
    except KeyboardInterrupt:
        display.close()
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
