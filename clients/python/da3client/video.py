"""Frames from a video, for clients that reconstruct a scene from a walk-through clip.

Needs OpenCV (Debian: ``python3-opencv``); it is imported only when a video is read, so the rest
of the client works without it. Frames are encoded to JPEG in memory: no temporary files.
"""
import os


class VideoError(Exception):
    """The video cannot be used: OpenCV is missing, the file does not open, or it has no frames."""


def _cv2():
    # FFmpeg's own warnings would interleave with the client's output; the client reports what
    # matters itself (a video it cannot read). Honoured when cv2 is first imported; a caller's
    # own setting wins.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    try:
        import cv2
    except ImportError:
        raise VideoError("reading a video needs OpenCV: apt-get install python3-opencv") from None
    return cv2


def pick_indices(total, count):
    """``count`` frame indices spread evenly over ``total`` frames: the middle frame of each of
    ``count`` equal stretches (so neither the first frame nor the possibly-short last one is
    favoured). Every frame once when ``count >= total``. Strictly increasing."""
    if total <= 0 or count <= 0:
        return []
    if count >= total:
        return list(range(total))
    return [int((i + 0.5) * total / count) for i in range(count)]


def sample_frames(path, count, *, quality=95):
    """Reads ``count`` frames spread evenly over the video at ``path`` and returns them as a list
    of ``(name, jpeg_bytes)``, in video order; ``name`` is ``frame_<index>.jpg`` (the frame's index
    in the video). Fewer than ``count`` come back only when the video has fewer frames.

    The video is read from the start once, decoding only the chosen frames (``grab`` skips the
    others' conversion): frame-exact on every container, unlike seeking, which lands on key
    frames with some codecs. A frame count the container does not give, or gives wrong, is
    found by counting. Raises VideoError.
    """
    if count < 1:
        raise VideoError(f"the number of frames must be at least 1, not {count}")
    cv2 = _cv2()
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoError(f"cannot open the video {path}")
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()
    if total > 0:
        frames, complete = _read_frames(cv2, path, pick_indices(total, count), quality)
        if complete:
            return frames
    # No frame count, or one larger than the stream: count the frames, then pick again.
    cap = cv2.VideoCapture(str(path))
    total = 0
    try:
        while cap.grab():
            total += 1
    finally:
        cap.release()
    frames, _ = _read_frames(cv2, path, pick_indices(total, count), quality)
    if not frames:
        raise VideoError(f"cannot read the video {path}: no frame could be decoded")
    return frames


def _read_frames(cv2, path, wanted, quality):
    """The frames at the increasing indices ``wanted`` as (name, JPEG bytes); returns them and
    whether every one was read (False when the stream ended first)."""
    frames, index = [], 0
    cap = cv2.VideoCapture(str(path))
    try:
        for target in wanted:
            while index < target and cap.grab():
                index += 1
            ok, image = cap.read() if index == target else (False, None)
            if not ok:
                return frames, False
            index += 1
            ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
            if not ok:
                raise VideoError(f"cannot encode frame {target} of {path} as JPEG")
            frames.append((f"frame_{target:06d}.jpg", jpeg.tobytes()))
    finally:
        cap.release()
    return frames, True
