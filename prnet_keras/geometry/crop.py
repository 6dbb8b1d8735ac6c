"""Face crops: keypoint / detector boxes and the similarity transform onto the 256² crop (docs/conventions.md).

A crop is described by its 3x3 matrix ``T`` (image pixels -> crop pixels, scale k, no
rotation): [x', y', 1] = T·[x, y, 1] and z' = k·z.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from prnet_keras import RESOLUTION
from prnet_keras.errors import InputError
from prnet_keras.utils import options_from_dict


@dataclasses.dataclass(frozen=True)
class CropConfig:
    """How crop squares are made (the ``crop`` configuration section; defaults = the packaged ones).

    train_scale: keypoint-box side × this = crop side (ground truth, and faces given by 68 landmarks);
    center_jitter: training crops move their centre by up to ± this × the box side (x and y);
    size_jitter: training crops scale their side by U(low, high);
    detector_box_scale: user box (and custom detector) side × this = crop side, centred (official);
    <detector>_center_shift, <detector>_box_scale: a detector's boxes sit higher on the face
    and are larger or smaller than the keypoint box: centre moved down by shift × side, crop
    side = scale × side. dlib: the official PRNet values; mtcnn and opencv: the medians
    measured on real annotated photos (``inference.crop_calibration``), so their crops match
    the training crops.
    """

    train_scale: float = 1.5
    center_jitter: float = 0.1
    size_jitter: tuple[float, float] = (0.9, 1.1)
    detector_box_scale: float = 1.6
    dlib_center_shift: float = 0.14
    dlib_box_scale: float = 1.58
    mtcnn_center_shift: float = 0.16
    mtcnn_box_scale: float = 1.36
    opencv_center_shift: float = 0.15
    opencv_box_scale: float = 1.2

    def __post_init__(self) -> None:
        for name in ("train_scale", "detector_box_scale", "dlib_box_scale", "mtcnn_box_scale", "opencv_box_scale"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InputError(f"crop.{name}: expected a positive number, got {value!r}")
        for name in ("center_jitter", "dlib_center_shift", "mtcnn_center_shift", "opencv_center_shift"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise InputError(f"crop.{name}: expected a number, got {value!r}")
        if self.center_jitter < 0:
            raise InputError(f"crop.center_jitter: expected >= 0, got {self.center_jitter!r}")
        try:
            lo, hi = (float(v) for v in self.size_jitter)
        except (TypeError, ValueError):
            raise InputError(f"crop.size_jitter: expected [low, high], got {self.size_jitter!r}") from None
        if not 0 < lo <= hi:
            raise InputError(f"crop.size_jitter: expected 0 < low <= high, got {self.size_jitter!r}")
        object.__setattr__(self, "size_jitter", (lo, hi))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "CropConfig":
        """From a ``crop`` section (any subset; unknown keys raise InputError)."""
        return options_from_dict(cls, values, "crop")

    @classmethod
    def coerce(cls, value: "CropConfig | Mapping[str, Any] | None") -> "CropConfig":
        """A CropConfig as is; a mapping through :meth:`from_dict`; None: the defaults."""
        return value if isinstance(value, cls) else cls.from_dict(value)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def keypoint_box(kpts_xy: np.ndarray) -> tuple[np.ndarray, float]:
    """(68, 2+) keypoints -> (centre (2,), old_size) of their bounding box.

    old_size = ((r - l) + (b - t)) / 2, the mean side length, as in PRNet's data code.
    """
    k = np.asarray(kpts_xy, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] < 2 or k.shape[1] < 2:
        raise InputError(f"keypoints: expected an (n >= 2, 2|3) array, got shape {k.shape}")
    k = k[:, :2]
    if not np.all(np.isfinite(k)):
        raise InputError("keypoints: contain NaN or inf")
    lo, hi = k.min(0), k.max(0)
    centre = (lo + hi) / 2.0
    old = ((hi[0] - lo[0]) + (hi[1] - lo[1])) / 2.0
    return centre, float(old)


def training_crop(
    kpts_xy: np.ndarray,
    rng: np.random.Generator | None = None,
    scale: float = 1.5,
    center_jitter: float = 0.1,
    size_jitter: tuple[float, float] = (0.9, 1.1),
) -> tuple[np.ndarray, float]:
    """Crop square (centre, size) from keypoints: size = scale·old; with ``rng`` perturbed.

    Perturbation (training sets): centre x, y each + U(-j·old, j·old), size × U(size_jitter).
    Without ``rng`` (validation) the box is exact.
    """
    centre, old = keypoint_box(kpts_xy)
    size = scale * old
    if rng is not None:
        centre = centre + rng.uniform(-center_jitter * old, center_jitter * old, size=2)
        size = size * rng.uniform(size_jitter[0], size_jitter[1])
    return centre, float(size)


def detector_crop(box_ltrb: np.ndarray, scale: float = 1.6, center_shift: float = 0.0) -> tuple[np.ndarray, float]:
    """Crop square from a detector box [left, top, right, bottom].

    size = scale·old and the centre moves down center_shift·old, old = the box's mean side.
    Official PRNet: 1.6 and 0 for given boxes, 1.58 and 0.14 for dlib's.
    """
    box = np.asarray(box_ltrb, dtype=np.float64).reshape(-1)
    if box.size != 4 or not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
        raise InputError(f"face box: expected [left, top, right, bottom] with right > left, bottom > top, "
                         f"got {box.tolist()}")
    l, t, r, b = (float(v) for v in box)
    old = ((r - l) + (b - t)) / 2.0
    centre = np.array([(l + r) / 2.0, (t + b) / 2.0 + center_shift * old])
    return centre, scale * old


def crop_transform(centre: np.ndarray, size: float, resolution: int = RESOLUTION) -> np.ndarray:
    """3x3 T mapping the square centre ± size/2 onto [0, resolution-1]² (k = (res-1)/size)."""
    if not (np.isfinite(size) and size > 0):
        raise InputError(f"crop size: expected a positive number of pixels, got {size}")
    k = (resolution - 1) / float(size)
    cx, cy = (float(v) for v in np.asarray(centre).reshape(2))
    left, top = cx - size / 2.0, cy - size / 2.0
    return np.array([[k, 0.0, -k * left], [0.0, k, -k * top], [0.0, 0.0, 1.0]])


def transform_scale(transform: np.ndarray) -> float:
    """The isotropic scale k of a similarity 3x3 (sqrt of the 2x2 determinant)."""
    t = np.asarray(transform, dtype=np.float64)
    return float(np.sqrt(abs(np.linalg.det(t[:2, :2]))))


def apply_transform(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Map (n, 2) or (n, 3) points through T; z (if present) is scaled by k. float32 out."""
    p = np.asarray(points, dtype=np.float64)
    t = np.asarray(transform, dtype=np.float64)
    out = np.empty_like(p)
    out[:, :2] = p[:, :2] @ t[:2, :2].T + t[:2, 2]
    if p.shape[1] > 2:
        out[:, 2:] = p[:, 2:] * transform_scale(t)
    return out.astype(np.float32)


def vertices_to_crop(image_vertices: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Image-frame vertices (n, 3) -> crop frame: x, y through T, z·k, then z -= min(z)."""
    out = apply_transform(image_vertices, transform)
    out[:, 2] -= out[:, 2].min()
    return out


def crop_to_image(crop_points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Inverse mapping: crop-frame points (n, 2|3) -> image frame (z / k). float32 out."""
    return apply_transform(crop_points, np.linalg.inv(np.asarray(transform, dtype=np.float64)))
