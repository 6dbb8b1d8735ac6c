"""Training augmentation of (crop, position map) pairs, vectorised over a batch.

Geometric augmentation is one 2x3 similarity per sample (rotation about the crop centre,
scale about the centre, translation). The image is warped with OpenCV; the position map's
*pixel grid* is UV space and is not warped: its x, y values (crop pixels) go through the
same 2x3 and its z is multiplied by the scale, so image and label stay consistent.
Photometric augmentation (per-channel colour scaling, synthetic occluders) touches the
image only. :class:`AugmentConfig` holds the switches and ranges; its defaults are the
packaged ``augment`` section (the paper's recipe).

Sampling (:func:`sample_params`) and application (:func:`apply_params`) are separate so a
batch's parameters can be inspected or fixed by hand (tests, debugging).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np
from numba import njit

from prnet_keras import RESOLUTION
from prnet_keras.errors import InputError
from prnet_keras.utils import options_from_dict


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Switches and ranges of every augmentation (angles in degrees, fractions of the crop side).

    ``crop_perturbation`` applies only to datasets stored in ``raw`` mode, where the ground
    truth is rendered per read with a freshly perturbed training crop.
    """

    rotation: bool = True
    rotation_range_deg: tuple[float, float] = (-45.0, 45.0)
    translation: bool = True
    translation_frac: float = 0.1
    scale: bool = True
    scale_range: tuple[float, float] = (0.9, 1.2)
    color: bool = True
    color_range: tuple[float, float] = (0.6, 1.4)
    occlusion: bool = True
    occlusion_p: float = 0.5
    occlusion_area: tuple[float, float] = (0.02, 0.2)
    occlusion_aspect: tuple[float, float] = (0.3, 3.3)
    crop_perturbation: bool = True

    def __post_init__(self) -> None:
        for name in ("rotation_range_deg", "scale_range", "color_range", "occlusion_area", "occlusion_aspect"):
            value = getattr(self, name)
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError):
                raise InputError(f"augment.{name}: expected [low, high], got {value!r}") from None
            if not lo <= hi:
                raise InputError(f"augment.{name}: low must be <= high, got {value!r}")
            object.__setattr__(self, name, (lo, hi))
        if self.scale_range[0] <= 0 or self.occlusion_aspect[0] <= 0:
            raise InputError("augment.scale_range and augment.occlusion_aspect must be positive")
        if self.color_range[0] < 0:
            raise InputError(f"augment.color_range: factors must be >= 0, got {self.color_range!r}")
        if not (0.0 <= self.occlusion_area[0] and self.occlusion_area[1] <= 1.0):
            raise InputError(f"augment.occlusion_area: fractions must lie in [0, 1], got {self.occlusion_area!r}")
        if not 0.0 <= float(self.occlusion_p) <= 1.0:
            raise InputError(f"augment.occlusion_p: expected a probability in [0, 1], got {self.occlusion_p!r}")
        if not 0.0 <= float(self.translation_frac) < 1.0:
            raise InputError(f"augment.translation_frac: expected a fraction in [0, 1), got {self.translation_frac!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None = None) -> "AugmentConfig":
        """The defaults (the packaged ``augment`` section) overridden by ``values``.

        Unknown keys raise :class:`InputError` (a typo must not silently disable nothing).
        """
        return options_from_dict(cls, values, "augment")

    @classmethod
    def disabled(cls) -> "AugmentConfig":
        """Every augmentation switched off (validation, or training on clean crops)."""
        return cls(rotation=False, translation=False, scale=False, color=False, occlusion=False,
                   crop_perturbation=False)

    @property
    def geometric(self) -> bool:
        return self.rotation or self.translation or self.scale

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass
class AugmentParams:
    """Per-sample parameters of one batch of B samples.

    matrices (B, 2, 3) float64 crop px -> crop px; scales (B,); colors (B, 3) float32
    channel factors; occluders (B, 4) int32 boxes [x0, y0, x1, y1) (empty when x1 == x0);
    occluder_noise (B,) bool (noise texture vs solid colour); occluder_colors (B, 3) float32 in [0, 1].
    """

    matrices: np.ndarray
    scales: np.ndarray
    colors: np.ndarray
    occluders: np.ndarray
    occluder_noise: np.ndarray
    occluder_colors: np.ndarray

    @classmethod
    def identity(cls, batch: int) -> "AugmentParams":
        m = np.zeros((batch, 2, 3))
        m[:, 0, 0] = m[:, 1, 1] = 1.0
        return cls(m, np.ones(batch), np.ones((batch, 3), np.float32), np.zeros((batch, 4), np.int32),
                   np.zeros(batch, bool), np.zeros((batch, 3), np.float32))


def affine_matrices(angles_deg: np.ndarray, scales: np.ndarray, shifts: np.ndarray,
                    centre: float = (RESOLUTION - 1) / 2.0) -> np.ndarray:
    """(B,) angles, (B,) scales, (B, 2) shifts in px -> (B, 2, 3) similarities.

    p' = s·R(θ)·(p - c) + c + shift with R as ``cv2.getRotationMatrix2D`` (positive θ turns
    the image counter-clockwise on screen, y down); c = centre of the crop.
    """
    theta = np.deg2rad(np.asarray(angles_deg, np.float64))
    s = np.asarray(scales, np.float64)
    a, b = s * np.cos(theta), s * np.sin(theta)
    m = np.empty((theta.shape[0], 2, 3))
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = a, b, -b, a
    shifts = np.asarray(shifts, np.float64).reshape(-1, 2)
    m[:, 0, 2] = (1 - a) * centre - b * centre + shifts[:, 0]
    m[:, 1, 2] = b * centre + (1 - a) * centre + shifts[:, 1]
    return m


def sample_params(cfg: AugmentConfig, batch: int, rng: np.random.Generator,
                  resolution: int = RESOLUTION) -> AugmentParams:
    """Draw one batch of parameters; a switched-off augmentation draws its identity."""
    zeros = np.zeros(batch)
    angles = rng.uniform(*cfg.rotation_range_deg, size=batch) if cfg.rotation else zeros
    scales = rng.uniform(*cfg.scale_range, size=batch) if cfg.scale else np.ones(batch)
    t = cfg.translation_frac * resolution
    shifts = rng.uniform(-t, t, size=(batch, 2)) if cfg.translation else np.zeros((batch, 2))
    colors = (rng.uniform(*cfg.color_range, size=(batch, 3)) if cfg.color else np.ones((batch, 3))).astype(np.float32)
    occluders = np.zeros((batch, 4), np.int32)
    noise = np.zeros(batch, bool)
    occ_colors = np.zeros((batch, 3), np.float32)
    if cfg.occlusion:
        on = rng.random(batch) < cfg.occlusion_p
        area = rng.uniform(*cfg.occlusion_area, size=batch) * resolution**2
        # Log-uniform aspect (w / h): tall and wide patches equally likely.
        aspect = np.exp(rng.uniform(*np.log(cfg.occlusion_aspect), size=batch))
        w = np.clip(np.rint(np.sqrt(area * aspect)), 1, resolution).astype(np.int32)
        h = np.clip(np.rint(np.sqrt(area / aspect)), 1, resolution).astype(np.int32)
        x0 = np.floor(rng.random(batch) * (resolution - w + 1)).astype(np.int32)
        y0 = np.floor(rng.random(batch) * (resolution - h + 1)).astype(np.int32)
        occluders = np.where(on[:, None], np.stack([x0, y0, x0 + w, y0 + h], 1), 0).astype(np.int32)
        noise = rng.random(batch) < 0.5
        occ_colors = rng.random((batch, 3)).astype(np.float32)
    return AugmentParams(affine_matrices(angles, scales, shifts, (resolution - 1) / 2.0), scales,
                         colors, occluders, noise, occ_colors)


def warp_images(images: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """(B, H, W, C) images through (B, 2, 3) affines: bilinear, border 0, same dtype.

    One ``cv2.warpAffine`` per sample (OpenCV releases the GIL, so threads scale).
    """
    out = np.empty_like(images)
    h, w = images.shape[1:3]
    for i in range(images.shape[0]):
        out[i] = cv2.warpAffine(images[i], matrices[i], (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0).reshape(out.shape[1:])
    return out


@njit(cache=True, nogil=True)
def _warp_labels_kernel(pm, m, scales, factor, out):
    # One fused pass per map (numba, no temporaries): x, y through M, z * s, all * factor.
    for b in range(pm.shape[0]):
        m00, m01, m02 = m[b, 0, 0], m[b, 0, 1], m[b, 0, 2]
        m10, m11, m12 = m[b, 1, 0], m[b, 1, 1], m[b, 1, 2]
        sz = scales[b] * factor
        for i in range(pm.shape[1]):
            for j in range(pm.shape[2]):
                x = pm[b, i, j, 0]
                y = pm[b, i, j, 1]
                z = pm[b, i, j, 2]
                if x == 0.0 and y == 0.0 and z == 0.0:  # uncovered UV pixel stays 0
                    out[b, i, j, 0] = 0.0
                    out[b, i, j, 1] = 0.0
                    out[b, i, j, 2] = 0.0
                else:
                    out[b, i, j, 0] = (m00 * x + m01 * y + m02) * factor
                    out[b, i, j, 1] = (m10 * x + m11 * y + m12) * factor
                    out[b, i, j, 2] = z * sz


@njit(cache=True, nogil=True)
def _scale_colors_kernel(images, colors, out):
    # uint8 -> float32 in [0, 1] with per-channel factors, clipped: one pass.
    for b in range(images.shape[0]):
        c0, c1, c2 = colors[b, 0] / 255.0, colors[b, 1] / 255.0, colors[b, 2] / 255.0
        for i in range(images.shape[1]):
            for j in range(images.shape[2]):
                out[b, i, j, 0] = min(images[b, i, j, 0] * c0, 1.0)
                out[b, i, j, 1] = min(images[b, i, j, 1] * c1, 1.0)
                out[b, i, j, 2] = min(images[b, i, j, 2] * c2, 1.0)


def warp_position_maps(position_maps: np.ndarray, matrices: np.ndarray, scales: np.ndarray,
                       factor: float = 1.0, inplace: bool = False) -> np.ndarray:
    """Map the values of (B, R, R, 3) position maps (crop px) through (B, 2, 3) affines.

    x, y -> M·[x, y, 1]; z -> s·z; everything then × ``factor`` (1 / LABEL_SCALE gives the
    network's label). The UV grid is untouched and uncovered pixels (all channels 0) stay
    0. Returns a new float32 array, or with ``inplace`` writes into ``position_maps`` when
    it is C-contiguous float32 (saves a batch-sized allocation per batch).
    """
    pm = np.ascontiguousarray(position_maps, dtype=np.float32)
    out = pm if inplace and pm is position_maps else np.empty_like(pm)
    _warp_labels_kernel(pm, np.ascontiguousarray(matrices, np.float64), np.asarray(scales, np.float64),
                        np.float64(factor), out)
    return out


def scale_colors(images: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) uint8 -> float32 image / 255 × (B, 3) channel factors, clipped to [0, 1]."""
    out = np.empty(images.shape, np.float32)
    _scale_colors_kernel(np.ascontiguousarray(images), np.ascontiguousarray(colors, np.float32), out)
    return out


def _noise_patch(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float32 noise texture in [0, 1] of a random grain (1-16 px)."""
    grain = int(rng.integers(1, 17))
    small = rng.random((max(1, -(-h // grain)), max(1, -(-w // grain)), 3)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR if grain > 2 else cv2.INTER_NEAREST)


def occlude(images: np.ndarray, params: AugmentParams, rng: np.random.Generator) -> None:
    """Paint each sample's occluder box in place on (B, H, W, 3) float32 images in [0, 1]."""
    for i, (x0, y0, x1, y1) in enumerate(params.occluders):
        if x1 <= x0 or y1 <= y0:
            continue
        if params.occluder_noise[i]:
            images[i, y0:y1, x0:x1] = _noise_patch(rng, int(y1 - y0), int(x1 - x0))
        else:
            images[i, y0:y1, x0:x1] = params.occluder_colors[i]


def apply_params(images: np.ndarray, position_maps: np.ndarray, params: AugmentParams,
                 rng: np.random.Generator | None = None, label_factor: float = 1.0,
                 overwrite_maps: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Augment one batch with given parameters.

    images (B, R, R, 3) uint8 RGB crops; position_maps (B, R, R, 3) float32 crop px.
    Returns images float32 in [0, 1] and position maps float32 in crop px × ``label_factor``
    (pass 1 / LABEL_SCALE for network labels). ``rng`` draws the occluders' noise textures.
    ``overwrite_maps`` lets the labels reuse ``position_maps``' memory (the caller owns it).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise InputError(f"augmentation: images must be uint8 crops, got {images.dtype}")
    if not np.allclose(params.matrices, AugmentParams.identity(len(images)).matrices):
        images = warp_images(images, params.matrices)
    position_maps = warp_position_maps(position_maps, params.matrices, params.scales, label_factor, overwrite_maps)
    out = scale_colors(images, params.colors)  # factors > 1 saturate: clipped to 1
    if params.occluders.any():
        occlude(out, params, rng if rng is not None else np.random.default_rng(0))
    return out, position_maps


def augment_batch(images: np.ndarray, position_maps: np.ndarray, cfg: AugmentConfig,
                  rng: np.random.Generator, label_factor: float = 1.0,
                  overwrite_maps: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Sample parameters from ``rng`` and apply them (see :func:`apply_params`)."""
    params = sample_params(cfg, len(images), rng, images.shape[1])
    return apply_params(images, position_maps, params, rng, label_factor, overwrite_maps)
