"""The one image decoder: encoded bytes -> RGB uint8 (H, W, 3), orientation applied, size checked first.

Every image the project reads (dataset builds, evaluation, ``prnet-predict``, the server)
goes through :func:`decode_image`, so a photo is oriented and refused the same way
everywhere:

* the header is read first (Pillow, without decoding the pixels) and an image declaring
  more than ``max_pixels`` pixels is refused with :class:`~prnet_keras.errors.LimitError`
  before any bitmap is allocated;
* the EXIF ``Orientation`` tag (JPEG, WebP, TIFF, and PNG ``eXIf`` before the pixel data) is
  applied, as photo viewers do: a phone portrait stored sideways comes out upright;
* pixels are decoded by OpenCV; 16-bit images are scaled to 8 bits, grey becomes RGB,
  alpha is dropped; a JPEG without its end-of-image marker (truncated: libjpeg would fill
  the rest with grey) is refused.

Formats: whatever both Pillow and OpenCV read (JPEG, PNG, BMP, WebP, TIFF).
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

import cv2
import numpy as np

from prnet_keras.errors import InputError, LimitError

# Largest image (width x height) decoded anywhere: 50 MP covers 45-50 MP camera and phone
# photos and costs 150 MB once decoded. Configurable as ``data.max_image_pixels``.
MAX_IMAGE_PIXELS = 50_000_000
# Bytes per pixel no encoded image exceeds (16-bit RGBA stored uncompressed), plus headers:
# a file larger than this cannot hold an image within the pixel limit and is not read.
_MAX_BYTES_PER_PIXEL = 8
_HEADER_SLACK = 1 << 20
ORIENTATION_TAG = 0x0112
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10 decodes straight to RGB

# EXIF orientation -> (transpose first, then np.rot90 turns counter-clockwise, then flip left-right)
_ORIENT = {1: (False, 0, False), 2: (False, 0, True), 3: (False, 2, False), 4: (False, 2, True),
           5: (True, 0, False), 6: (False, 3, False), 7: (True, 2, False), 8: (False, 1, False)}


def max_file_bytes(max_pixels: int) -> int:
    """Largest encoded file worth reading for images of at most ``max_pixels`` pixels."""
    return int(max_pixels) * _MAX_BYTES_PER_PIXEL + _HEADER_SLACK


def image_header(data: bytes, name: str = "image", max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int, int]:
    """(width, height, EXIF orientation 1-8) from the header alone.

    InputError when unreadable; LimitError when it declares more than ``max_pixels`` pixels.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InputError(f"{name}: empty image data")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            orientation = _orientation(img)
    except Image.DecompressionBombError as exc:  # Pillow's own guard (2x its MAX_IMAGE_PIXELS) fired first
        found = re.search(r"\((\d+) pixels\)", str(exc))
        declared = found.group(1) if found else f"more than {2 * (Image.MAX_IMAGE_PIXELS or 0)}"
        raise LimitError(f"{name}: image declares {declared} pixels, more than the limit {int(max_pixels)} "
                         "(max_image_pixels)") from None
    except UnidentifiedImageError:
        raise InputError(f"{name}: cannot decode image (not a JPEG/PNG/BMP/WebP/TIFF file)") from None
    except Exception as exc:  # Pillow's header parsers raise assorted types on junk
        raise InputError(f"{name}: cannot decode image (corrupt header: {exc.__class__.__name__})") from None
    if w < 1 or h < 1:
        raise InputError(f"{name}: image is {w}x{h} pixels")
    if w * h > int(max_pixels):
        raise LimitError(f"{name}: image is {w}x{h} = {w * h} pixels, more than the limit {int(max_pixels)} "
                         "(max_image_pixels)")
    return int(w), int(h), orientation


def _orientation(img) -> int:
    from PIL import Image

    raw = img.info.get("exif")
    if img.format == "TIFF" or not raw:
        return 1  # OpenCV's TIFF decoder applies the orientation tag itself
    exif = Image.Exif()
    exif.load(raw)
    value = exif.get(ORIENTATION_TAG, 1)
    return int(value) if value in _ORIENT else 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels (H, W, C) into the upright image EXIF ``orientation`` describes."""
    transpose, turns, flip = _ORIENT.get(int(orientation), (False, 0, False))
    out = image
    if transpose:
        out = out.transpose(1, 0, *range(2, out.ndim))
    if turns:
        out = np.rot90(out, turns)
    if flip:
        out = out[:, ::-1]
    return out if out is image else np.ascontiguousarray(out)


def decode_image(data: bytes, name: str = "image", max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) uint8 RGB, upright (see the module doc).

    Raises :class:`LimitError` when the header declares more than ``max_pixels`` pixels
    (nothing decoded) and :class:`InputError` for anything that is not a complete image.
    """
    w, h, orientation = image_header(data, name, max_pixels)
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:]:
        # libjpeg only warns on a truncated file and fills the rest with grey
        raise InputError(f"{name}: truncated JPEG (no end-of-image marker)")
    flags = (_IMREAD_RGB if _IMREAD_RGB is not None else cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if img is None or img.ndim != 3 or img.shape[:2] != (h, w):
        raise InputError(f"{name}: cannot decode image (corrupt or truncated {w}x{h} image data)")
    if _IMREAD_RGB is None:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)  # in place: no second full-size copy
    return apply_orientation(img, orientation)


def read_image_file(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read and :func:`decode_image` a file; InputError names the file (missing, unreadable, too big)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: image file not found")
    try:
        size = p.stat().st_size
        limit = max_file_bytes(max_pixels)
        if size > limit:
            raise LimitError(f"{p}: file of {size} bytes is larger than any image within the pixel limit "
                             f"{int(max_pixels)} ({limit} bytes)")
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"{p}: cannot read image ({exc.strerror or exc})") from None
    return decode_image(data, str(p), max_pixels)
