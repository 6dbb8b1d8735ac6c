"""Your own training data: images + 68 landmarks -> 3DMM fits in the 300W-LP ``.mat`` layout.

:func:`fit_folder` reads every image of a folder or zip, takes its 68 landmarks from one of

  ``pt2d``     the ``.mat`` beside the image (300W-LP's 2x68 annotation);
  ``pt3d_68``  the ``.mat`` beside the image (AFLW2000-3D's 3x68 points; z is used);
  ``pts``      an iBUG ``.pts`` file beside the image (the 300-W format; 1-based pixel
               coordinates, as read by the usual tools);
  ``npy``      a ``.npy`` file beside the image, (68, 2|3) or (2|3, 68) 0-based pixels
               (z, when present, is used);
  a callable   ``provider(image_rgb) -> (68, 2|3)`` (e.g. a trained network, see
               ``prnet_keras.inference.landmarks``), raising InputError when it finds no face,

fits the morphable model to them (:func:`prnet_keras.geometry.fitting.fit_landmarks`, batched
per chunk) and writes the image (bytes unchanged) and a ``.mat`` with ``Pose_Para``,
``Shape_Para``, ``Exp_Para``, ``pt2d`` (2x68: the landmarks' x, y), ``roi`` and the other keys
of a 300W-LP file with neutral values (``Tex_Para`` 0, ``Color_Para`` gains 1 / offsets 0 /
contrast 1, ``Illum_Para`` white ambient light only) under the same relative path in ``out``.
``prnet-build-dataset --source OUT --bfm <the same model>`` then builds HDF5 from it like
300W-LP. ``out/fit_info.json`` records the settings and the model's fingerprint.

Skipped, with their reason, in ``out/skipped.csv``: unreadable images, missing or malformed
landmark files, fewer or more than 68 points, no face found, and fits whose residual (NME,
sqrt(w·h) normalisation) is above ``max_residual`` (default 8 %: the mean-only BFM fits real
300-W annotations to 1.5-4.5 %, a wrong or mislabelled landmark set lands far above).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from prnet_keras import __version__
from prnet_keras.data import synth_render as sr
from prnet_keras.data.jobs import JobSummary, run_folder_job
from prnet_keras.data.sources import (
    SampleRef, decode_image, list_samples, load_mat_bytes, read_beside, read_image_bytes, read_sample_bytes,
)
from prnet_keras.data.fitcheck import FIT_INFO_FILE, model_fingerprint
from prnet_keras.data.synth import mat_bytes, roi_box, sample_mat
from prnet_keras.errors import InputError
from prnet_keras.geometry import MorphableModel, load_morphable_model
from prnet_keras.geometry.fitting import DEFAULT_REG_EXP, DEFAULT_REG_SHAPE, check_fit_options, fit_landmarks
from prnet_keras.utils import atomic_write_bytes, npy_header, write_json

LANDMARK_KINDS = ("pt2d", "pt3d_68", "pts", "npy")
CONTOUR_DEFAULT = {"pt2d": True, "pts": True}  # 300-W style annotations: jaw points on the outline
DEFAULT_MAX_RESIDUAL = 0.08
INFO_FILE = FIT_INFO_FILE  # settings + the model's fingerprint, which data.fitcheck checks at build time
NEUTRAL_COLOR = np.array([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]], np.float32)
NEUTRAL_ILLUM = np.array([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 20.0]])
_MAX_LANDMARK_FILE = 1 << 20  # bytes: a 68-point file is a few kB

_STATE: dict[str, Any] = {}


# ---- landmark files ----------------------------------------------------------------------------
def as_68_landmarks(points: np.ndarray, what: str) -> np.ndarray:
    """(68, 2|3) or (2|3, 68) points -> (68, 2|3) float64; InputError naming ``what`` for
    another shape or count, NaN or inf."""
    p = np.asarray(points, np.float64)
    if p.ndim == 2 and p.shape[0] in (2, 3) and p.shape[1] != p.shape[0] and p.shape[1] not in (2, 3):
        p = p.T
    if p.ndim != 2 or p.shape[1] not in (2, 3):
        raise InputError(f"{what}: expected (68, 2|3) landmarks, got shape {np.shape(points)}")
    if p.shape[0] != 68:
        raise InputError(f"{what}: {'too few' if p.shape[0] < 68 else 'too many'} landmarks "
                         f"({p.shape[0]}, expected 68)")
    if not np.all(np.isfinite(p)):
        raise InputError(f"{what}: landmarks contain NaN or inf")
    return p


def parse_pts(data: bytes, name: str = "landmarks.pts", one_based: bool = True) -> np.ndarray:
    """iBUG ``.pts`` bytes -> (n, 2) float64 0-based pixels (``one_based``: subtract 1)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{name}: not a text .pts file") from None
    m = re.search(r"n_points\s*:\s*(\d+)\s*\{(.*?)\}", text, re.S)
    if m is None:
        raise InputError(f"{name}: not an iBUG .pts file (expected 'n_points: N' and a {{ ... }} block)")
    try:
        values = np.array([float(v) for v in m.group(2).split()], np.float64)
    except ValueError:
        raise InputError(f"{name}: non-numeric coordinates") from None
    n = int(m.group(1))
    if values.size != 2 * n:
        raise InputError(f"{name}: n_points says {n} but the block holds {values.size} numbers")
    return values.reshape(n, 2) - (1.0 if one_based else 0.0)


