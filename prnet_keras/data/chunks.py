"""One sample's image-sized arrays read fast: direct chunk reads, inflating, float16 widening, JPEG crops.

Training reads two arrays per sample (a 256² JPEG crop and a 256×256×3 float16 position map).
h5py's filter pipeline and OpenCV's decoder cost about twice what the libraries underneath
need, so :func:`read_chunk_into` takes a one-sample chunk straight from the file, inflates it
with libdeflate, un-shuffles and widens it into the caller's array (bit-identical to h5py), and
:func:`decode_crop` decodes a JPEG crop with libjpeg-turbo (simplejpeg) into the caller's array.
Every call here releases the GIL in its native part, so worker threads share the work.
"""

from __future__ import annotations

import threading
import zlib
from typing import Any

import cv2
import h5py
import numpy as np

from prnet_keras.errors import InputError

try:  # libdeflate: ~2.4x zlib and ~1.6x ISA-L on the position-map chunks, same output
    from deflate import DeflateError, zlib_decompress

    def _inflate(data: Any, wbits: int, size: int) -> bytes:
        return zlib_decompress(data, size)  # exactly ``size`` bytes, or DeflateError

    _INFLATE_ERRORS: tuple = (zlib.error, DeflateError)
except ImportError:  # pragma: no cover - deflate is in requirements.txt
    _inflate, _INFLATE_ERRORS = zlib.decompress, (zlib.error,)

try:  # libjpeg-turbo without OpenCV's wrapper: ~15 % faster on 256² crops, decodes into the batch
    import simplejpeg
except ImportError:  # pragma: no cover - simplejpeg is in requirements.txt
    simplejpeg = None

try:  # h5py's global lock: every HDF5 call from threads must hold it
    from h5py._objects import phil as _PHIL
except ImportError:  # pragma: no cover - private name; a local lock still serialises our own calls
    _PHIL = threading.RLock()


_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10: decodes straight to RGB
_CV_FP16 = hasattr(cv2, "convertFp16")


