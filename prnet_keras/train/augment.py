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
    occluder_noise (B,) bool (noise texture vs solid colour); occluder_colors (B, 3) float32 in [0, 1];
    noise_grains (B,) int32 texel size in px (1-16) and noise_seeds (B,) int32 in [0, 65536) of
    the noise texture (:func:`noise_texture`).
    """

    matrices: np.ndarray
    scales: np.ndarray
    colors: np.ndarray
    occluders: np.ndarray
    occluder_noise: np.ndarray
    occluder_colors: np.ndarray
    noise_grains: np.ndarray | None = None
    noise_seeds: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.scales)
        if self.noise_grains is None:
            self.noise_grains = np.ones(n, np.int32)
        if self.noise_seeds is None:
            self.noise_seeds = np.zeros(n, np.int32)

    @classmethod
    def identity(cls, batch: int) -> "AugmentParams":
        m = np.zeros((batch, 2, 3))
        m[:, 0, 0] = m[:, 1, 1] = 1.0
        return cls(m, np.ones(batch), np.ones((batch, 3), np.float32), np.zeros((batch, 4), np.int32),
                   np.zeros(batch, bool), np.zeros((batch, 3), np.float32))

    @classmethod
    def concatenate(cls, parts: "list[AugmentParams]") -> "AugmentParams":
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Fixed-dtype arrays for the accelerator (:mod:`.device_augment`): matrix (B, 6) float32
        row-major 2x3, scale (B,), color (B, 3), occluder (B, 4) int32, occluder_noise (B,) int32,
        occluder_color (B, 3), noise_grain (B,) int32, noise_seed (B,) int32."""
        return {"matrix": self.matrices.reshape(-1, 6).astype(np.float32), "scale": self.scales.astype(np.float32),
                "color": self.colors.astype(np.float32), "occluder": self.occluders.astype(np.int32),
                "occluder_noise": self.occluder_noise.astype(np.int32),
                "occluder_color": self.occluder_colors.astype(np.float32),
                "noise_grain": self.noise_grains.astype(np.int32), "noise_seed": self.noise_seeds.astype(np.int32)}


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


# Columns of the one uniform draw per sample (fixed, so toggling an option never shifts the others).
_DRAWS = ("angle", "scale", "tx", "ty", "r", "g", "b", "occlude", "area", "aspect", "x0", "y0", "noise",
          "occ_r", "occ_g", "occ_b", "grain", "noise_seed")


def sample_params(cfg: AugmentConfig, batch: int, rng: np.random.Generator,
                  resolution: int = RESOLUTION) -> AugmentParams:
    """Draw one batch of parameters; a switched-off augmentation takes its identity.

    One (18, batch) uniform draw, one row per quantity (:data:`_DRAWS`).
    """
    return params_from_uniforms(cfg, rng.random((len(_DRAWS), batch)), resolution)


def params_from_uniforms(cfg: AugmentConfig, uniforms: np.ndarray, resolution: int = RESOLUTION) -> AugmentParams:
    """Parameters of B samples from (18, B) uniforms in [0, 1) (rows: :data:`_DRAWS`)."""
    batch = uniforms.shape[1]
    u = dict(zip(_DRAWS, uniforms))

    def between(lo_hi: tuple[float, float], v: np.ndarray) -> np.ndarray:
        return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * v

    angles = between(cfg.rotation_range_deg, u["angle"]) if cfg.rotation else np.zeros(batch)
    scales = between(cfg.scale_range, u["scale"]) if cfg.scale else np.ones(batch)
    t = cfg.translation_frac * resolution
    shifts = (np.stack([between((-t, t), u["tx"]), between((-t, t), u["ty"])], 1) if cfg.translation
              else np.zeros((batch, 2)))
    colors = np.stack([between(cfg.color_range, u[c]) for c in "rgb"], 1) if cfg.color else np.ones((batch, 3))
    occluders = np.zeros((batch, 4), np.int32)
    noise = np.zeros(batch, bool)
    occ_colors = np.zeros((batch, 3), np.float32)
    grains, seeds = np.ones(batch, np.int32), np.zeros(batch, np.int32)
    if cfg.occlusion:
        on = u["occlude"] < cfg.occlusion_p
        area = between(cfg.occlusion_area, u["area"]) * resolution**2
        # Log-uniform aspect (w / h): tall and wide patches equally likely.
        aspect = np.exp(between(tuple(np.log(cfg.occlusion_aspect)), u["aspect"]))
        w = np.clip(np.rint(np.sqrt(area * aspect)), 1, resolution).astype(np.int32)
        h = np.clip(np.rint(np.sqrt(area / aspect)), 1, resolution).astype(np.int32)
        x0 = np.floor(u["x0"] * (resolution - w + 1)).astype(np.int32)
        y0 = np.floor(u["y0"] * (resolution - h + 1)).astype(np.int32)
        occluders = np.where(on[:, None], np.stack([x0, y0, x0 + w, y0 + h], 1), 0).astype(np.int32)
        noise = u["noise"] < 0.5
        occ_colors = np.stack([u["occ_r"], u["occ_g"], u["occ_b"]], 1).astype(np.float32)
        grains = (1 + np.floor(16 * u["grain"])).astype(np.int32)
        seeds = np.floor(65536 * u["noise_seed"]).astype(np.int32)
    return AugmentParams(affine_matrices(angles, scales, shifts, (resolution - 1) / 2.0), scales,
                         colors.astype(np.float32), occluders, noise, occ_colors, grains, seeds)


