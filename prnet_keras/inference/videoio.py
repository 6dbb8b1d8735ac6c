"""Reading and writing video: one capture class for files and cameras, one atomic writer.

Both go through OpenCV's ``VideoCapture`` / ``VideoWriter`` (its FFmpeg backend, bundled in
the ``opencv-python-headless`` wheel, and V4L2 for cameras): no other dependency and no
system FFmpeg needed. Written files are MPEG-4 Part 2 (``mp4v``) in ``.mp4`` — the codec that
wheel's FFmpeg encodes everywhere (H.264 encoders are not in it) — or Motion-JPEG in ``.avi``.

Frames are RGB uint8 (H, W, 3) like every other image in the package.

Bad input is one :class:`InputError` naming the file: missing, not a video, a container
whose codec this build cannot decode (or a damaged file), no frames, or a declared frame
size above ``max_pixels`` (the one image limit, ``data.max_image_pixels``; checked before any
frame is decoded).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from prnet_keras.data.images import MAX_IMAGE_PIXELS
from prnet_keras.errors import InputError

# FFmpeg's own log lines ("moov atom not found", ...) would precede our one error line;
# the failure is reported as an InputError instead. Read by OpenCV when it opens a file.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

DEFAULT_CAMERA_FPS = 30.0
WRITERS = {".mp4": "mp4v", ".avi": "MJPG"}
# leading bytes of containers FFmpeg reads: a file with one of them that cannot be opened
# is a codec (or damage) problem, not "not a video"
_CONTAINER_MAGIC = ((4, b"ftyp"), (0, b"RIFF"), (0, b"\x1a\x45\xdf\xa3"), (0, b"OggS"), (0, b"FLV"),
                    (0, b"\x00\x00\x01\xba"))


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """OpenCV's own error lines while opening ("Could not find decoder ..."): off, restored after."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(0)  # silent
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def _looks_like_container(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return any(head[at:at + len(magic)] == magic for at, magic in _CONTAINER_MAGIC)


class VideoSource:
    """Frames of a video file (path) or a camera (int index), RGB uint8, in order.

    ``fps`` (camera: what it reports, else 30), ``width``, ``height``, ``frame_count`` (files:
    the container's count, may be an estimate; cameras: 0). Iterating yields
    ``(index, time_s, frame)``: file time = index / fps, camera time = seconds since opening.
    The first frame is decoded on opening, so a file without frames fails there.
    """

    def __init__(self, source: str | os.PathLike | int, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
        self.is_camera = isinstance(source, int)
        self.name = f"camera {source}" if self.is_camera else str(source)
        if not self.is_camera:
            p = Path(source)
            if not p.is_file():
                raise InputError(f"{p}: video file not found")
            with _quiet_opencv():
                cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG)
            if not cap.isOpened():
                if _looks_like_container(p):
                    raise InputError(f"{p}: cannot decode this video: its codec is not one this OpenCV/FFmpeg build "
                                     "reads, or the file is damaged")
                raise InputError(f"{p}: not a video file (expected e.g. .mp4, .avi, .mkv, .webm, .mov)")
        else:
            with _quiet_opencv():
                cap = cv2.VideoCapture(int(source))
            if not cap.isOpened():
                raise InputError(f"camera {source}: cannot open it (no such camera, or it is in use)")
        self._cap = cap
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if w * h > max_pixels:
            self.close()
            raise InputError(f"{self.name}: declares {w}x{h} frames, more than the {max_pixels} pixels allowed "
                             "(max_image_pixels)")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (np.isfinite(fps) and 0 < fps <= 1000):
            if not self.is_camera:
                self.close()
                raise InputError(f"{self.name}: declares an invalid frame rate ({fps})")
            fps = DEFAULT_CAMERA_FPS
        self.fps = fps
        self.frame_count = 0 if self.is_camera else max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        self._t0 = time.perf_counter()
        self._first = self._read()
        if self._first is None:
            self.close()
            raise InputError(f"{self.name}: the video has no frames" if not self.is_camera
                             else f"{self.name}: the camera gives no frames")
        self.height, self.width = self._first.shape[:2]

    def _read(self) -> np.ndarray | None:
        ok, bgr = self._cap.read()
        if not ok or bgr is None or bgr.size == 0:
            return None
        if bgr.ndim == 2:
            return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray]]:
        index = 0
        frame, self._first = self._first, None
        while frame is not None:
            t = (time.perf_counter() - self._t0) if self.is_camera else index / self.fps
            yield index, t, frame
            index += 1
            frame = self._read()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoSink:
    """Writes RGB uint8 frames of one size to ``path`` (``.mp4``: mp4v, ``.avi``: MJPG) at ``fps``.

    The file appears under its name only when :meth:`close` succeeds (written beside it under
    a temporary name, then renamed); :meth:`abort` removes the partial file.
    """

    def __init__(self, path: str | os.PathLike, fps: float, width: int, height: int) -> None:
        self.path = Path(path)
        fourcc = WRITERS.get(self.path.suffix.lower())
        if fourcc is None:
            raise InputError(f"{self.path}: output video must end in {' or '.join(WRITERS)}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        with _quiet_opencv():
            self._writer = cv2.VideoWriter(str(self._tmp), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), float(fps),
                                           (int(width), int(height)))
        if not self._writer.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise InputError(f"{self.path}: cannot write a {fourcc} video here (OpenCV/FFmpeg refused)")
        self.size = (int(width), int(height))
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape[1::-1] != self.size:
            raise InputError(f"{self.path}: frame {self.frames} is {rgb.shape[1]}x{rgb.shape[0]}, "
                             f"the video is {self.size[0]}x{self.size[1]}")
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> Path:
        self._writer.release()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._writer.release()
        self._tmp.unlink(missing_ok=True)


def write_video(path: str | os.PathLike, frames, fps: float) -> Path:
    """Write an iterable of RGB uint8 frames (all one size) as a video; returns the path."""
    sink = None
    try:
        for frame in frames:
            if sink is None:
                sink = VideoSink(path, fps, frame.shape[1], frame.shape[0])
            sink.write(frame)
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    if sink is None:
        raise InputError(f"{path}: no frames to write")
    return sink.close()