def decode_crop(value: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Stored crop (JPEG bytes or raw array) -> (R, R, 3) uint8 RGB, into ``out`` if given.

    A stored JPEG that does not decode completely is an :class:`InputError` (a training sample
    is then skipped, never learnt half grey).
    """
    if value.ndim != 1:
        if out is None:
            return value
        out[...] = value
        return out
    if simplejpeg is not None:
        try:
            if out is not None and out.flags.c_contiguous and out.dtype == np.uint8 and out.ndim == 3:
                h, w, _, _ = simplejpeg.decode_jpeg_header(value)
                if (h, w, 3) == out.shape:
                    simplejpeg.decode_jpeg(value, colorspace="RGB", buffer=out)
                    return out
            img = simplejpeg.decode_jpeg(value, colorspace="RGB")
        except ValueError as exc:
            raise InputError(f"crop: stored JPEG bytes do not decode ({exc})") from None
    else:
        img = cv2.imdecode(value, cv2.IMREAD_COLOR if _IMREAD_RGB is None else _IMREAD_RGB)
        if img is None:
            raise InputError("crop: stored JPEG bytes do not decode")
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if _IMREAD_RGB is None else img
    if out is None:
        return img
    out[...] = img
    return out


_TLS = threading.local()


def _chunk_buffer(nbytes: int) -> np.ndarray:
    """A per-thread reusable uint8 buffer of >= ``nbytes`` (fresh 400 kB allocations page-fault)."""
    buf = getattr(_TLS, "chunk", None)
    if buf is None or buf.size < nbytes:
        buf = _TLS.chunk = np.empty(nbytes, np.uint8)
    return buf


def per_sample_chunks(d: h5py.Dataset) -> bool:
    """Whether ``d`` is an image-sized field stored one sample per chunk (direct chunk I/O)."""
    return d.ndim > 1 and d.chunks == (1,) + d.shape[1:]


def fast_chunks(dset: h5py.Dataset) -> str | None:
    """How :func:`read_chunk_into` can read ``dset`` without h5py's filter pipeline.

    "deflate" (shuffle + deflate, ``--compression gzip``) or "plain" (no filters,
    ``--compression none``) for one-sample-per-chunk little-endian datasets; else None.
    """
    if not (per_sample_chunks(dset) and dset.dtype.itemsize in (1, 2, 4, 8)
            and dset.dtype.byteorder in "=|<" and np.little_endian):
        return None
    plist = dset.id.get_create_plist()
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if filters == [h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE]:
        return "deflate"
    return "plain" if not filters else None


def read_chunk_into(dset: h5py.Dataset, j: int, out: np.ndarray, mode: str = "deflate",
                    layout: tuple[np.dtype, tuple[int, ...]] | None = None) -> None:
    """``out[...] = dset[j]`` for a :func:`fast_chunks` dataset, bypassing h5py's filter pipeline.

    Reads the stored chunk; "deflate" chunks are inflated (libdeflate) and un-shuffled, "plain"
    ones used as they are; converts once into ``out``. Bit-identical to h5py. Falls back to
    h5py when the chunk skipped a filter, does not inflate or has an unexpected size.
    ``layout``: the dataset's (dtype, shape), when the caller has them (each h5py property
    read is an HDF5 call: ~15 % of a row read).
    """
    dt, shape = layout if layout is not None else (dset.dtype, dset.shape)
    n = int(np.prod(shape[1:], dtype=np.int64))
    nbytes = n * dt.itemsize
    buf = _chunk_buffer(nbytes + nbytes // 512 + 1024)  # deflate's worst case is a little over raw
    offset = (int(j),) + (0,) * (len(shape) - 1)
    try:
        with _PHIL:  # h5py < 3.15 does not lock read_direct_chunk itself; HDF5 is not thread-safe
            mask, data = dset.id.read_direct_chunk(offset, out=buf)
    except ValueError:  # a chunk larger than the buffer (not written by this library)
        with _PHIL:
            mask, data = dset.id.read_direct_chunk(offset)
    raw = None
    if mode == "plain":
        raw = np.frombuffer(data, np.uint8)
    elif mask == 0:
        try:
            raw = np.frombuffer(_inflate(data, 15, nbytes), np.uint8)
        except _INFLATE_ERRORS:  # not a zlib stream: let h5py read it (and report the error its own way)
            raw = None
    if raw is None or raw.size != nbytes:
        put_values(out, dset[j])
        return
    shuffled = mode == "deflate" and dt.itemsize > 1
    if out.dtype == np.uint8 and dt.itemsize > 1 and out.size == nbytes:
        # Byte planes wanted (the shuffle filter's own layout): the accelerator interleaves them.
        planes = out.reshape(dt.itemsize, n)
        np.copyto(planes, raw.reshape(dt.itemsize, n) if shuffled else raw.reshape(n, dt.itemsize).T)
        return
    rows = int(shape[1]) if len(shape) > 1 and n % max(1, int(shape[1])) == 0 else 1
    if (dt == np.float16 and out.dtype == np.float32 and out.flags.c_contiguous and n >= 2 and _CV_FP16
            and max(rows, n // rows) < 2**31):
        # OpenCV (SIMD) float16 -> float32 straight into ``out``, ~10x numpy's astype (a
        # shuffled chunk first has its two byte planes interleaved). Bit-identical except
        # that it quiets signalling NaNs, so any non-finite chunk is converted again by numpy.
        halves = (cv2.merge([raw[:n].reshape(rows, -1), raw[n:].reshape(rows, -1)]) if shuffled else raw).view(np.int16)
        dst = out.reshape(rows, -1)
        cv2.convertFp16(halves.reshape(rows, -1), dst)
        if np.isfinite(dst.sum(dtype=np.float32)):
            return
        np.copyto(out, halves.view(np.float16).reshape(out.shape))
        return
    values = np.ascontiguousarray(raw.reshape(dt.itemsize, n).T).view(dt) if shuffled else raw.view(dt)
    np.copyto(out, values.reshape(out.shape), casting="unsafe")


def put_values(out: np.ndarray, values: np.ndarray) -> None:
    """``out[...] = values``, or, for a uint8 ``out`` of ``values.nbytes`` bytes, the byte
    planes of the values (plane k = byte k of every element, little-endian)."""
    values = np.asarray(values)
    if out.dtype == np.uint8 and values.dtype.itemsize > 1 and out.size == values.nbytes:
        size = values.dtype.itemsize
        out.reshape(size, -1)[...] = np.ascontiguousarray(values, values.dtype.newbyteorder("<")).view(
            np.uint8).reshape(-1, size).T
    else:
        out[...] = values