def sample_params_per_sample(cfg: AugmentConfig, rngs: list[np.random.Generator],
                             resolution: int = RESOLUTION) -> AugmentParams:
    """One draw per sample, each from its own generator: a sample's augmentation then does
    not depend on which batch, shard or worker it is made in."""
    draws = np.stack([rng.random(len(_DRAWS)) for rng in rngs], 1) if rngs else np.zeros((len(_DRAWS), 0))
    return params_from_uniforms(cfg, draws, resolution)


def warp_images(images: np.ndarray, matrices: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(B, H, W, C) images through (B, 2, 3) affines: bilinear, border 0, same dtype.

    One ``cv2.warpAffine`` per sample (OpenCV releases the GIL, so threads scale).
    """
    out = np.empty_like(images) if out is None else out
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


# float16 bit pattern -> float32 value (256 kB: stays in cache while a batch is converted).
_HALF_TO_FLOAT = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


@njit(cache=True, nogil=True)
def _warp_label_planes_kernel(planes, table, m, scales, factor, out):
    # As _warp_labels_kernel, reading float16 maps stored as their two byte planes (HDF5's
    # shuffled layout): un-shuffle, widen and warp in one pass, same float64 arithmetic.
    n = out.shape[1] * out.shape[2] * 3
    for b in range(out.shape[0]):
        lo = planes[b, 0].reshape(n)
        hi = planes[b, 1].reshape(n)
        dst = out[b].reshape(n)
        m00, m01, m02 = m[b, 0, 0], m[b, 0, 1], m[b, 0, 2]
        m10, m11, m12 = m[b, 1, 0], m[b, 1, 1], m[b, 1, 2]
        sz = scales[b] * factor
        for k in range(0, n, 3):
            x = table[np.int32(lo[k]) | (np.int32(hi[k]) << 8)]
            y = table[np.int32(lo[k + 1]) | (np.int32(hi[k + 1]) << 8)]
            z = table[np.int32(lo[k + 2]) | (np.int32(hi[k + 2]) << 8)]
            if x == 0.0 and y == 0.0 and z == 0.0:
                dst[k] = 0.0
                dst[k + 1] = 0.0
                dst[k + 2] = 0.0
            else:
                dst[k] = (m00 * x + m01 * y + m02) * factor
                dst[k + 1] = (m10 * x + m11 * y + m12) * factor
                dst[k + 2] = z * sz


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
                       factor: float = 1.0, inplace: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """Map the values of (B, R, R, 3) position maps (crop px) through (B, 2, 3) affines.

    x, y -> M·[x, y, 1]; z -> s·z; everything then × ``factor`` (1 / LABEL_SCALE gives the
    network's label). The UV grid is untouched and uncovered pixels (all channels 0) stay
    0. Returns a new float32 array, writes into ``out`` (float32, C-contiguous), or with
    ``inplace`` into ``position_maps`` when it is C-contiguous float32.

    ``position_maps`` may also be float16 maps as uint8 byte planes (B, 2, R, R, 3) (low
    bytes, then high bytes: how deflated HDF5 files store them); they are widened in the same
    pass, with the result of widening first (``inplace`` does not apply).
    """
    if position_maps.dtype == np.uint8:
        planes = np.ascontiguousarray(position_maps)
        if planes.ndim != 5 or planes.shape[1] != 2:
            raise ValueError(f"byte-plane position maps: expected (B, 2, R, R, 3), got {planes.shape}")
        if out is None:
            out = np.empty((planes.shape[0], *planes.shape[2:]), np.float32)
        _warp_label_planes_kernel(planes, _HALF_TO_FLOAT, np.ascontiguousarray(matrices, np.float64),
                                  np.asarray(scales, np.float64), np.float64(factor), out)
        return out
    pm = np.ascontiguousarray(position_maps, dtype=np.float32)
    if out is None:
        out = pm if inplace and pm is position_maps else np.empty_like(pm)
    _warp_labels_kernel(pm, np.ascontiguousarray(matrices, np.float64), np.asarray(scales, np.float64),
                        np.float64(factor), out)
    return out


def scale_colors(images: np.ndarray, colors: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(B, H, W, 3) uint8 -> float32 image / 255 × (B, 3) channel factors, clipped to [0, 1]."""
    out = np.empty(images.shape, np.float32) if out is None else out
    _scale_colors_kernel(np.ascontiguousarray(images), np.ascontiguousarray(colors, np.float32), out)
    return out


def hash16(x: np.ndarray) -> np.ndarray:
    """A bijective 16-bit integer mix on int32 arrays (values in [0, 65536)).

    Only xor, shifts and products below 2**31, so :mod:`.device_augment` computes the
    same numbers with ``keras.ops`` on every backend.
    """
    x = x ^ (x >> 8)
    x = (x * 0x5BD1) & 0xFFFF
    x = x ^ (x >> 7)
    x = (x * 0x2C1B) & 0xFFFF
    return x ^ (x >> 9)


def noise_value(seed: np.ndarray, gy: np.ndarray, gx: np.ndarray, channel: np.ndarray) -> np.ndarray:
    """Texel value in [0, 1] of the noise grid ``seed`` at row ``gy``, column ``gx`` (< 256)."""
    h = hash16(hash16(seed) ^ gy)
    return hash16(h ^ (gx | (channel << 8))).astype(np.float32) * np.float32(1.0 / 65535.0)


def noise_coordinates(offset: Any, grain: Any, backend: Any = np) -> tuple[Any, Any]:
    """Pixel offset inside the box -> (texel index, weight of the next texel), elementwise.

    Grains 1-2: nearest texel (weight 0); larger: bilinear between texel centres, the first
    half texel clamped, i.e. the texel grid resized ``grain`` times with OpenCV's bilinear
    resize. ``backend``: numpy, or ``keras.ops`` (:mod:`.device_augment`).
    """
    ops = backend
    g = ops.cast(grain, "float32") if ops is not np else np.asarray(grain, np.float32)
    o = ops.cast(offset, "float32") if ops is not np else np.asarray(offset, np.float32)
    f = ops.maximum((o + 0.5) / g - 0.5, 0.0)
    i = ops.floor(f)
    nearest = g <= 2.0
    index = ops.where(nearest, ops.floor(o / g), i)
    weight = ops.where(nearest, ops.zeros_like(f), f - i)
    return (ops.cast(index, "int32") if ops is not np else index.astype(np.int32)), weight


def noise_texture(seed: int, grain: int, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float32 noise texture in [0, 1]: a grid of random texels ``grain`` px apart
    (see :func:`noise_coordinates`); the grid is hashed from ``seed`` (:func:`noise_value`)."""
    g = int(grain)
    ny, nx = -(-h // g) + 1, -(-w // g) + 1
    gy, gx, c = np.ogrid[:ny, :nx, :3]
    grid = noise_value(np.int32(seed), gy, gx, c)
    if g <= 2:
        return np.repeat(np.repeat(grid, g, 0), g, 1)[:h, :w]
    return cv2.resize(grid, (nx * g, ny * g), interpolation=cv2.INTER_LINEAR)[:h, :w]


def occlude(images: np.ndarray, params: AugmentParams) -> None:
    """Paint each sample's occluder box in place on (B, H, W, 3) float32 images in [0, 1]."""
    for i, (x0, y0, x1, y1) in enumerate(params.occluders):
        if x1 <= x0 or y1 <= y0:
            continue
        if params.occluder_noise[i]:
            images[i, y0:y1, x0:x1] = noise_texture(params.noise_seeds[i], params.noise_grains[i],
                                                    int(y1 - y0), int(x1 - x0))
        else:
            images[i, y0:y1, x0:x1] = params.occluder_colors[i]


def apply_params(images: np.ndarray, position_maps: np.ndarray, params: AugmentParams,
                 label_factor: float = 1.0, overwrite_maps: bool = False,
                 out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Augment one batch with given parameters.

    images (B, R, R, 3) uint8 RGB crops; position_maps (B, R, R, 3) float32 crop px (or
    float16 byte planes, see :func:`warp_position_maps`).
    Returns images float32 in [0, 1] and position maps float32 in crop px × ``label_factor``
    (pass 1 / LABEL_SCALE for network labels). ``overwrite_maps`` lets the labels reuse
    ``position_maps``' memory (the caller owns it); ``out`` = (image, label) float32 arrays
    to write into instead (e.g. shared batch buffers).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise InputError(f"augmentation: images must be uint8 crops, got {images.dtype}")
    if not np.allclose(params.matrices, AugmentParams.identity(len(images)).matrices):
        images = warp_images(images, params.matrices)
    x_out, y_out = out if out is not None else (None, None)
    position_maps = warp_position_maps(position_maps, params.matrices, params.scales, label_factor,
                                       overwrite_maps, out=y_out)
    x = scale_colors(images, params.colors, out=x_out)  # factors > 1 saturate: clipped to 1
    if params.occluders.any():
        occlude(x, params)
    return x, position_maps


def augment_batch(images: np.ndarray, position_maps: np.ndarray, cfg: AugmentConfig,
                  rng: np.random.Generator, label_factor: float = 1.0,
                  overwrite_maps: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Sample parameters from ``rng`` and apply them (see :func:`apply_params`)."""
    params = sample_params(cfg, len(images), rng, images.shape[1])
    return apply_params(images, position_maps, params, label_factor, overwrite_maps)
