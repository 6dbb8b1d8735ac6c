"""Decoding of everything a client sends: base64 strings, images and .mat files.

All decoding happens in memory (requests never touch the file system) and every failure
raises :class:`ApiError` naming the request field, so the client gets a 4xx JSON answer.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from typing import Any

import numpy as np

_B64_CHARS = re.compile(rb"^[A-Za-z0-9+/=_\-\s]*$")
_DATA_URL = re.compile(r"^data:[\w/+.\-]*(;[\w=\-]+)*;base64,", re.IGNORECASE)


class ApiError(Exception):
    """A request problem answered with ``status`` and a JSON body naming ``field``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "field": self.field, "message": self.message}}


def decode_base64(value: Any, field: str, max_bytes: int) -> bytes:
    """Standard or URL-safe base64 (a ``data:...;base64,`` prefix is allowed) -> bytes."""
    if not isinstance(value, str):
        raise ApiError(422, "invalid_base64", f"{field}: expected a base64 string, got {type(value).__name__}", field)
    text = _DATA_URL.sub("", value.strip(), count=1)
    if len(text) * 3 // 4 > max_bytes:
        raise ApiError(413, "too_large", f"{field}: decoded size exceeds {max_bytes} bytes", field)
    raw = text.encode("ascii", errors="replace")
    if not _B64_CHARS.match(raw):
        raise ApiError(422, "invalid_base64", f"{field}: not a base64 string (illegal characters)", field)
    raw = re.sub(rb"\s+", b"", raw)
    if b"-" in raw or b"_" in raw:
        raw = raw.replace(b"-", b"+").replace(b"_", b"/")
    raw += b"=" * (-len(raw) % 4)
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(422, "invalid_base64", f"{field}: not valid base64 ({exc})", field) from None


def encode_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_image(data: bytes, field: str, max_pixels: int) -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, BMP, WebP, TIFF...) -> (H, W, 3) uint8 RGB.

    The pixel count is checked from the header before decoding, so a small file that
    inflates to a huge bitmap is refused without allocating it. Grey images become RGB;
    alpha is dropped. EXIF orientation is applied (phone photos).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ApiError(422, "invalid_image", f"{field}: empty image", field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ApiError(413, "image_too_large",
                               f"{field}: image has {w}x{h} pixels, more than the limit {max_pixels}", field)
            if w < 8 or h < 8:
                raise ApiError(422, "invalid_image", f"{field}: image is {w}x{h} pixels, expected at least 8x8", field)
            img = ImageOps.exif_transpose(img)
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(413, "image_too_large", f"{field}: image has more pixels than the limit {max_pixels}",
                       field) from None
    except UnidentifiedImageError as exc:
        raise ApiError(422, "invalid_image", f"{field}: not a readable image ({exc.__class__.__name__})",
                       field) from None
    except Exception as exc:  # Pillow's decoders raise many types (OSError, SyntaxError, struct.error, ...)
        raise ApiError(422, "invalid_image", f"{field}: image data is corrupt or truncated ({exc.__class__.__name__})",
                       field) from None
    return np.ascontiguousarray(rgb)


def decode_mat(data: bytes, field: str) -> dict[str, np.ndarray]:
    """MATLAB .mat bytes (v4/v5/v7; not v7.3 HDF5) -> dict of arrays without the ``__header__`` keys."""
    import scipy.io

    if not data:
        raise ApiError(422, "invalid_mat", f"{field}: empty .mat file", field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mat = scipy.io.loadmat(io.BytesIO(data))
    except NotImplementedError:
        raise ApiError(422, "invalid_mat", f"{field}: MATLAB v7.3 (HDF5) .mat files are not supported; save with -v7",
                       field) from None
    except Exception as exc:  # scipy raises many kinds (ValueError, TypeError, struct.error, ...) on junk
        raise ApiError(422, "invalid_mat", f"{field}: not a readable .mat file ({exc.__class__.__name__}: {exc})",
                       field) from None
    return {k: v for k, v in mat.items() if not k.startswith("__")}

