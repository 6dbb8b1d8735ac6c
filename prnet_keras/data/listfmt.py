"""The seed's list format: 256x256 crops + position maps listed in ``trainDataLabel.txt``.

face3d's generation script (and the PRNet training scripts that read its output) keeps each
training sample as a crop image (``.jpg``) and its position map (``.npy``, (256, 256, 3),
x, y, z in crop pixels) and lists them one sample per line::

    Root/img1.jpg Root/img1.npy

Relative paths are taken from the list file's folder. The list carries no UV layout, so a
build from it needs ``--uv-data`` (the layout the maps were rendered in). Per sample the HDF5
row gets: the crop and map as given, the identity crop transform (the crop *is* the image),
``kpt68`` read from the map at the layout's landmark pixels, and ``pose_para``/``yaw`` from a
similarity fit of the map's face vertices to the layout's canonical face (as inference does).

:func:`export_list` writes that format from one of our files: ``<name>.jpg`` (a JPEG crop
store's bytes, unchanged) or ``<name>.png`` (lossless, for raw crops or a raw store),
``<name>.npy`` float32 crop pixels, ``trainDataLabel.txt`` (paths relative to its folder, or
absolute) and ``uv_layout.npz``, the file's UV layout (what ``--uv-data`` wants to build it
back). Round trip HDF5 -> list -> HDF5 keeps names, crops and maps bit-identical.
"""

from __future__ import annotations

import dataclasses
import io
import os
import time
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from prnet_keras import LABEL_SCALE
from prnet_keras.data.images import MAX_IMAGE_PIXELS, decode_image
from prnet_keras.data.writer import append_rows, create_file, encode_chunk, encode_jpeg
from prnet_keras.errors import InputError
from prnet_keras.geometry import UVLayout, estimate_pose_para, from_image
from prnet_keras.utils import atomic_path, atomic_write_bytes, atomic_write_text, npy_header

LIST_NAME = "trainDataLabel.txt"
LAYOUT_NAME = "uv_layout.npz"
_MAX_LIST_BYTES = 1 << 30


@dataclasses.dataclass(frozen=True)
class ListEntry:
    """One line of a list: sample name (image path relative to the list's folder, without
    extension), absolute image / map paths, the line as written, and a parse error (or "")."""

    name: str
    image_path: str
    map_path: str
    relpath: str
    error: str = ""


def find_list(source: str | os.PathLike) -> Path | None:
    """The list file of ``source`` (a ``.txt`` file, or a folder holding ``trainDataLabel.txt``)."""
    p = Path(source)
    if p.suffix.lower() == ".txt" and not p.is_dir():
        return p
    if p.is_dir() and (p / LIST_NAME).is_file():
        return p / LIST_NAME
    return None


def read_list(path: str | os.PathLike) -> list[ListEntry]:
    """Entries of a list file, in its order; malformed or duplicate lines come back with ``error``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--source {path}: list file not found")
    if path.stat().st_size > _MAX_LIST_BYTES:
        raise InputError(f"{path}: {path.stat().st_size} bytes is more than a list file can be (1 GiB)")
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable text list ({exc})") from None
    root = path.resolve().parent
    entries, seen = [], set()
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            entries.append(ListEntry(f"line {i}", "", "", line, f"{path.name} line {i}: expected 'IMAGE MAP', "
                                     f"got {len(parts)} fields"))
            continue
        img, pmap = (Path(q) if Path(q).is_absolute() else root / q for q in parts)
        try:
            name = PurePosixPath(img.relative_to(root).as_posix()).with_suffix("").as_posix()
        except ValueError:
            name = PurePosixPath(img.as_posix().lstrip("/")).with_suffix("").as_posix()
        error = f"{path.name} line {i}: duplicate sample name {name!r}" if name in seen else ""
        seen.add(name)
        entries.append(ListEntry(name, str(img), str(pmap), parts[0], error))
    if not entries:
        raise InputError(f"{path}: no samples listed (expected lines 'IMAGE.jpg MAP.npy')")
    return entries


def load_map(path: str | os.PathLike, resolution: int) -> np.ndarray:
    """A ``.npy`` position map (R, R, 3) float32; its header is checked before the data is read."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: position map not found")
    try:
        with open(p, "rb") as f:
            shape, dtype = npy_header(f)
    except Exception:
        raise InputError(f"{p}: not a .npy file") from None
    want = (resolution, resolution, 3)
    if tuple(shape) != want or dtype.kind not in "fiu":
        raise InputError(f"{p}: position map is {dtype} {tuple(shape)}, expected a numeric {want} array")
    a = np.load(p, allow_pickle=False).astype(np.float32)
    if not np.all(np.isfinite(a)) or np.abs(a).max() > 16 * resolution:
        raise InputError(f"{p}: position map holds NaN, inf or values far outside the crop")
    return a