def parse_npy_landmarks(data: bytes, name: str = "landmarks.npy") -> np.ndarray:
    """``.npy`` bytes -> landmark array; the header's shape and dtype are checked before reading."""
    import io

    buf = io.BytesIO(data)
    try:
        shape, dtype = npy_header(buf)
    except Exception:
        raise InputError(f"{name}: not a .npy file") from None
    if dtype.kind not in "fiu" or len(shape) != 2 or int(np.prod(shape)) > 3 * 68:
        raise InputError(f"{name}: expected a numeric (68, 2|3) array, got {dtype} {shape}")
    buf.seek(0)
    try:
        return np.load(buf, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"{name}: unreadable .npy ({exc})") from None


def read_landmarks(ref: SampleRef, kind: str) -> np.ndarray:
    """(68, 2|3) float64 image-frame landmarks of one sample from the file kind ``kind``."""
    if kind in ("pt2d", "pt3d_68"):
        if ref.mat_path is None:
            raise InputError(f"{ref.name}: no .mat beside the image (needed for --landmarks {kind})")
        mat = load_mat_bytes(read_sample_bytes(ref)[1], ref.name)
        if kind not in mat:
            raise InputError(f"{ref.name}.mat: no {kind} key")
        return as_68_landmarks(mat[kind], f"{ref.name}.mat {kind}")
    if kind == "pts":
        points = parse_pts(read_beside(ref, ".pts", _MAX_LANDMARK_FILE), f"{ref.name}.pts")
        return as_68_landmarks(points, f"{ref.name}.pts")
    if kind == "npy":
        data = read_beside(ref, ".npy", _MAX_LANDMARK_FILE)
        return as_68_landmarks(parse_npy_landmarks(data, f"{ref.name}.npy"), f"{ref.name}.npy")
    raise InputError(f"--landmarks {kind}: expected one of {', '.join(LANDMARK_KINDS)} or model:PATH")


def fitted_mat(pose_para: np.ndarray, shape_para: np.ndarray, exp_para: np.ndarray, landmarks: np.ndarray,
               n_tex: int) -> dict[str, np.ndarray]:
    """A 300W-LP-layout ``.mat`` dict (same keys, order, shapes and dtypes) for one fit."""
    params = sr.FaceParams(np.asarray(shape_para, np.float64).reshape(-1), np.asarray(exp_para, np.float64).reshape(-1),
                           np.zeros(n_tex), np.asarray(pose_para, np.float32).reshape(1, 7), NEUTRAL_COLOR,
                           NEUTRAL_ILLUM)
    xy = np.asarray(landmarks, np.float64)[:, :2]
    return sample_mat(params, xy.T, roi_box(xy), None)


# ---- the job -----------------------------------------------------------------------------------
def init_fit_worker(model: MorphableModel | str, settings: dict, provider: Callable | None,
                    in_pool: bool = False) -> None:
    if isinstance(model, str):
        model = load_morphable_model(model)
    if in_pool:
        import cv2

        cv2.setNumThreads(1)
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(1)
        except ImportError:
            pass
    _STATE.update(model=model, settings=settings, provider=provider, out=Path(settings["out"]))


