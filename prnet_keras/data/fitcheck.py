"""Do a dataset's fits belong to the chosen morphable model? Checked before a build or an evaluation.

A fit's ``Shape_Para`` / ``Exp_Para`` are coefficients of one particular model: with any
other model they give a different face, and ground truth rendered from them is
meaningless although every number still comes out. So, before the work starts:

* a synthetic dataset (``synth_info.json``) and a folder of your own fitted data
  (``fit_info.json``) record the model their fits were made with (its fingerprint): the
  chosen model must be that one;
* the coefficient counts must be the model's;
* the model's 68 keypoints, posed by each fit, must land near the fit's own landmarks
  (``pt3d_68``, or a 68-point ``pt2d``): the synthetic model reproduces the fits it
  generated exactly (< 1 % NME), so real fits (2-8 % off with it) are recognised when no
  record names the model; any model further than 20 % off cannot be the fits' model.

The NME is the mean 2D keypoint distance over sqrt(w·h) of the landmarks' box (percent),
the median over the first :data:`CHECK_SAMPLES` readable samples; coefficient counts fail
when most of them differ (one odd sample is left for the build to skip). Failures raise one
:class:`InputError` naming ``--bfm``.
"""

from __future__ import annotations

import hashlib
import json
import weakref
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np

from prnet_keras.errors import InputError, PRNetError
from prnet_keras.geometry import MorphableModel, pose_vertices

INFO_FILE = "synth_info.json"  # generation settings + model fingerprint, beside the synthetic samples
FIT_INFO_FILE = "fit_info.json"  # the same for a folder fitted by data.fit_folder
RECORD_FILES = (INFO_FILE, FIT_INFO_FILE)
CHECK_SAMPLES = 8
SYNTHETIC_EXACT_NME = 1.0  # percent: the synthetic model vs the fits it generated (measured ~1e-4 %)
FAR_NME = 20.0  # percent: the right model is within ~2-7 % on real data (mean-only BFM: no identity)
BFM_HINT = "pass the model the fits were made with: --bfm BFM.mat (face3d) or the mean-only BFM folder"


_FINGERPRINTS: dict[int, tuple[Any, str]] = {}  # id(model) -> (weak reference, fingerprint)


def model_fingerprint(model: MorphableModel) -> str:
    """16 hex digits identifying the geometry (mean, bases, keypoints) the ``.mat`` parameters refer to.

    Remembered per model object (hashing a BFM's bases takes a while; models are not changed in place).
    """
    known = _FINGERPRINTS.get(id(model))
    if known is not None and known[0]() is model:
        return known[1]
    h = hashlib.sha256()
    for a in (model.shape_mu, model.shape_pc, model.exp_mu, model.exp_pc, model.kpt_ind, model.triangles):
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    fingerprint = h.hexdigest()[:16]
    _FINGERPRINTS[id(model)] = (weakref.ref(model), fingerprint)
    return fingerprint


def is_synthetic(model: MorphableModel) -> bool:
    return str(model.name).startswith("synthetic")


def read_model_record(source: str | Path) -> tuple[str, dict[str, Any]] | None:
    """(file name, content) of the record naming the model a dataset's fits were made with:
    ``synth_info.json`` / ``fit_info.json`` in the folder (or its parent, for a subset folder)
    or the shallowest one inside a zip; None for other data."""
    source = Path(source)
    try:
        if source.is_dir():
            for folder in (source, source.parent):
                for name in RECORD_FILES:
                    if (folder / name).is_file():
                        return name, json.loads((folder / name).read_text())
            return None
        with zipfile.ZipFile(source) as zf:
            found = sorted((n for n in zf.namelist() if PurePosixPath(n).name in RECORD_FILES),
                           key=lambda n: len(PurePosixPath(n).parts))
            return (PurePosixPath(found[0]).name, json.loads(zf.read(found[0]))) if found else None
    except (OSError, ValueError, zipfile.BadZipFile):
        return None


