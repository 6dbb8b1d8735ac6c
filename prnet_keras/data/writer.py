"""Writing position-map HDF5 files: encoded rows, direct chunk writes, concatenation.

Image-sized arrays are compressed by the caller (:func:`encode_chunk`, shuffle + deflate,
byte-identical to HDF5's own filters) and written with direct chunk writes, so the
expensive part runs in the build's worker processes and the bytes do not depend on them.
"""

from __future__ import annotations

import json
import os
import zlib
from typing import Any, Iterable, Sequence

import cv2
import h5py
import numpy as np

from prnet_keras.data.chunks import per_sample_chunks
from prnet_keras.data.hdf5 import _STR, FORMAT, FORMAT_VERSION, GZIP_LEVEL, _schema, check_compression
from prnet_keras.errors import InputError
from prnet_keras.geometry import UVLayout


try:  # ISA-L deflate: ~8x faster than zlib at a similar ratio, and any zlib inflates it
    from isal import isal_zlib as _deflate

    COMPRESSOR, _LEVEL = "isal-2", 2
except ImportError:  # pragma: no cover - isal is in requirements.txt
    _deflate, COMPRESSOR, _LEVEL = zlib, f"zlib-{GZIP_LEVEL}", GZIP_LEVEL


def encode_chunk(array: np.ndarray, compression: str = "gzip") -> bytes:
    """One HDF5 chunk as stored: through the shuffle + deflate filters ("gzip"), or the
    raw little-endian bytes ("none"); readable by any HDF5 / h5py either way.

    The deflate stream is standard zlib format; with ISA-L the bytes differ from libz's,
    the decoded data do not (``COMPRESSOR`` is recorded in the file attributes).
    """
    a = np.ascontiguousarray(array)
    if compression == "none":
        return a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
    shuffled = a.view(np.uint8).reshape(-1, a.itemsize).T.tobytes() if a.itemsize > 1 else a.tobytes()
    return _deflate.compress(shuffled, _LEVEL)


def encode_jpeg(image_rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise InputError("crop: JPEG encoding failed")
    return buf.reshape(-1)


def create_file(path: str | os.PathLike, attrs: dict[str, Any], layout: UVLayout,
                layout_bytes: bytes | None = None) -> h5py.File:
    """A new, empty file of the schema given by ``attrs`` (store, crop_format, compression, n_shape, n_exp).

    ``layout_bytes`` (= layout.to_bytes()) saves re-serialising the layout for every part file.
    """
    f = h5py.File(path, "w", libver=("v110", "latest"))
    schema = _schema(attrs["store"], attrs.get("crop_format", "jpeg"), layout.resolution,
                     int(attrs.get("n_shape", 0)), int(attrs.get("n_exp", 0)))
    gzip = check_compression(attrs.get("compression") or "gzip") == "gzip"
    for key, (shape, dtype, chunked) in schema.items():
        if chunked:
            filters = {"shuffle": True, "compression": "gzip", "compression_opts": GZIP_LEVEL} if gzip else {}
            f.create_dataset(key, (0,) + shape, dtype=dtype, maxshape=(None,) + shape, chunks=(1,) + shape, **filters)
        else:
            chunk_rows = max(1, min(1024, 65536 // max(1, int(np.prod(shape, dtype=np.int64)) * 8)))
            f.create_dataset(key, (0,) + shape, dtype=dtype, maxshape=(None,) + shape, chunks=(chunk_rows,) + shape)
    f.create_dataset("uv_layout", data=np.frombuffer(layout_bytes or layout.to_bytes(), np.uint8))
    g = f.create_group("skipped")
    for key in ("name", "source_path", "reason"):
        g.create_dataset(key, (0,), dtype=_STR, maxshape=(None,), chunks=(256,))
    f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "layout_hash": layout.hash(),
                    "compressor": COMPRESSOR})
    for k, v in attrs.items():
        f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list, tuple)) else ("" if v is None else v)
    return f


def _row_fields(f: h5py.File) -> list[str]:
    return [k for k in f.keys() if isinstance(f[k], h5py.Dataset) and k != "uv_layout"]


def append_rows(f: h5py.File, rows: Sequence[dict[str, Any]], skipped: Sequence[tuple[str, str, str]] = ()) -> None:
    """Append encoded rows (chunked fields as :func:`encode_chunk` bytes) and skipped entries."""
    n0, n = len(f["name"]), len(rows)
    for key in _row_fields(f):
        d = f[key]
        d.resize(n0 + n, axis=0)
        if not n:
            continue
        if per_sample_chunks(d):
            for i, row in enumerate(rows):
                d.id.write_direct_chunk((n0 + i,) + (0,) * (d.ndim - 1), row[key], 0)
        elif h5py.check_string_dtype(d.dtype) is not None:
            d[n0:] = [str(row[key]) for row in rows]
        elif h5py.check_vlen_dtype(d.dtype) is not None:
            for i, row in enumerate(rows):  # one by one: h5py mis-broadcasts a 1-row object array
                d[n0 + i] = np.asarray(row[key], np.uint8).reshape(-1)
        else:
            d[n0:] = np.stack([np.asarray(row[key]) for row in rows]) if d.ndim > 1 else [row[key] for row in rows]
    g = f["skipped"]
    if skipped:
        m0 = len(g["name"])
        for j, key in enumerate(("name", "source_path", "reason")):
            g[key].resize(m0 + len(skipped), axis=0)
            g[key][m0:] = [s[j] for s in skipped]


def concat_files(inputs: Iterable[str | os.PathLike], out: h5py.File) -> None:
    """Append every row and skipped entry of ``inputs`` (same schema) to ``out`` in order.

    Compressed chunks are copied as bytes (no decompression).
    """
    for path in inputs:
        with h5py.File(path, "r") as src:
            if src.attrs.get("layout_hash") != out.attrs.get("layout_hash"):
                raise InputError(f"{path}: UV layout differs from the other inputs")
            n, n0 = len(src["name"]), len(out["name"])
            for key in _row_fields(out):
                if key not in src:
                    raise InputError(f"{path}: missing dataset {key!r} (different store mode?)")
                s, d = src[key], out[key]
                d.resize(n0 + n, axis=0)
                if per_sample_chunks(d):
                    if per_sample_chunks(s) and s.compression != d.compression:
                        raise InputError(f"{path}: {key!r} compression {s.compression or 'none'} differs from the "
                                         f"other inputs ({d.compression or 'none'})")
                    zeros = (0,) * (d.ndim - 1)
                    for i in range(n):
                        mask, chunk = s.id.read_direct_chunk((i,) + zeros)
                        d.id.write_direct_chunk((n0 + i,) + zeros, chunk, mask)
                elif n and h5py.check_vlen_dtype(d.dtype) is not None and h5py.check_string_dtype(d.dtype) is None:
                    for i, value in enumerate(s[:]):  # one by one: h5py mis-broadcasts a 1-row object array
                        d[n0 + i] = value
                elif n:
                    d[n0:] = s[:]
            sk = src["skipped"]
            m, m0 = len(sk["name"]), len(out["skipped/name"])
            for key in ("name", "source_path", "reason"):
                out["skipped"][key].resize(m0 + m, axis=0)
                if m:
                    out["skipped"][key][m0:] = sk[key][:]
