"""Readers of 300W-LP and AFLW2000-3D: from the extracted folder or straight from the zip.

A dataset is a set of image + ``.mat`` pairs (same folder, same stem). Listing is
deterministic (sorted by sample name), ignores ``landmarks/`` folders, hidden files and
macOS junk, and reports images that have no ``.mat`` (``SampleRef.mat_path is None``) so
the builder can skip them with a reason. Sample names are paths relative to the dataset
root without extension (``AFW/AFW_134212_1_0``, ``image00002``); they are the same whether
the data is read from the folder or from the zip, which keeps per-sample seeds stable.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import zipfile
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import scipy.io

from prnet_keras.errors import InputError

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
LAYOUTS = ("300wlp", "aflw2000")
# 300W-LP subset folders (AFW, HELEN, IBUG, LFPW and their _Flip twins).
_SUBSET_RE = re.compile(r"^(AFW|HELEN|IBUG|LFPW)(_Flip)?$", re.IGNORECASE)
_300WLP_NAME_RE = re.compile(r"^(AFW|HELEN|IBUG|LFPW)_.*_\d+_\d+$", re.IGNORECASE)
_AFLW_NAME_RE = re.compile(r"^image\d+$", re.IGNORECASE)
_IGNORED_DIRS = {"landmarks", "__macosx"}


@dataclasses.dataclass(frozen=True)
class SampleRef:
    """One sample of a dataset.

    name: stable id, relative path from the dataset root without extension (posix).
    image_path / mat_path: file paths, or member names inside ``container`` (a zip);
    ``mat_path`` is None for an image without its ``.mat``. relpath: the image path
    relative to the dataset root (what HDF5 files store as ``source_path``, so a build from
    the zip equals one from the extracted folder).
    """

    name: str
    image_path: str
    mat_path: str | None
    container: str | None = None
    relpath: str = ""


@dataclasses.dataclass
class Fit:
    """The fields of a 300W-LP / AFLW2000-3D ``.mat`` that PRNet uses, validated.

    pose_para (7,) float32 [pitch, yaw, roll (rad), tx, ty, tz, s]; shape_para (k,) and
    exp_para (m,) float32 raw coefficients; pt3d_68 (68, 3) float32 image frame (x, y
    pixels, y down, z) or None; pt2d (K, 2) float32 image pixels or None.
    """

    pose_para: np.ndarray
    shape_para: np.ndarray
    exp_para: np.ndarray
    pt3d_68: np.ndarray | None = None
    pt2d: np.ndarray | None = None


# ---- listing ------------------------------------------------------------------------------
def _is_junk(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p.lower() in _IGNORED_DIRS for p in parts)


def _scan(source: Path) -> tuple[str | None, list[str]]:
    """All candidate file paths (posix, relative to the folder / zip root) and the container."""
    if source.is_dir():
        # Paths keep the folder's own name, like a zip's top folder, so that names agree
        # between the two and a lone subset folder (AFW_Flip/) keeps its name.
        source = source.resolve()
        files = []
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames[:] = [d for d in dirnames if not _is_junk((d,))]
            rel = Path(source.name) / Path(dirpath).relative_to(source)
            files += [(rel / f).as_posix() for f in filenames if not f.startswith(".")]
        return None, files
    if source.is_file():
        try:
            with zipfile.ZipFile(source) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(f"--source {source}: not a folder or a readable zip file ({exc})") from None
        return str(source.resolve()), [n for n in names if not _is_junk(PurePosixPath(n).parts)]
    raise InputError(f"--source {source}: no such folder or zip file")


def _dataset_root(image_paths: list[PurePosixPath], layout: str) -> PurePosixPath:
    parents = [p.parent.parts for p in image_paths]
    common: list[str] = []
    for level in zip(*parents):
        if any(x != level[0] for x in level):
            break
        common.append(level[0])
    # One 300W-LP subset on its own still keeps its folder in the names (AFW vs AFW_Flip).
    if layout == "300wlp" and common and _SUBSET_RE.match(common[-1]):
        common.pop()
    return PurePosixPath(*common) if common else PurePosixPath(".")


def _pairs(files: list[str]) -> tuple[list[PurePosixPath], set[str]]:
    images = [PurePosixPath(f) for f in files if PurePosixPath(f).suffix.lower() in IMAGE_EXTS]
    mats = {f[: -len(".mat")] for f in files if f.lower().endswith(".mat")}
    return images, mats


def _guess_layout(images: list[PurePosixPath], mats: set[str], container: str | None, source: Path) -> str:
    stems = [p.stem for p in images]
    if any(_SUBSET_RE.match(part) for p in images for part in p.parent.parts) or any(
        _300WLP_NAME_RE.match(s) for s in stems
    ):
        return "300wlp"
    if stems and all(_AFLW_NAME_RE.match(s) for s in stems):
        return "aflw2000"
    # Fall back on content: AFLW2000-3D fits carry pt3d_68, 300W-LP fits do not.
    for p in images:
        key = str(p.with_suffix(""))
        if key in mats:
            mat = load_mat_bytes(_read_bytes(container, _full(source, container, key + ".mat")), key)
            return "aflw2000" if "pt3d_68" in mat else "300wlp"
    raise InputError(f"--source {source}: found no image + .mat pairs (expected 300W-LP or AFLW2000-3D files)")


def _full(source: Path, container: str | None, rel: str) -> str:
    return rel if container else str(source.resolve().parent / rel)


def detect_layout(source: str | os.PathLike) -> str:
    """``"300wlp"`` or ``"aflw2000"`` from folder names, file names, else the ``.mat`` keys."""
    source = Path(source)
    container, files = _scan(source)
    images, mats = _pairs(files)
    return _guess_layout(images, mats, container, source)


def list_samples(source: str | os.PathLike, layout: str = "auto") -> list[SampleRef]:
    """All samples of a folder or ``.zip``, sorted by name.

    Images without a ``.mat`` are included with ``mat_path=None`` (the builder reports
    them); ``.mat`` files without an image, ``landmarks/`` and hidden files are ignored.
    """
    source = Path(source)
    if layout not in ("auto",) + LAYOUTS:
        raise InputError(f"--layout {layout}: expected auto, 300wlp or aflw2000")
    container, files = _scan(source)
    images, mats = _pairs(files)
    if not images:
        raise InputError(f"--source {source}: no images (.jpg/.png) found")
    if layout == "auto":
        layout = _guess_layout(images, mats, container, source)
    root = _dataset_root(images, layout)
    refs = []
    for p in images:
        key = str(p.with_suffix(""))
        rel = p.relative_to(root) if root != PurePosixPath(".") else p
        name = str(rel.with_suffix(""))
        mat = _full(source, container, key + ".mat") if key in mats else None
        refs.append(SampleRef(name, _full(source, container, str(p)), mat, container, str(rel)))
    refs.sort(key=lambda r: r.name)
    for a, b in zip(refs, refs[1:]):
        if a.name == b.name:
            raise InputError(f"--source {source}: two images share the sample name {a.name!r} "
                             f"({a.image_path}, {b.image_path})")
    return refs


# ---- reading ------------------------------------------------------------------------------
# One open ZipFile per (process, zip): reopening a 122k-entry zip per sample is slow, and
# handles must not cross fork boundaries.
_ZIPS: dict[tuple[int, str], zipfile.ZipFile] = {}


def _read_bytes(container: str | None, path: str) -> bytes:
    if container is None:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    key = (os.getpid(), container)
    zf = _ZIPS.get(key)
    if zf is None:
        zf = _ZIPS[key] = zipfile.ZipFile(container)
    try:
        return zf.read(path)
    except (KeyError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputError(f"{container}!{path}: cannot read zip member ({exc})") from None


def read_sample_bytes(ref: SampleRef) -> tuple[bytes, bytes]:
    """The raw (image bytes, .mat bytes) of a sample; InputError for an image without .mat."""
    if ref.mat_path is None:
        raise InputError(f"{ref.name}: image without .mat")
    return _read_bytes(ref.container, ref.image_path), _read_bytes(ref.container, ref.mat_path)


def read_image_bytes(ref: SampleRef) -> bytes:
    """The raw bytes of a sample's image (with or without a ``.mat``)."""
    return _read_bytes(ref.container, ref.image_path)


