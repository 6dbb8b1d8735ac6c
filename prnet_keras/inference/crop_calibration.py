"""How a detector's boxes sit on faces, measured against the training crop.

Networks are trained on crops made from the 68 keypoints (``geometry.training_crop``: the
keypoint box's centre, side × ``train_scale``). At inference a detector box stands in for the
keypoints, so its crop rule (``crop.<detector>_center_shift`` / ``crop.<detector>_box_scale``)
should give that same square: centre = box centre + shift × side (down), crop side =
scale × side, with side the box's mean side. :func:`measure_detector_crops` measures both on
annotated images (AFLW2000-3D / 300W-LP layout: image + ``.mat`` with ``pt3d_68`` or a
(2, 68) ``pt2d``); the packaged defaults are the medians it gives on real photos.

>>> report = measure_detector_crops("AFLW2000", detector="mtcnn")   # doctest: +SKIP
>>> report["center_shift"], report["box_scale"]                      # doctest: +SKIP
(0.16, 1.36)
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from prnet_keras.data.fit_folder import as_68_landmarks
from prnet_keras.data.sources import list_samples, read_sample
from prnet_keras.errors import InputError
from prnet_keras.geometry import CropConfig, keypoint_box, training_crop
from prnet_keras.inference.detect import Detection, crop_square, get_detector


def _keypoints(mat: dict[str, np.ndarray], name: str) -> np.ndarray:
    """(68, 2) image-pixel keypoints of a ``.mat``: ``pt3d_68``, else ``pt2d``; InputError (a
    skip) when neither holds 68 finite points."""
    for key in ("pt3d_68", "pt2d"):
        if key in mat:
            return as_68_landmarks(mat[key], f"{name}.mat {key}")[:, :2]
    raise InputError(f"{name}.mat: no pt3d_68 or pt2d key")


def box_offsets(box_ltrb: np.ndarray, crop_centre: np.ndarray, crop_size: float) -> np.ndarray:
    """(3,) [shift x, shift y, scale] that turn ``box_ltrb`` into the square (``crop_centre``,
    ``crop_size``): (crop centre − box centre) / side and crop size / side, with side the box's
    mean side in pixels."""
    box_centre, side = keypoint_box(np.reshape(box_ltrb, (2, 2)))
    return np.array([*(np.asarray(crop_centre) - box_centre) / side, crop_size / side])


def _detection_on_face(detections: list[Detection], keypoints_xy: np.ndarray) -> Detection | None:
    """The detection whose box centre lies inside the keypoint box and is nearest its centre."""
    lo, hi = keypoints_xy.min(0), keypoints_xy.max(0)
    best, best_d = None, np.inf
    for det in detections:
        c = np.array([(det.box[0] + det.box[2]) / 2.0, (det.box[1] + det.box[3]) / 2.0])
        if np.all(c >= lo) and np.all(c <= hi):
            d = float(np.linalg.norm(c - (lo + hi) / 2.0))
            if d < best_d:
                best, best_d = det, d
    return best


def measure_detector_crops(source: str | os.PathLike, detector: str | Callable = "mtcnn", limit: int | None = None,
                           crop_config: CropConfig | None = None) -> dict[str, Any]:
    """Run ``detector`` on every annotated image of ``source`` and measure its boxes.

    Returns a dict: ``center_shift`` (median vertical shift, box sides, + = down),
    ``center_shift_x``, ``box_scale`` (median), ``n`` faces measured, ``skipped``
    [(name, reason)], ``rows`` [(name, shift x, shift y, scale)], and ``crop_error``: with the
    crop rule of ``crop_config`` (default: the packaged one) for this detector, the median
    centre error and |size ratio − 1| of its crops against the training crops (fractions of
    the training crop side).
    """
    cfg = crop_config or CropConfig()
    detect = get_detector(detector) if isinstance(detector, str) else detector
    samples = list_samples(source)
    if limit is not None:
        samples = samples[: max(int(limit), 0)]
    rows: list[tuple[str, float, float, float]] = []
    errors: list[tuple[float, float]] = []
    skipped: list[tuple[str, str]] = []
    for ref in samples:
        try:
            image, mat = read_sample(ref)
            kp = _keypoints(mat, ref.name)
        except InputError as exc:
            skipped.append((ref.name, str(exc)))
            continue
        det = _detection_on_face(detect(image), kp)
        if det is None:
            skipped.append((ref.name, "no detection on the annotated face"))
            continue
        truth_centre, truth_size = training_crop(kp, rng=None, scale=cfg.train_scale)
        rows.append((ref.name, *box_offsets(det.box, truth_centre, truth_size).tolist()))
        centre, size = crop_square(det, cfg)
        errors.append((float(np.linalg.norm(centre - truth_centre)) / truth_size, abs(size / truth_size - 1.0)))
    if not rows:
        raise InputError(f"{source}: no annotated face was detected ({len(skipped)} skipped), nothing to measure")
    values = np.array([r[1:] for r in rows])
    med = np.median(values, axis=0)
    err = np.median(np.array(errors), axis=0)
    return {"detector": detector if isinstance(detector, str) else getattr(detector, "__name__", "custom"),
            "n": len(rows), "center_shift_x": float(med[0]), "center_shift": float(med[1]), "box_scale": float(med[2]),
            "crop_error": {"centre": float(err[0]), "size": float(err[1])}, "rows": rows, "skipped": skipped}
