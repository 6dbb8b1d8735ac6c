"""Synthetic datasets in the exact 300W-LP and AFLW2000-3D layouts.

:func:`generate_dataset` renders faces of any morphable model (``--bfm`` spec, default the
synthetic model) with random identity, expression, pose, skin tone, light, cluttered
background and optional occluders into 450x450 JPEGs, each with a ``.mat`` holding the same
keys, shapes, dtypes and key order as the real files:

===========  ================  ==================  ==========================================
key          300W-LP           AFLW2000-3D         content
===========  ================  ==================  ==========================================
pt2d         2x68 float64      2x21 float64        landmarks (x, y pixels, y down); AFLW21
                                                   invisible points are (-1, h+2) like AFLW
roi          1x4 int16         1x4 int16           square box [l, t, r, b] around the landmarks
Illum_Para   1x10 float64      same                ambient rgb, directional rgb, elevation,
                                                   azimuth (rad), ks=0, shininess=20
Color_Para   1x7 float32       same                gains rgb, offsets rgb (0..1 colours), contrast
Tex_Para     199x1 float64     same                texture coefficients (raw)
Shape_Para   199x1 float64     same                identity coefficients (raw, vertices = mu + PC·p)
Exp_Para     29x1 float64      same                expression coefficients (raw)
Pose_Para    1x7 float32       same                [pitch, yaw, roll, tx, ty, tz, s] (3DDFA, §3)
pt3d_68      absent            3x68 float32        68 keypoints posed into the image frame:
                                                   x, y pixels (y down), z = posed z (with tz)
===========  ================  ==================  ==========================================

Layouts: ``300wlp`` writes ``AFW/ HELEN/ IBUG/ LFPW/`` and their ``*_Flip/`` twins with real-like
names (``AFW_1000_1_0.jpg``, ``IBUG_image_001_1_0.jpg``, ``LFPW_image_train_0001_0.jpg``, the
trailing number is the pose variant of one person); a ``_Flip`` file is the exact horizontal
mirror of its original, with yaw and roll negated, tx -> w-1-tx, the same identity,
expression and texture (the synthetic model is left-right symmetric) and pt2d mirrored with
the left/right landmark labels swapped (so it equals the projection of the mirrored
parameters). ``aflw2000`` writes flat ``image00001.jpg`` / ``.mat`` pairs.

``synth_info.json`` in ``out`` records the settings and a fingerprint of the model: the
parameters in the ``.mat`` files only mean something with that model (a later version of the
synthetic model may differ), so readers can check it.

Determinism: every sample draws from ``SeedSequence([seed, layout, index])``, so the same
seed gives identical bytes for any worker count (``.mat`` headers carry no timestamp).
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import multiprocessing
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from prnet_keras import __version__
from prnet_keras.data import synth_render as sr
from prnet_keras.data.fitcheck import INFO_FILE, model_fingerprint
from prnet_keras.errors import InputError
from prnet_keras.geometry.model_spec import load_morphable_model
from prnet_keras.geometry.morphable import MorphableModel
from prnet_keras.utils import atomic_write_bytes, progress_bar, write_json

IMAGE_SIZE = 450
SUBSETS = ("AFW", "HELEN", "IBUG", "LFPW")
LAYOUTS = ("aflw2000", "300wlp")
# Share of |yaw| <= 30° when not given: AFLW2000-3D's own split (1,312 of 2,000), and a
# flatter one for training data so profiles are well represented.
DEFAULT_NEAR_FRONTAL = {"aflw2000": 0.656, "300wlp": 0.4}
POSES_PER_PERSON = 3
_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: prnet-keras synthetic, Created on: (reproducible)"

_WORKER_MODEL: MorphableModel | None = None


# ---- files -----------------------------------------------------------------------------------
def mat_bytes(mat: dict[str, np.ndarray]) -> bytes:
    """A MATLAB 5 ``.mat`` file in memory, with a fixed header (scipy stamps the time otherwise)."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, mat, do_compression=False, oned_as="column")
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")
    return bytes(data)


def jpeg_bytes(rgb: np.ndarray, quality: int = 92) -> bytes:
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV only fails on invalid arrays
        raise RuntimeError("JPEG encoding failed")
    return enc.tobytes()


def _write_pair(folder: Path, name: str, rgb: np.ndarray, mat: dict[str, np.ndarray]) -> Path:
    jpg = folder / f"{name}.jpg"
    atomic_write_bytes(jpg, jpeg_bytes(rgb))
    atomic_write_bytes(folder / f"{name}.mat", mat_bytes(mat))
    return jpg