def fit_chunk(task: tuple[int, list[SampleRef]]) -> tuple[int, int, list[tuple[str, str, str]]]:
    """Fit one chunk; returns (chunk index, samples written, skipped entries)."""
    k, refs = task
    model, settings, provider = _STATE["model"], _STATE["settings"], _STATE["provider"]
    skipped: list[tuple[str, str, str]] = []
    loaded = []
    for ref in refs:
        try:
            img_bytes = read_image_bytes(ref)
            image = decode_image(img_bytes, ref.name)
            pts = provider(image) if provider is not None else read_landmarks(ref, settings["landmarks"])
            pts = as_68_landmarks(pts, ref.name)
            span = pts[:, :2].max(0) - pts[:, :2].min(0)
            if span.min() < 2.0:
                raise InputError(f"{ref.name}: landmarks span {span.min():.1f} px (a degenerate face)")
            loaded.append((ref, img_bytes, image.shape[0], pts))
        except Exception as exc:  # a bad sample never aborts the job
            skipped.append((ref.name, ref.relpath or ref.image_path, _reason(exc)))
    written = 0
    for dim in (2, 3):  # one batched fit per landmark dimensionality
        group = [g for g in loaded if g[3].shape[1] == dim]
        if not group:
            continue
        fit = fit_landmarks(model, np.stack([g[3] for g in group]), np.array([g[2] for g in group]),
                            n_shape=settings["n_shape"], n_exp=settings["n_exp"], iters=settings["iters"],
                            reg_shape=settings["reg_shape"], reg_exp=settings["reg_exp"], contour=settings["contour"])
        for i, (ref, img_bytes, _, pts) in enumerate(group):
            try:
                res = float(fit.residual[i])
                if not res <= settings["max_residual"]:
                    raise InputError(f"fit diverged: residual {100 * res:.2f} % of the face size is above the "
                                     f"bound {100 * settings['max_residual']:.2f} %")
                mat = fitted_mat(fit.pose_para[i], fit.shape_para[i], fit.exp_para[i], pts, model.n_tex)
                target = _STATE["out"] / (ref.relpath or Path(ref.image_path).name)
                atomic_write_bytes(target, img_bytes)
                atomic_write_bytes(target.with_suffix(".mat"), mat_bytes(mat))
                written += 1
            except Exception as exc:
                skipped.append((ref.name, ref.relpath or ref.image_path, _reason(exc)))
    return k, written, skipped


def _reason(exc: Exception) -> str:
    msg = str(exc).replace("\n", " ").strip()
    return msg if isinstance(exc, InputError) else f"{type(exc).__name__}: {msg}"


def fit_folder(
    source: str | os.PathLike,
    out: str | os.PathLike,
    bfm: str | os.PathLike = "synthetic",
    landmarks: str | Callable = "pt2d",
    workers: int = 1,
    n_shape: int | None = None,
    n_exp: int | None = None,
    iters: int = 4,
    reg_shape: float = DEFAULT_REG_SHAPE,
    reg_exp: float = DEFAULT_REG_EXP,
    contour: bool | None = None,
    max_residual: float = DEFAULT_MAX_RESIDUAL,
    limit: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    chunk_size: int = 32,
    model: MorphableModel | None = None,
    landmarks_name: str | None = None,
) -> JobSummary:
    """Fit every image of ``source`` (folder or zip) and write a 300W-LP-layout folder ``out``.

    landmarks: a kind of :data:`LANDMARK_KINDS` or a provider callable (module docstring;
    ``landmarks_name`` is what the settings record for it). contour: jaw-line marching
    (default: on for ``pt2d`` and ``pts``, the 300-W style outlines). Other fitting arguments
    as :func:`prnet_keras.geometry.fitting.fit_landmarks`. ``model`` overrides ``bfm`` with a
    loaded model. Resumable (``resume``), parallel (``workers`` spawn processes), with a
    progress bar; returns a :class:`JobSummary` (exit code 3 when samples were skipped).
    """
    provider = landmarks if callable(landmarks) else None
    kind = landmarks_name or (getattr(landmarks, "spec", None) or "callable" if provider else str(landmarks))
    if provider is None and kind not in LANDMARK_KINDS:
        raise InputError(f"--landmarks {landmarks}: expected one of {', '.join(LANDMARK_KINDS)} or model:PATH")
    if not (np.isfinite(max_residual) and max_residual > 0):
        raise InputError(f"--max-residual {max_residual}: expected a positive fraction (e.g. 0.08)")
    if limit is not None and int(limit) < 1:
        raise InputError(f"--limit {limit}: expected a positive number of images")
    given_model = model is not None
    model = model if given_model else load_morphable_model(bfm)
    out = Path(out)
    refs = list_samples(source, "300wlp")  # any folder: names keep subset folders, .mat may be absent
    refs = refs[: int(limit)] if limit else refs
    if contour is None:
        contour = CONTOUR_DEFAULT.get(kind, False)
    settings = {
        "source": str(Path(source).resolve()), "out": str(out.resolve()), "bfm": str(bfm),
        "model": model.name, "model_fingerprint": model_fingerprint(model), "landmarks": kind,
        "n_shape": n_shape, "n_exp": n_exp, "iters": int(iters), "reg_shape": float(reg_shape),
        "reg_exp": float(reg_exp), "contour": bool(contour), "max_residual": float(max_residual), "limit": limit,
        "chunk_size": int(chunk_size),
    }
    n_shape, n_exp = check_fit_options(model, n_shape, n_exp, iters, reg_shape, reg_exp)  # fail fast, not per sample
    summary = run_folder_job(
        refs, out, settings, workers=int(workers), resume=resume, overwrite=overwrite, progress=progress,
        init=init_fit_worker, init_args=(model, settings, provider), task=fit_chunk, chunk_size=int(chunk_size),
        pool_init_args=(model if given_model else str(bfm), settings, provider), what="fitted images")
    write_json(out / INFO_FILE, {"generator": "prnet_keras.data.fit_folder", "prnet_keras": __version__,
                                 **settings, "written": summary.written, "skipped": summary.skipped,
                                 "n_shape_fitted": n_shape, "n_exp_fitted": n_exp})
    return summary


