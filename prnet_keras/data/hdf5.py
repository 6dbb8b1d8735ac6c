"""The position-map HDF5 format (version 1): schema and the reader :class:`PositionMapDataset`.

One row per sample, all datasets share the first axis N (schema in README.md, "HDF5 schema"):

  name, source_path            (N,) str
  transform                    (N, 3, 3) float64   image -> crop similarity
  pose_para (N, 7) float32, yaw (N,) float32 degrees, kpt68 (N, 68, 3) float32 image frame,
  image_size (N, 2) int32 (h, w)
  store "crops": crop (N,) JPEG bytes (vlen uint8) or (N, R, R, 3) uint8;
                 position_map (N, R, R, 3) float16 crop pixels
  store "raw":   image (N,) original file bytes (vlen uint8); shape_para (N, k), exp_para (N, m) float32
  uv_layout      (bytes,) uint8: UVLayout.to_bytes()
  skipped/{name, source_path, reason}  samples left out and why

Image-sized arrays are chunked one sample per chunk, with shuffle + gzip (``compression``
attribute "gzip", the default) or unfiltered ("none": ~2x the bytes, no inflation on reads);
writer: data.writer.
Readers open HDF5 handles lazily per process, so a dataset object can be shared with
multiprocessing workers (forked or pickled).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from prnet_keras.data.chunks import decode_crop, fast_chunks, put_values, read_chunk_into
from prnet_keras.errors import InputError
from prnet_keras.geometry import UVLayout

FORMAT = "prnet-keras/position-maps"
FORMAT_VERSION = 1
_FAST_READ = True  # read image-sized chunks (deflate or plain) without h5py's filter pipeline
GZIP_LEVEL = 1  # level 1 is ~25 % faster than 4 for < 1 % larger files on position maps
_STR = h5py.string_dtype("utf-8")
_BYTES = h5py.vlen_dtype(np.uint8)
COMPRESSIONS = ("gzip", "none")  # image-sized chunks: shuffle + deflate, or stored as they are
COMMON_FIELDS = ("name", "source_path", "transform", "pose_para", "yaw", "kpt68", "image_size")


def _schema(store: str, crop_format: str, resolution: int, n_shape: int, n_exp: int) -> dict[str, tuple]:
    """field -> (per-row shape, dtype, compressed-chunk?)."""
    r = resolution
    fields: dict[str, tuple] = {
        "name": ((), _STR, False), "source_path": ((), _STR, False),
        "transform": ((3, 3), np.float64, False), "pose_para": ((7,), np.float32, False),
        "yaw": ((), np.float32, False), "kpt68": ((68, 3), np.float32, False),
        "image_size": ((2,), np.int32, False),
    }
    if store == "crops":
        fields["crop"] = ((), _BYTES, False) if crop_format == "jpeg" else ((r, r, 3), np.uint8, True)
        fields["position_map"] = ((r, r, 3), np.float16, True)
    elif store == "raw":
        fields["image"] = ((), _BYTES, False)
        fields["shape_para"] = ((n_shape,), np.float32, False)
        fields["exp_para"] = ((n_exp,), np.float32, False)
    else:
        raise InputError(f"--store {store}: expected crops or raw")
    return fields


def check_compression(compression: str) -> str:
    if compression not in COMPRESSIONS:
        raise InputError(f"--compression {compression}: expected one of {', '.join(COMPRESSIONS)}")
    return compression


def read_attrs(f: h5py.File) -> dict[str, Any]:
    """File attributes with JSON-encoded values decoded."""
    out = {}
    for k, v in f.attrs.items():
        if isinstance(v, bytes):
            v = v.decode()
        if isinstance(v, str) and v[:1] in "[{":
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                pass
        out[k] = v.item() if isinstance(v, np.generic) else v
    return out


def open_checked(path: str | os.PathLike) -> h5py.File:
    """Open a position-map file read-only; InputError when it is not one."""
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise InputError(f"{path}: HDF5 file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc})") from None
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise InputError(f"{path}: not a prnet-keras position-map file (attribute 'format' != {FORMAT!r})")
    if int(f.attrs.get("format_version", 0)) > FORMAT_VERSION:
        f.close()
        raise InputError(f"{path}: format version {f.attrs['format_version']} is newer than this library "
                         f"({FORMAT_VERSION})")
    if f.attrs.get("store") not in ("crops", "raw", b"crops", b"raw"):
        f.close()
        raise InputError(f"{path}: attribute 'store' is {f.attrs.get('store')!r}, expected crops or raw")
    return f


def check_fields(f: h5py.File, path: str | os.PathLike) -> None:
    """InputError naming the first dataset a position-map file of its store mode lacks."""
    store = f.attrs.get("store")
    if isinstance(store, bytes):
        store = store.decode()
    need = COMMON_FIELDS + (("crop", "position_map") if store == "crops" else ("image", "shape_para", "exp_para")) \
        + ("uv_layout",)
    for key in need:
        if key not in f or not isinstance(f[key], h5py.Dataset):
            raise InputError(f"{path}: no dataset {key!r} (a {store!r}-store file written by build_dataset.py has "
                             f"{', '.join(need)})")
    n = len(f["name"])
    short = [key for key in need[:-1] if len(f[key]) != n]
    if short:
        raise InputError(f"{path}: dataset(s) {', '.join(short)} do not have one row per sample ({n})")


def skipped_entries(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """(name, source_path, reason) of the samples a build left out."""
    with open_checked(path) as f:
        g = f["skipped"]
        cols = [g[k].asstr()[:] for k in ("name", "source_path", "reason")]
    return list(zip(*cols))


class PositionMapDataset:
    """Samples of one or more position-map HDF5 files (same UV layout and store mode).

    ``len(ds)``; ``ds[i]`` -> dict of one sample; ``ds.read_batch(indices, rng)`` -> batch
    dict (see :meth:`read_batch`); properties ``layout``, ``store``, ``attrs``, ``names``.
    ``model`` (a MorphableModel) is only needed for ``raw`` files whose ``model_spec``
    cannot be loaded here (e.g. a BFM path from another machine).
    """

    fresh_batches = True  # read_batch allocates new arrays (consumers may overwrite them)

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike], model: Any = None):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise InputError("PositionMapDataset: no HDF5 files given")
        lengths, names, attrs, layout_bytes = [], [], None, None
        for p in self.paths:
            with open_checked(p) as f:
                check_fields(f, p)
                a = read_attrs(f)
                if attrs is None:
                    attrs, layout_bytes = a, f["uv_layout"][()].tobytes()
                for key in ("layout_hash", "store", "crop_format"):
                    if a.get(key) != attrs.get(key):
                        raise InputError(f"{p}: {key} {a.get(key)!r} differs from {self.paths[0]} ({attrs.get(key)!r})")
                names += list(f["name"].asstr()[:])
                lengths.append(len(f["name"]))
        self._attrs = attrs
        self._layout = UVLayout.from_bytes(layout_bytes)
        self._names = names
        self._offsets = np.cumsum([0] + lengths)
        self._model = model
        self._maker = None
        self._handles: dict[int, list[h5py.File]] = {}
        self._fast: dict[str, Any] = {}
        self._fast_read = _FAST_READ  # False: position maps through h5py's filters (tests)

    # ---- plumbing ------------------------------------------------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"], state["_maker"], state["_fast"] = {}, None, {}
        return state

    def _files(self) -> list[h5py.File]:
        pid = os.getpid()  # h5py handles must not cross a fork
        if pid not in self._handles:
            self._handles = {pid: [h5py.File(p, "r") for p in self.paths]}
        return self._handles[pid]

    def close(self) -> None:
        for handles in self._handles.values():
            for f in handles:
                f.close()
        self._handles = {}

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def layout(self) -> UVLayout:
        return self._layout

    @property
    def store(self) -> str:
        return str(self._attrs["store"])

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._attrs)

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def _gt_maker(self):
        if self._maker is None:
            from prnet_keras.data.gt import GroundTruthMaker
            from prnet_keras.geometry import load_morphable_model

            model = self._model
            if model is None:
                try:
                    model = load_morphable_model(self._attrs["model_spec"], seed=int(self._attrs.get("model_seed", 0)))
                except InputError as exc:
                    raise InputError(f"{self.paths[0]}: raw store needs its morphable model; pass model= "
                                     f"({exc})") from None
            self._maker = GroundTruthMaker(model, self._layout, self._attrs.get("crop_config") or None)
        return self._maker

    # ---- reading -------------------------------------------------------------------------
    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= int(index) < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        batch = self.read_batch([int(index) % n])
        return {k: v[0] for k, v in batch.items()}

    def read_batch(self, indices: Sequence[int], rng: np.random.Generator | Sequence | None = None,
                   meta: bool = True, out: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """Samples at ``indices`` (any order, repeats allowed), B = len(indices).

        Returns image (B, R, R, 3) uint8 crop; position_map (B, R, R, 3) float32 crop pixels;
        with ``meta`` (default) also transform (B, 3, 3) float64 image -> crop; kpt68
        (B, 68, 3) float32 image frame; pose_para (B, 7) float32; yaw (B,) float32 degrees;
        image_size (B, 2) int32 (h, w); name list[str]. ``meta=False`` (training) reads the
        two arrays only. Raw store renders GT here: with ``rng`` (training files; one
        generator, or one per index) a fresh crop perturbation, without it the stored crop
        transform. ``out``: {"image": uint8, "position_map": float32 or float16} arrays of
        shape (B, R, R, 3) to decode into instead of new ones; a uint8 (B, 2, R, R, 3)
        ``position_map`` receives the stored float16 values as byte planes (no conversion).
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices must lie in [0, {len(self)})")
        files = self._files()
        fid = np.searchsorted(self._offsets, idx, side="right") - 1
        local = idx - self._offsets[fid]
        crops_store = self.store == "crops"
        batch: dict[str, Any] = {}
        if meta or not crops_store:  # raw-store rendering needs the fit and transform
            batch = self._read_meta(files, fid, local)
            batch["name"] = [self._names[i] for i in idx]
        r = self._layout.resolution
        if out is None:
            images = np.empty((idx.size, r, r, 3), np.uint8)
            maps = np.empty((idx.size, r, r, 3), np.float32)
        else:  # position_map: float32 / float16 values, or uint8 (B, 2, R, R, 3) float16 byte planes
            images, maps = out["image"], out["position_map"]
            if (images.shape != (idx.size, r, r, 3) or images.dtype != np.uint8
                    or maps.shape not in (images.shape, (idx.size, 2, r, r, 3))):
                raise ValueError(f"read_batch out: expected ({idx.size}, {r}, {r}, 3) uint8 and float arrays")
            if not crops_store and maps.dtype == np.uint8:
                raise ValueError("read_batch out: byte planes are for crops-store files")
        if crops_store:
            rows = self._row_readers(files)
            jpegs = self._jpeg_bytes(files, fid, local)
            for b, (k, j) in enumerate(zip(fid, local)):
                rows[k](int(j), images[b], maps[b], jpegs.get((int(k), int(j))))
        else:
            rngs = rng if isinstance(rng, (list, tuple)) else [rng] * idx.size
            for b, (k, j) in enumerate(zip(fid, local)):
                images[b], maps[b], batch["transform"][b] = self._render_raw(files[k], int(j), batch, b, rngs[b])
        batch["image"], batch["position_map"] = images, maps
        return batch

    @staticmethod
    def _read_meta(files: list[h5py.File], fid: np.ndarray, local: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, list] = {k: [None] * fid.size for k in ("transform", "kpt68", "pose_para", "yaw", "image_size")}
        for k in np.unique(fid):
            pos = np.flatnonzero(fid == k)
            uniq, inv = np.unique(local[pos], return_inverse=True)
            for key in out:
                vals = files[k][key][uniq] if uniq.size > 1 else files[k][key][uniq[0]][None]
                for p, j in zip(pos, inv):
                    out[key][p] = vals[j]
        return {key: np.stack(v) for key, v in out.items()}

    def _row_readers(self, files: list[h5py.File]) -> list:
        """Per file: ``read(j, image_out, map_out, stored_jpeg=None)`` for the crops store (cached per process)."""
        key = os.getpid()
        if self._fast.get("key") != key:
            readers = [self._row_reader(f) for f in files]
            self._fast = {"key": key, "readers": [r for r, _ in readers], "modes": [m for _, m in readers]}
        return self._fast["readers"]

    def read_modes(self) -> list[tuple[str, str]]:
        """Per file: how (crop, position_map) rows are read in this process.

        "deflate" / "plain": :func:`read_chunk_into`; "jpeg": OpenCV decode; "h5py": h5py's
        own pipeline (other filters, or ``_fast_read`` False for tests).
        """
        self._row_readers(self._files())
        return list(self._fast["modes"])

    @staticmethod
    def _jpeg_bytes(files: list[h5py.File], fid: np.ndarray, local: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
        """(file, row) -> stored JPEG bytes of the batch, one h5py read per file (a read per
        row costs ~5x more in h5py's per-call overhead); empty for raw-array crops."""
        out: dict[tuple[int, int], np.ndarray] = {}
        for k in np.unique(fid):
            crop = files[k]["crop"]
            if crop.ndim != 1:
                continue
            rows = np.unique(local[fid == k])
            values = crop[rows] if rows.size > 1 else [crop[int(rows[0])]]
            out.update({(int(k), int(j)): v for j, v in zip(rows, values)})
        return out

    def _row_reader(self, f: h5py.File):
        crop, pmap = f["crop"], f["position_map"]
        jpeg = crop.ndim == 1
        crop_mode = None if jpeg or not self._fast_read else fast_chunks(crop)
        map_mode = fast_chunks(pmap) if self._fast_read else None
        crop_layout, map_layout = (crop.dtype, crop.shape), (pmap.dtype, pmap.shape)

        def read(j: int, image: np.ndarray, position_map: np.ndarray, stored: np.ndarray | None = None) -> None:
            if crop_mode:
                read_chunk_into(crop, j, image, crop_mode, crop_layout)
            else:
                decode_crop(crop[j] if stored is None else stored, out=image)
            if map_mode:
                read_chunk_into(pmap, j, position_map, map_mode, map_layout)
            else:
                put_values(position_map, pmap[j])

        return read, ("jpeg" if jpeg else crop_mode or "h5py", map_mode or "h5py")

    def _render_raw(self, f: h5py.File, j: int, batch: dict, b: int, rng: np.random.Generator | None):
        from prnet_keras.data.sources import Fit, decode_image

        maker = self._gt_maker()
        image = decode_image(f["image"][j].tobytes(), batch["name"][b])
        fit = Fit(batch["pose_para"][b], f["shape_para"][j], f["exp_para"][j])
        perturb = rng is not None and self._attrs.get("buildmode") == "train"
        gt = maker.make(image, fit, rng=rng if perturb else None, transform=None if perturb else batch["transform"][b])
        return gt["crop"], gt["position_map"], gt["transform"]