def roi_box(kpts: np.ndarray) -> np.ndarray:
    """(1, 4) int16 [l, t, r, b]: a square 1.5x the landmarks' larger side, around their box."""
    lo, hi = kpts.min(0), kpts.max(0)
    c, half = (lo + hi) / 2.0, 0.75 * float((hi - lo).max())
    return np.round([[c[0] - half, c[1] - half, c[0] + half, c[1] + half]]).astype(np.int16)


def sample_mat(params: sr.FaceParams, pt2d: np.ndarray, roi: np.ndarray,
               pt3d: np.ndarray | None) -> dict[str, np.ndarray]:
    """A sample's ``.mat`` dict in the real key order: 300W-LP puts roi second; AFLW2000-3D has roi and pt3d_68 last."""
    body = {
        "Illum_Para": params.illum_para.astype(np.float64), "Color_Para": params.color_para.astype(np.float32),
        "Tex_Para": params.tex_para.reshape(-1, 1).astype(np.float64),
        "Shape_Para": params.shape_para.reshape(-1, 1).astype(np.float64),
        "Exp_Para": params.exp_para.reshape(-1, 1).astype(np.float64),
        "Pose_Para": params.pose_para.astype(np.float32),
    }
    if pt3d is None:
        return {"pt2d": pt2d.astype(np.float64), "roi": roi, **body}
    return {"pt2d": pt2d.astype(np.float64), **body, "roi": roi, "pt3d_68": pt3d.astype(np.float32)}


# ---- one sample ------------------------------------------------------------------------------
def render_sample(model: MorphableModel, rngs: list[np.random.Generator], near_frontal_fraction: float,
                  occluder_probability: float, size: int = IMAGE_SIZE,
                  ) -> tuple[np.ndarray, sr.FaceParams, np.ndarray, np.ndarray]:
    """Render one face. rngs = [identity, pose, appearance, scene] generators.

    Returns (RGB uint8 (size, size, 3), parameters, image-frame keypoints (68, 3) float32,
    keypoint visibility (68,) bool).
    """
    sp, ep, tp = sr.sample_identity(model, rngs[0])
    pose, posed = sr.sample_pose(model, sp, ep, rngs[1], size, near_frontal_fraction)
    color, illum = sr.sample_appearance(rngs[2])
    params = sr.FaceParams(sp, ep, tp, pose, color, illum)
    face, coverage, depth = sr.shade_face(model, params, posed, size)
    img = sr.compose(face, coverage, sr.background(rngs[3], size), rngs[3])
    kpts = posed[model.kpt_ind]
    if rngs[3].random() < occluder_probability:
        sr.occlude(img, kpts[:, :2], rngs[3])
    return sr.to_uint8(img), params, kpts, sr.keypoint_visibility(kpts, depth, coverage, posed)


def _rngs(*key: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(list(key)).spawn(4)]


def _aflw_task(model: MorphableModel, out: Path, seed: int, index: int, frac: float, p_occ: float) -> list[Path]:
    img, params, kpts, vis = render_sample(model, _rngs(seed, 0, index), frac, p_occ)
    mat = sample_mat(params, sr.aflw21(kpts[:, :2], vis, IMAGE_SIZE), roi_box(kpts[:, :2]), kpts.T)
    return [_write_pair(out, f"image{index + 1:05d}", img, mat)]


def name_300wlp(pair: int) -> tuple[str, str, int]:
    """(subset, file stem, person id) of the pair-th original; subsets cycle, 3 pose variants per person."""
    subset = SUBSETS[pair % len(SUBSETS)]
    q = pair // len(SUBSETS)
    person, k = q // POSES_PER_PERSON, q % POSES_PER_PERSON
    stem = {
        "AFW": f"AFW_{1000 + person}_1_{k}", "HELEN": f"HELEN_{1000 + person}_1_{k}",
        "IBUG": f"IBUG_image_{person + 1:03d}_1_{k}", "LFPW": f"LFPW_image_train_{person + 1:04d}_{k}",
    }[subset]
    return subset, stem, person


def _300wlp_task(model: MorphableModel, out: Path, seed: int, pair: int, frac: float, p_occ: float) -> list[Path]:
    subset, stem, person = name_300wlp(pair)
    rngs = _rngs(seed, 1, pair)
    rngs[0] = _rngs(seed, 2, SUBSETS.index(subset), person)[0]  # one identity per person
    img, params, kpts, _ = render_sample(model, rngs, frac, p_occ)
    pt2d = kpts[:, :2].T
    orig = _write_pair(out / subset, stem, img, sample_mat(params, pt2d, roi_box(kpts[:, :2]), None))
    flip_kpts = kpts[sr.FLIP68, :2] * [-1.0, 1.0] + [IMAGE_SIZE - 1.0, 0.0]
    flip_params = sr.mirror_params(params, IMAGE_SIZE)
    flip = _write_pair(out / f"{subset}_Flip", stem, np.ascontiguousarray(img[:, ::-1]),
                       sample_mat(flip_params, flip_kpts.T, roi_box(flip_kpts), None))
    return [orig, flip]


