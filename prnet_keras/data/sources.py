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
import os
import re
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from prnet_keras.data.images import MAX_IMAGE_PIXELS, decode_image, max_file_bytes
from prnet_keras.errors import InputError, LimitError
from prnet_keras.matfile import MAX_MAT_BYTES, load_mat

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
LAYOUTS = ("300wlp", "aflw2000")
# 300W-LP subset folders (AFW, HELEN, IBUG, LFPW and their _Flip twins).
_SUBSET_RE = re.compile(r"^(AFW|HELEN|IBUG|LFPW)(_Flip)?$", re.IGNORECASE)
_300WLP_NAME_RE = re.compile(r"^(AFW|HELEN|IBUG|LFPW)_.*_\d+_\d+$", re.IGNORECASE)
_AFLW_NAME_RE = re.compile(r"^image\d+$", re.IGNORECASE)
_IGNORED_DIRS = {"landmarks", "__macosx"}
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
# Zip members inflating more than this many times their stored size (and above 1 MiB) are
# skipped as likely zip bombs: photos and fits compress far less.
MAX_ZIP_RATIO = 200


@dataclasses.dataclass(frozen=True)
class SampleRef:
    """One sample of a dataset.

    name: stable id, relative path from the dataset root without extension (posix).
    image_path / mat_path: file paths, or member names inside ``container`` (a zip);
    ``mat_path`` is None for an image without its ``.mat``. relpath: the image path
    relative to the dataset root (what HDF5 files store as ``source_path``, so a build from
    the zip equals one from the extracted folder). problem: why the sample cannot be used
    although it was listed (e.g. a zip member whose name leaves the archive), else None.
    """

    name: str
    image_path: str
    mat_path: str | None
    container: str | None = None
    relpath: str = ""
    problem: str | None = None


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