def read_beside(ref: SampleRef, suffix: str, max_bytes: int | None = None) -> bytes:
    """Bytes of the file beside the sample's image with another suffix (``.pts``, ``.npy``).

    InputError when it is missing or larger than ``max_bytes``.
    """
    path = ref.image_path[: -len(PurePosixPath(ref.image_path).suffix)] + suffix
    if ref.container is None:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{ref.name}: no {suffix} file beside the image ({p.name} not found)")
        if max_bytes is not None and p.stat().st_size > max_bytes:
            raise InputError(f"{p}: {p.stat().st_size} bytes, more than the {max_bytes} expected of a {suffix} file")
    else:
        key = (os.getpid(), ref.container)
        zf = _ZIPS.get(key) or _ZIPS.setdefault(key, zipfile.ZipFile(ref.container))
        try:
            info = zf.getinfo(path)
        except KeyError:
            raise InputError(f"{ref.name}: no {suffix} file beside the image ({path} not in the zip)") from None
        if max_bytes is not None and info.file_size > max_bytes:
            raise InputError(f"{ref.container}!{path}: {info.file_size} bytes, more than the {max_bytes} expected")
    return _read_bytes(ref.container, path)


def _jpeg_complete(data: bytes) -> bool:
    # libjpeg only warns on a truncated file and returns a grey-filled image, so check the
    # end-of-image marker (tolerating a short trailer some writers append).
    return b"\xff\xd9" in data[-1024:]


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Image file bytes -> (H, W, 3) uint8 RGB. InputError for truncated or non-image data."""
    if data[:2] == b"\xff\xd8" and not _jpeg_complete(data):
        raise InputError(f"{name}: truncated JPEG (no end-of-image marker)")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.ndim != 3 or img.size == 0:
        raise InputError(f"{name}: not a decodable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_mat_bytes(data: bytes, name: str = "mat") -> dict[str, np.ndarray]:
    """``.mat`` bytes -> dict of arrays (MATLAB header keys dropped)."""
    try:
        mat = scipy.io.loadmat(io.BytesIO(data))
    except Exception as exc:  # scipy raises many types for corrupt files
        raise InputError(f"{name}.mat: not a readable MATLAB file ({exc})") from None
    return {k: v for k, v in mat.items() if not k.startswith("__")}


def _field(mat: dict, key: str, name: str, size: int | None, required: bool = True) -> np.ndarray | None:
    if key not in mat:
        if required:
            raise InputError(f"{name}.mat: missing key {key!r}")
        return None
    try:
        a = np.asarray(mat[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name}.mat: {key} is not numeric") from None
    if size is not None and a.size != size:
        raise InputError(f"{name}.mat: {key} has shape {a.shape}, expected {size} values")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name}.mat: {key} contains NaN or inf")
    return a


def parse_fit(mat: dict, name: str = "sample", n_shape: int | None = None, n_exp: int | None = None) -> Fit:
    """Validate a fit dict (keys as in 300W-LP) into a :class:`Fit`; InputError names the field."""
    pose = _field(mat, "Pose_Para", name, 7)
    shape = _field(mat, "Shape_Para", name, n_shape)
    exp = _field(mat, "Exp_Para", name, n_exp)
    pt3d = _field(mat, "pt3d_68", name, 204, required=False)
    if pt3d is not None:
        if pt3d.shape not in ((3, 68), (68, 3)):
            raise InputError(f"{name}.mat: pt3d_68 has shape {pt3d.shape}, expected (3, 68)")
        pt3d = (pt3d.T if pt3d.shape == (3, 68) else pt3d).astype(np.float32)
    pt2d = _field(mat, "pt2d", name, None, required=False)
    if pt2d is not None:
        pt2d = (pt2d if pt2d.ndim == 2 and pt2d.shape[0] != 2 else pt2d.reshape(2, -1).T).astype(np.float32)
    return Fit(pose.reshape(7).astype(np.float32), shape.reshape(-1).astype(np.float32),
               exp.reshape(-1).astype(np.float32), pt3d, pt2d)


def read_sample(ref: SampleRef) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(image (H, W, 3) uint8 RGB, .mat dict) of a sample; InputError with name and reason."""
    img_bytes, mat_bytes = read_sample_bytes(ref)
    return decode_image(img_bytes, ref.name), load_mat_bytes(mat_bytes, ref.name)