# ---- building HDF5 from a list -----------------------------------------------------------------
_STATE: dict[str, Any] = {}


def init_list_worker(layout: UVLayout, settings: dict, attrs: dict, in_pool: bool = False) -> None:
    if in_pool:
        import cv2

        cv2.setNumThreads(1)
    _STATE.update(layout=layout, layout_bytes=layout.to_bytes(), settings=settings, attrs=attrs)


def _row(entry: ListEntry, layout: UVLayout, settings: dict) -> dict[str, Any]:
    r = layout.resolution
    data = Path(entry.image_path).read_bytes() if Path(entry.image_path).is_file() else None
    if data is None:
        raise InputError(f"{entry.image_path}: crop image not found")
    crop = decode_image(data, entry.name, settings["max_image_pixels"])
    if crop.shape[:2] != (r, r):
        raise InputError(f"{entry.image_path}: crop is {crop.shape[1]}x{crop.shape[0]}, expected {r}x{r}")
    pmap = load_map(entry.map_path, r)
    stored = pmap.astype(np.float16)
    if not np.all(np.isfinite(stored)):
        raise InputError(f"{entry.map_path}: position map does not fit float16")
    verts = layout.vertices_from_map(stored.astype(np.float32))
    pose = estimate_pose_para(layout.canonical_vertices, from_image(verts, r)).reshape(7)
    compression = settings["compression"]
    if settings["crop_format"] == "jpeg":
        if data[:2] == b"\xff\xd8":
            stored_crop = np.frombuffer(data, np.uint8)
        else:
            stored_crop = encode_jpeg(crop, settings["jpeg_quality"])
    else:
        stored_crop = encode_chunk(crop, compression)
    return {
        "name": entry.name, "source_path": entry.relpath, "transform": np.eye(3), "pose_para": pose,
        "yaw": np.float32(np.degrees(pose[1])), "kpt68": layout.keypoints_from_map(stored.astype(np.float32)),
        "image_size": np.array([r, r], np.int32), "crop": stored_crop,
        "position_map": encode_chunk(stored, compression),
    }


def list_chunk(task: tuple[int, list[ListEntry], str]) -> tuple[int, int, list, dict[str, float]]:
    """One part file of a list build (same contract as ``data.worker.build_chunk``)."""
    k, entries, part_path = task
    t0 = time.thread_time()
    rows, skipped = [], []
    for e in entries:
        try:
            if e.error:
                raise InputError(e.error)
            rows.append(_row(e, _STATE["layout"], _STATE["settings"]))
        except Exception as exc:
            msg = str(exc).replace("\n", " ").strip()
            skipped.append((e.name, e.relpath, msg if isinstance(exc, InputError) else f"{type(exc).__name__}: {msg}"))
    t1 = time.thread_time()
    with atomic_path(part_path) as tmp:
        with create_file(tmp, _STATE["attrs"], _STATE["layout"], _STATE["layout_bytes"]) as f:
            append_rows(f, rows, skipped)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
    return k, len(rows), skipped, {"decode": t1 - t0, "write": time.thread_time() - t1}


