"""Reading and normalising input images to RGB uint8 (H, W, 3).

Files and encoded bytes are decoded by ``data.images`` (the one decoder: EXIF orientation
applied, pixel count checked before decoding). Arrays a user hands over go through
:func:`to_rgb_uint8`: grayscale (H, W) or (H, W, 1), RGB/BGR, RGBA/BGRA (alpha dropped),
uint8, uint16 (16-bit PNG/TIFF, scaled by 1/257), float in [0, 1] or [0, 255]. Anything else
raises :class:`InputError` naming the source and what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from prnet_keras.data.images import MAX_IMAGE_PIXELS, decode_image, read_image_file
from prnet_keras.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "decode_image", "list_images", "load_image", "to_rgb_uint8"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def to_rgb_uint8(image: np.ndarray, color_order: str = "rgb", name: str = "image") -> np.ndarray:
    """Normalise an image array to contiguous RGB uint8 (H, W, 3).

    color_order: "rgb" or "bgr" (OpenCV order) for 3/4-channel inputs; ignored for gray.
    """
    if color_order not in ("rgb", "bgr"):
        raise InputError(f"color_order: expected 'rgb' or 'bgr', got {color_order!r}")
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or min(a.shape[:2]) < 1:
        raise InputError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {a.shape}")
    a = _to_uint8(a, name)
    if a.ndim == 2:
        return np.ascontiguousarray(np.repeat(a[..., None], 3, axis=2))
    a = a[..., :3]  # drop alpha: the network was trained on opaque photos
    if color_order == "bgr":
        a = a[..., ::-1]
    return np.ascontiguousarray(a)


def _to_uint8(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return (a.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise InputError(f"{name}: image contains NaN or inf")
        hi = float(a.max()) if a.size else 0.0
        scale = 255.0 if hi <= 1.0 else 1.0  # float images in [0, 1] or already in [0, 255]
        return np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        return np.clip(a, 0, 255).astype(np.uint8)
    raise InputError(f"{name}: unsupported image dtype {a.dtype} (expected uint8, uint16 or float)")


def load_image(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image file -> upright RGB uint8 (H, W, 3) (``data.images.read_image_file``);
    :class:`InputError` naming the file when missing, unreadable or above ``max_pixels``."""
    return read_image_file(path, max_pixels)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """All .jpg/.jpeg/.png files (any case) under ``folder``, recursively, sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: input directory not found")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