def landmark_nme(model: MorphableModel, fit: Any, image_height: int) -> float | None:
    """2D NME (percent) of the model's posed keypoints vs the fit's 68 landmarks; None without them."""
    if fit.pt3d_68 is not None:
        ref = np.asarray(fit.pt3d_68, np.float64)[:, :2]
    elif fit.pt2d is not None and len(fit.pt2d) == 68:
        ref = np.asarray(fit.pt2d, np.float64)[:, :2]
    else:
        return None
    kpts = pose_vertices(model.keypoint_vertices(fit.shape_para, fit.exp_para), fit.pose_para, image_height)[:, :2]
    w, h = ref.max(0) - ref.min(0)
    norm = float(np.sqrt(max(w, 0.0) * max(h, 0.0)))
    if not norm > 0 or not np.all(np.isfinite(kpts)):
        return None
    return float(100.0 * np.linalg.norm(kpts - ref, axis=1).mean() / norm)


def check_fits_match_model(source: str | Path, refs: Sequence[Any], model: MorphableModel, bfm: str) -> None:
    """Raise InputError (naming ``--bfm``) when the fits of ``refs`` were not made with ``model``.

    source: the dataset folder or zip; refs: its ``SampleRef`` list; bfm: the ``--bfm``
    value as given (for the message). Unreadable samples are left to the caller.
    """
    from prnet_keras.data.sources import parse_fit, read_sample

    record = read_model_record(source)
    info = record[1] if record else None
    if info is not None and info.get("model_fingerprint") not in (None, model_fingerprint(model)):
        raise InputError(
            f"{source}: its fits were made with the morphable model {info.get('model')!r} ({record[0]}), not the one "
            f"--bfm {bfm} gives ({model.name!r}): they mean nothing with that model; pass --bfm {info.get('bfm')}")
    errors: list[float] = []
    wrong_sizes: list[str] = []
    checked = 0
    for ref in refs:
        if checked >= CHECK_SAMPLES:
            break
        if ref.mat_path is None:
            continue
        try:
            image, mat = read_sample(ref)
        except PRNetError:
            continue  # reported by the build / evaluation as a skipped sample
        checked += 1
        sizes = {key: np.size(mat[key]) for key in ("Shape_Para", "Exp_Para") if key in mat}
        if sizes.get("Shape_Para", model.n_shape) != model.n_shape or sizes.get("Exp_Para", model.n_exp) != model.n_exp:
            wrong_sizes.append(f"{ref.name}.mat has {sizes.get('Shape_Para')}/{sizes.get('Exp_Para')}")
            continue
        try:
            nme = landmark_nme(model, parse_fit(mat, ref.name, model.n_shape, model.n_exp), image.shape[0])
        except PRNetError:
            continue
        if nme is not None:
            errors.append(nme)
    # A single odd sample is the build's to skip; most samples not fitting is the wrong model.
    if wrong_sizes and len(wrong_sizes) * 2 > checked:
        raise InputError(
            f"{source}: the fits' Shape_Para/Exp_Para do not have the {model.n_shape}/{model.n_exp} coefficients "
            f"of the morphable model --bfm {bfm} ({model.name!r}): {wrong_sizes[0]}; {BFM_HINT}")
    if not errors:
        return
    median = float(np.median(errors))
    if is_synthetic(model) and info is None and median > SYNTHETIC_EXACT_NME:
        raise InputError(
            f"{source}: the fits' 68 keypoints lie {median:.1f} % (NME) from the synthetic model's, which reproduces "
            f"the fits it generated exactly: these fits were made with another model (real data?), and ground truth "
            f"from --bfm {bfm} would be meaningless; {BFM_HINT}")
    if median > FAR_NME:
        raise InputError(
            f"{source}: the morphable model --bfm {bfm} ({model.name!r}) puts the fits' 68 keypoints {median:.1f} % "
            f"(NME) away from their landmarks: these fits were not made with it; {BFM_HINT}")
