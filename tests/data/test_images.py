"""The one image decoder: EXIF orientation as photo viewers apply it, the pixel limit checked from
the header before any decoding, clear errors naming the input."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from prnet_keras.data.images import decode_image, image_header, read_image_file
from prnet_keras.errors import InputError, LimitError


def _encoded(pixels: np.ndarray, fmt: str, orientation: int | None = None) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    extra = {"quality": 100} if fmt == "JPEG" else ({"lossless": True} if fmt == "WEBP" else {})
    Image.fromarray(pixels).save(buf, format=fmt, exif=exif, **extra)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_every_exif_orientation_matches_pillows_exif_transpose(fmt):
    pixels = (np.arange(30 * 44 * 3).reshape(30, 44, 3) * 7 % 251).astype(np.uint8)
    for orientation in range(1, 9):
        data = _encoded(pixels, fmt, orientation)
        expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")).astype(int)
        got = decode_image(data, "x")
        assert got.shape == expected.shape and got.dtype == np.uint8, (fmt, orientation)
        assert np.abs(got.astype(int) - expected).max() <= (4 if fmt == "JPEG" else 0), (fmt, orientation)
        assert got.shape[:2] == ((44, 30) if orientation >= 5 else (30, 44))


def _png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def test_pixel_limit_is_checked_from_the_header():
    assert image_header(_png_declaring(640, 480), "a.png") == (640, 480, 1)
    with pytest.raises(LimitError, match=r"b.png: image is 4000x3000 = 12000000 pixels, more than the limit 10000000"):
        decode_image(_png_declaring(4000, 3000), "b.png", max_pixels=10_000_000)
    # beyond Pillow's own bomb guard the message still gives the declared size and our limit
    with pytest.raises(LimitError, match=r"c.png: image declares 900000000 pixels, more than the limit"):
        decode_image(_png_declaring(30_000, 30_000), "c.png")


def test_bad_inputs_name_the_file(tmp_path):
    good = _encoded(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8), "JPEG")
    for data, match in ((b"", "empty image data"), (b"<html>", "cannot decode image"),
                        (good[: len(good) // 2], "truncated JPEG"), (_png_declaring(50, 40), "corrupt or truncated")):
        with pytest.raises(InputError, match=match):
            decode_image(data, "photo.jpg")
    with pytest.raises(InputError, match="not found"):
        read_image_file(tmp_path / "missing.jpg")
    big = tmp_path / "huge.bmp"
    big.write_bytes(b"BM" + b"\0" * (1 << 21))
    with pytest.raises(LimitError, match="larger than any image within the pixel limit"):
        read_image_file(big, max_pixels=100)