# ---- driver ----------------------------------------------------------------------------------
def _init_worker(bfm: str | Path | MorphableModel, in_pool: bool = True) -> None:
    global _WORKER_MODEL
    if in_pool:  # one process per core already: OpenCV's own threads would only contend
        cv2.setNumThreads(1)
    _WORKER_MODEL = bfm if isinstance(bfm, MorphableModel) else load_morphable_model(bfm)


def _run_task(args: tuple) -> list[Path]:
    task, out, seed, index, frac, p_occ = args
    assert _WORKER_MODEL is not None
    return (_aflw_task if task == "aflw2000" else _300wlp_task)(_WORKER_MODEL, out, seed, index, frac, p_occ)


def _check(layout: str, count: int, seed: int, workers: int, frac: float | None) -> None:
    if layout not in LAYOUTS:
        raise InputError(f"layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise InputError(f"count: expected a positive number of images, got {count!r}")
    if layout == "300wlp" and count % 2:
        raise InputError(f"count: 300wlp writes originals and their _Flip twins, so count must be even, got {count}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed: expected a non-negative integer, got {seed!r}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise InputError(f"workers: expected a positive integer, got {workers!r}")
    if frac is not None and not 0.0 <= float(frac) <= 1.0:
        raise InputError(f"near_frontal_fraction: expected a value in [0, 1], got {frac!r}")


def generate_dataset(
    out: str | Path,
    layout: str = "aflw2000",
    count: int = 100,
    seed: int = 0,
    bfm: str | Path | MorphableModel = "synthetic",
    workers: int = 1,
    occluders: bool = True,
    near_frontal_fraction: float | None = None,
    occluder_probability: float = 0.35,
    progress: bool = False,
) -> list[Path]:
    """Render ``count`` synthetic images (+ ``.mat``) into ``out`` in the given layout.

    layout "aflw2000" or "300wlp" (count even: half originals, half ``_Flip`` twins); bfm is
    a ``--bfm`` spec (``synthetic``, a face3d BFM ``.mat``, a mean-only folder) or a model;
    near_frontal_fraction is the share of |yaw| <= 30° (default per layout, see
    ``DEFAULT_NEAR_FRONTAL``); occluders draws a patch / hand / sunglasses on a share
    ``occluder_probability`` of the images. ``workers > 1`` renders in a spawn process pool.
    ``progress`` shows a bar on stderr (when it is a terminal).
    Returns the JPEG paths in sample order (300wlp: original then its twin).
    """
    _check(layout, count, seed, workers, near_frontal_fraction)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output exists and is not a folder")
    frac = DEFAULT_NEAR_FRONTAL[layout] if near_frontal_fraction is None else float(near_frontal_fraction)
    p_occ = float(occluder_probability) if occluders else 0.0
    n_tasks = count if layout == "aflw2000" else count // 2
    tasks = [(layout, out, int(seed), i, frac, p_occ) for i in range(n_tasks)]
    model = bfm if isinstance(bfm, MorphableModel) else load_morphable_model(bfm)  # fails fast on a bad spec
    results = []
    bar = progress_bar(count, out.name, "image", progress)
    try:
        if workers == 1 or n_tasks == 1:
            _init_worker(model, in_pool=False)
            for t in tasks:
                results.append(_run_task(t))
                bar.update(len(results[-1]))
        else:
            ctx = multiprocessing.get_context("spawn")
            # Workers rebuild the model from its spec (cheap, and no 100 MB pickle) unless given an object.
            with cf.ProcessPoolExecutor(max_workers=int(workers), mp_context=ctx, initializer=_init_worker,
                                        initargs=(bfm,)) as pool:
                for r in pool.map(_run_task, tasks, chunksize=max(1, n_tasks // (8 * int(workers)))):
                    results.append(r)
                    bar.update(len(r))
    finally:
        bar.close()
    write_json(out / INFO_FILE, {
        "generator": "prnet_keras.data.synth", "prnet_keras": __version__, "layout": layout, "count": count,
        "seed": int(seed), "bfm": model.name if isinstance(bfm, MorphableModel) else str(bfm), "model": model.name,
        "model_fingerprint": model_fingerprint(model), "image_size": IMAGE_SIZE, "near_frontal_fraction": frac,
        "occluder_probability": p_occ,
    })
    return [p for r in results for p in r]
