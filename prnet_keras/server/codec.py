"""Decoding of everything a client sends: base64 strings, images and .mat files.

All decoding happens in memory (requests never touch the file system) and every failure
raises :class:`ApiError` naming the request field, so the client gets a 4xx JSON answer.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import numpy as np

from prnet_keras.errors import InputError, LimitError

_B64_CHARS = re.compile(rb"^[A-Za-z0-9+/=_\-\s]*$")
_DATA_URL = re.compile(r"^data:[\w/+.\-]*(;[\w=\-]+)*;base64,", re.IGNORECASE)
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


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


def decode_image(data: bytes, field: str, max_pixels: int, min_side: int = 8) -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) uint8 RGB through the project's one decoder
    (``data.images``: pixel count checked from the header before decoding, EXIF orientation
    applied); 413 above ``max_pixels``, 422 for anything unreadable or under ``min_side``."""
    from prnet_keras.data.images import decode_image as decode

    try:
        rgb = decode(data, field, max_pixels)
    except LimitError as exc:
        raise ApiError(413, "image_too_large", str(exc), field) from None
    except InputError as exc:
        raise ApiError(422, "invalid_image", str(exc), field) from None
    if min(rgb.shape[:2]) < min_side:
        raise ApiError(422, "invalid_image", f"{field}: image is {rgb.shape[1]}x{rgb.shape[0]} pixels, expected at "
                       f"least {min_side}x{min_side}", field)
    return rgb


def decode_mat(data: bytes, field: str, max_bytes: int) -> dict[str, np.ndarray]:
    """MATLAB .mat bytes (v4/v5/v7; not v7.3 HDF5) -> dict of arrays without the ``__header__`` keys.

    Read by ``prnet_keras.matfile.load_mat``: the arrays' declared sizes are checked against
    ``max_bytes`` before anything is inflated or allocated (413 above it, 422 when unreadable).
    """
    from prnet_keras.matfile import load_mat

    try:
        return load_mat(data, field, max_bytes)
    except LimitError as exc:
        raise ApiError(413, "mat_too_large", str(exc), field) from None
    except InputError as exc:
        raise ApiError(422, "invalid_mat", str(exc), field) from None


def json_depth(body: bytes) -> int:
    """Deepest nesting of arrays / objects in a JSON text, without parsing it (strings skipped).

    Python's parser recurses per level: a body nested a thousand deep would raise
    RecursionError deep inside a route; this refuses it first, in linear time.
    """
    if b"[" not in body and b"{" not in body:
        return 0
    a = np.frombuffer(_JSON_STRING.sub(b'""', body), np.uint8)
    step = ((a == 0x5B) | (a == 0x7B)).astype(np.int32) - ((a == 0x5D) | (a == 0x7D))
    return int(np.cumsum(step).max(initial=0))