# ---- how close a fitted dataset is to its truth ------------------------------------------------
def compare_maps(fitted_hdf5: str | os.PathLike, reference_hdf5: str | os.PathLike) -> dict[str, Any]:
    """Dense agreement of two position-map files of the same samples (matched by name).

    Each fitted map is carried into the reference's crop frame (its own crop transform undone,
    the reference's applied; z scaled alike, then shifted by the median z difference since
    each map's depth starts at its own minimum). Per sample: the mean distance over the face
    pixels of the layout divided by sqrt(w·h) of the reference's 68-landmark box, in 2D (x, y)
    and 3D. Returns {"n", "nme_2d", "nme_3d" (means), "nme_2d_max", "nme_3d_max", "per_sample"}.
    """
    from prnet_keras.data.hdf5 import PositionMapDataset
    from prnet_keras.geometry import transform_scale

    fitted, ref = PositionMapDataset(fitted_hdf5), PositionMapDataset(reference_hdf5)
    try:
        if fitted.layout.hash() != ref.layout.hash():
            raise InputError(f"{fitted_hdf5}: UV layout differs from {reference_hdf5}")
        index = {n: i for i, n in enumerate(ref.names)}
        common = [(i, index[n]) for i, n in enumerate(fitted.names) if n in index]
        if not common:
            raise InputError(f"{fitted_hdf5} and {reference_hdf5} share no sample names")
        face = fitted.layout.face_mask.reshape(-1)
        kpt = fitted.layout.kpt_flat
        per = {}
        for start in range(0, len(common), 32):
            pairs = common[start:start + 32]
            a = fitted.read_batch([p[0] for p in pairs])
            b = ref.read_batch([p[1] for p in pairs])
            for j in range(len(pairs)):
                ma = a["position_map"][j].reshape(-1, 3)[face].astype(np.float64)
                mb = b["position_map"][j].reshape(-1, 3)[face].astype(np.float64)
                move = b["transform"][j] @ np.linalg.inv(a["transform"][j])
                xy = ma[:, :2] @ move[:2, :2].T + move[:2, 2]
                z = ma[:, 2] * transform_scale(b["transform"][j]) / transform_scale(a["transform"][j])
                z += np.median(mb[:, 2] - z)
                kb = b["position_map"][j].reshape(-1, 3)[kpt, :2]
                d = float(np.sqrt(np.prod(kb.max(0) - kb.min(0))))
                err2 = np.linalg.norm(xy - mb[:, :2], axis=1)
                err3 = np.sqrt(err2**2 + (z - mb[:, 2]) ** 2)
                per[a["name"][j]] = (float(err2.mean() / d), float(err3.mean() / d))
    finally:
        fitted.close()
        ref.close()
    e = np.array(list(per.values()))
    return {"n": len(per), "nme_2d": float(e[:, 0].mean()), "nme_3d": float(e[:, 1].mean()),
            "nme_2d_max": float(e[:, 0].max()), "nme_3d_max": float(e[:, 1].max()), "per_sample": per}