def build_list_hdf5(source: str | os.PathLike, out: str | os.PathLike, uv_data: str | os.PathLike | None = None,
                    buildmode: str = "train", store: str = "crops", workers: int = 1, shard=None,
                    limit: int | None = None, jpeg_quality: int = 95, resume: bool = False, overwrite: bool = False,
                    crop_format: str = "jpeg", compression: str = "gzip", commit_every: int = 64,
                    progress: bool = False, rotate=None, max_image_pixels: int = MAX_IMAGE_PIXELS) -> Any:
    """Build a position-map HDF5 file from a list (module docstring); a :class:`BuildSummary`."""
    from prnet_keras.data.build import _settings, parse_shard, run_build, shard_slice
    from prnet_keras.geometry import load_uv_layout

    t_start = time.perf_counter()
    list_path = find_list(source)
    out = Path(out)
    if uv_data is None:
        raise InputError(f"--source {list_path}: a list carries no UV layout; pass --uv-data (the layout its maps "
                         "were rendered in: PRNet's uv-data folder or a saved layout .npz)")
    if store != "crops":
        raise InputError(f"--store {store}: a list holds crops and maps only (no fits); use --store crops")
    if rotate is not None:
        raise InputError("--rotate: a list holds finished crops and maps; rotate the source dataset instead")
    if out.exists() and not overwrite:
        raise InputError(f"{out}: exists; pass --overwrite to replace it")
    if int(workers) < 1:
        raise InputError(f"--workers {workers}: expected >= 1")
    shard_t = parse_shard(shard)
    entries = read_list(list_path)
    entries = entries[: int(limit)] if limit else entries
    entries = entries[shard_slice(len(entries), shard_t)]
    layout = load_uv_layout(uv_data, None)
    settings = _settings(list_path, "list", "", uv_data, buildmode, store, crop_format, 0, jpeg_quality, shard_t,
                         limit, len(entries), commit_every, compression, max_image_pixels=max_image_pixels)
    attrs = {
        "store": "crops", "crop_format": settings["crop_format"], "compression": compression, "buildmode": buildmode,
        "source_layout": "list", "seed": 0, "shard": settings["shard"], "model_name": "", "model_spec": "",
        "model_seed": 0, "n_shape": 0, "n_exp": 0, "triangles": "", "layout_source": layout.source,
        "label_scale": LABEL_SCALE, "resolution": layout.resolution, "crop_config": {},
        "args": {k: settings[k] for k in ("source", "layout", "uv_data", "buildmode", "store", "crop_format",
                                          "jpeg_quality", "limit")},
    }
    return run_build(entries, out, settings, attrs, layout, int(workers), resume, overwrite, progress, t_start,
                     init_list_worker, (layout, settings, attrs), list_chunk, (layout, settings, attrs))


# ---- exporting a list --------------------------------------------------------------------------
def export_list(hdf5: str | os.PathLike, out: str | os.PathLike, absolute: bool = False,
                batch_size: int = 32) -> tuple[Path, int]:
    """Write the crops and maps of a position-map file as ``out/<name>.jpg|png + .npy``,
    ``out/trainDataLabel.txt`` and ``out/uv_layout.npz``. Returns (list path, samples written)."""
    import cv2
    import h5py

    from prnet_keras.data.hdf5 import PositionMapDataset, open_checked, read_attrs

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    with open_checked(hdf5) as f:
        attrs = read_attrs(f)
        jpeg_bytes = attrs.get("store") == "crops" and attrs.get("crop_format") == "jpeg"
    ds = PositionMapDataset(hdf5)
    lines = []
    h5 = None
    try:
        h5 = h5py.File(hdf5, "r") if jpeg_bytes else None
        for start in range(0, len(ds), batch_size):
            idx = list(range(start, min(len(ds), start + batch_size)))
            batch = ds.read_batch(idx, meta=True)
            for b, i in enumerate(idx):
                name = _safe_name(batch["name"][b])
                if h5 is not None:
                    data, img_rel = h5["crop"][i].tobytes(), name + ".jpg"
                else:
                    ok, buf = cv2.imencode(".png", cv2.cvtColor(batch["image"][b], cv2.COLOR_RGB2BGR))
                    data, img_rel = buf.tobytes(), name + ".png"
                map_rel = name + ".npy"
                atomic_write_bytes(out / img_rel, data)
                npy = io.BytesIO()
                np.save(npy, batch["position_map"][b].astype(np.float32), allow_pickle=False)
                atomic_write_bytes(out / map_rel, npy.getvalue())
                if absolute:
                    img_rel, map_rel = str((out / img_rel).resolve()), str((out / map_rel).resolve())
                lines.append(f"{img_rel} {map_rel}")
    finally:
        ds.close()
        if h5 is not None:
            h5.close()
    ds.layout.save(out / LAYOUT_NAME)
    list_path = out / LIST_NAME
    atomic_write_text(list_path, "\n".join(lines) + ("\n" if lines else ""))
    return list_path, len(lines)


def _safe_name(name: str) -> str:
    """A sample name as a relative file path: no spaces (the list splits on them), no '..'."""
    parts = [p for p in PurePosixPath(name.replace(" ", "_")).parts if p not in ("", ".", "..", "/")]
    if not parts:
        raise InputError(f"sample name {name!r} is not usable as a file name")
    return "/".join(parts)