def unsafe_member_name(name: str) -> str | None:
    """Why a zip member name must not be used (absolute, drive letter, ``..``), else None."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or _DRIVE_RE.match(norm):
        return "absolute path"
    if ".." in norm.split("/"):
        return "path leaves the archive (..)"
    return None


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
        # unsafe names are kept (to be reported), whatever they look like
        kept = [n for n in names if unsafe_member_name(n) or not _is_junk(PurePosixPath(n).parts)]
        return str(source.resolve()), kept
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


def _split_unsafe(files: list[str], container: str | None) -> tuple[list[str], list[SampleRef]]:
    """(usable names, refs reporting the image / .mat members whose names are unsafe)."""
    if container is None:
        return files, []
    safe, bad = [], []
    for f in files:
        why = unsafe_member_name(f)
        if why is None:
            safe.append(f)
        elif f.lower().endswith(IMAGE_EXTS + (".mat",)):
            name = f if f.lower().endswith(".mat") else str(PurePosixPath(f).with_suffix(""))
            bad.append(SampleRef(name, f, None, container, f, f"zip member {f!r} skipped: {why}"))
    return safe, bad


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
            mat = load_mat_bytes(read_member(container, _full(source, container, key + ".mat"), MAX_MAT_BYTES), key)
            return "aflw2000" if "pt3d_68" in mat else "300wlp"
    raise InputError(f"--source {source}: found no image + .mat pairs (expected 300W-LP or AFLW2000-3D files)")


def _full(source: Path, container: str | None, rel: str) -> str:
    return rel if container else str(source.resolve().parent / rel)


def detect_layout(source: str | os.PathLike) -> str:
    """``"300wlp"`` or ``"aflw2000"`` from folder names, file names, else the ``.mat`` keys."""
    source = Path(source)
    container, files = _scan(source)
    images, mats = _pairs(_split_unsafe(files, container)[0])
    return _guess_layout(images, mats, container, source)


def list_samples(source: str | os.PathLike, layout: str = "auto") -> list[SampleRef]:
    """All samples of a folder or ``.zip``, sorted by name.

    Images without a ``.mat`` are included with ``mat_path=None`` (the builder reports
    them); ``.mat`` files without an image, ``landmarks/`` and hidden files are ignored.
    Zip members whose names are absolute or leave the archive are listed with their
    ``problem`` (so the builder reports them too) and never read.
    """
    source = Path(source)
    if layout not in ("auto",) + LAYOUTS:
        raise InputError(f"--layout {layout}: expected auto, 300wlp or aflw2000")
    container, files = _scan(source)
    files, unsafe = _split_unsafe(files, container)
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
    refs += unsafe
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


def read_member(container: str | None, path: str, max_bytes: int) -> bytes:
    """Bytes of a file, or of a member of the zip ``container``, refused above ``max_bytes``.

    Zip members are checked on what they declare (size, compression ratio) before anything
    is inflated, and on what they actually inflate to while reading.
    """
    if container is None:
        try:
            size = os.stat(path).st_size
            if size > max_bytes:
                raise LimitError(f"{path}: file of {size} bytes, more than the limit {max_bytes}")
            return Path(path).read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    where = f"{container}!{path}"
    key = (os.getpid(), container)
    zf = _ZIPS.get(key)
    try:
        if zf is None:
            zf = _ZIPS[key] = zipfile.ZipFile(container)
        info = zf.getinfo(path)
        if info.file_size > max_bytes:
            raise LimitError(f"{where}: zip member declares {info.file_size} bytes, more than the limit {max_bytes}")
        if info.file_size > 2**20 and info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1):
            raise LimitError(f"{where}: zip member inflates {info.file_size // max(info.compress_size, 1)}:1, "
                             f"more than {MAX_ZIP_RATIO}:1 (a zip bomb?)")
        with zf.open(info) as fh:
            data = fh.read(max_bytes + 1)  # zipfile stops at the declared size and checks the CRC
    except LimitError:
        raise
    except (KeyError, zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError, ValueError) as exc:
        raise InputError(f"{where}: cannot read zip member ({exc})") from None
    if len(data) != info.file_size:
        raise InputError(f"{where}: zip member holds {len(data)} bytes, its header declares {info.file_size}")
    return data


def read_sample_bytes(ref: SampleRef, max_image_pixels: int = MAX_IMAGE_PIXELS,
                      max_mat_bytes: int = MAX_MAT_BYTES) -> tuple[bytes, bytes]:
    """The raw (image bytes, .mat bytes) of a sample, each within its size limit; InputError for
    an image without .mat or a sample listed with a ``problem``."""
    if ref.problem:
        raise InputError(ref.problem)
    if ref.mat_path is None:
        raise InputError(f"{ref.name}: image without .mat")
    return (read_member(ref.container, ref.image_path, max_file_bytes(max_image_pixels)),
            read_member(ref.container, ref.mat_path, max_mat_bytes))


def read_image_bytes(ref: SampleRef, max_image_pixels: int = MAX_IMAGE_PIXELS) -> bytes:
    """The raw bytes of a sample's image (with or without a ``.mat``), within the size an image
    of at most ``max_image_pixels`` can take."""
    if ref.problem:
        raise InputError(ref.problem)
    return read_member(ref.container, ref.image_path, max_file_bytes(max_image_pixels))


def read_beside(ref: SampleRef, suffix: str, max_bytes: int | None = None) -> bytes:
    """Bytes of the file beside the sample's image with another suffix (``.pts``, ``.npy``).

    InputError when it is missing or larger than ``max_bytes`` (default: the .mat budget).
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
    return read_member(ref.container, path, MAX_MAT_BYTES if max_bytes is None else max_bytes)


def load_mat_bytes(data: bytes, name: str = "mat", max_bytes: int = MAX_MAT_BYTES) -> dict[str, np.ndarray]:
    """``.mat`` bytes -> dict of arrays (MATLAB header keys dropped), within ``max_bytes``."""
    return load_mat(data, f"{name}.mat", max_bytes)


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
    scale, angles = float(pose.reshape(7)[6]), pose.reshape(7)[:3]
    if not scale > 0:
        raise InputError(f"{name}.mat: Pose_Para scale {scale:.4g} is not positive")
    if np.abs(angles).max() > 2 * np.pi:
        raise InputError(f"{name}.mat: Pose_Para angles {np.round(angles, 3).tolist()} are not radians in [-2pi, 2pi]")
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


def read_sample(ref: SampleRef, max_image_pixels: int = MAX_IMAGE_PIXELS,
                max_mat_bytes: int = MAX_MAT_BYTES) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(image (H, W, 3) uint8 RGB, upright, .mat dict) of a sample; InputError with name and reason."""
    img_bytes, mat_bytes = read_sample_bytes(ref, max_image_pixels, max_mat_bytes)
    return decode_image(img_bytes, ref.name, max_image_pixels), load_mat_bytes(mat_bytes, ref.name, max_mat_bytes)
