"""Ground-truth position maps from a morphable-model fit (docs/conventions.md).

parameters -> model vertices -> 3DDFA pose -> y flip -> keypoint box × 1.5 (seeded
perturbation for training sets) -> similarity onto 256² -> UV position map, plus the crop.

The position map is rendered with the face *and* mouth triangles (``model.all_triangles``),
as PRNet's generator does (face3d ``full_triangles``): the official face mask includes 129
pixels of the inner-lip gap that only the mouth triangles cover.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

import cv2
import numpy as np

from prnet_keras import RESOLUTION
from prnet_keras.data.sources import Fit, parse_fit
from prnet_keras.errors import InputError
from prnet_keras.geometry import (
    CropConfig, MorphableModel, UVLayout, crop_transform, parse_pose_para, pose_vertices, training_crop,
    transform_scale,
    uv_pixel_coords,
)
from prnet_keras.geometry.raster import uv_render_plan


VERTEX_GROUP = 16  # samples per model GEMM
# Plausibility of a fit in its image (beyond these the sample is skipped, never stored):
KEYPOINT_MARGIN = 0.5   # keypoints within the image grown by this fraction of its size on each side
MIN_FACE_PX = 4.0       # keypoint box mean side, pixels
MIN_CROP_INSIDE = 0.25  # fraction of the crop square that must lie inside the image


def sample_rng(seed: int, name: str) -> np.random.Generator:
    """Per-sample generator from (seed, sample name): the same crop whatever the order,
    sharding, worker count or resume point."""
    digest = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, digest])


def warp_crop(image: np.ndarray, transform: np.ndarray, resolution: int = RESOLUTION) -> np.ndarray:
    """Bilinear warp of an (H, W, 3) uint8 image through the 3x3 crop transform; border 0."""
    return cv2.warpAffine(
        image, np.asarray(transform, np.float64)[:2], (resolution, resolution),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )


class GroundTruthMaker:
    """Renders GT for one morphable model + UV layout; holds what is reused between samples.

    ``crop_config``: ``geometry.CropConfig`` or a ``crop`` section mapping (train_scale,
    center_jitter, size_jitter are used); None: the packaged defaults.
    """

    def __init__(self, model: MorphableModel, layout: UVLayout,
                 crop_config: CropConfig | Mapping[str, Any] | None = None):
        cfg = CropConfig.coerce(crop_config)
        self.model = model
        self.layout = layout
        self.resolution = int(layout.resolution)
        self.crop_config = cfg
        self.scale = cfg.train_scale
        self.center_jitter = cfg.center_jitter
        self.size_jitter = cfg.size_jitter
        self.uv_px = uv_pixel_coords(model.uv_coords, self.resolution)
        self.triangles = np.ascontiguousarray(model.all_triangles, np.int32)
        # The UV rasterisation never changes: precompute it once, rendering is then a gather.
        self.plan = uv_render_plan(self.uv_px, self.triangles, self.resolution)

    def parse(self, mat: dict | Fit, name: str = "sample") -> Fit:
        if isinstance(mat, Fit):
            return mat
        return parse_fit(mat, name, self.model.n_shape, self.model.n_exp)

    def model_vertices(self, fits: list[Fit]) -> np.ndarray:
        """(B, n, 3) float32 model-frame vertices of several fits in one GEMM."""
        for f in fits:
            if f.shape_para.size != self.model.n_shape or f.exp_para.size != self.model.n_exp:
                raise InputError(
                    f"Shape_Para/Exp_Para: expected {self.model.n_shape}/{self.model.n_exp} coefficients "
                    f"for model {self.model.name!r}, got {f.shape_para.size}/{f.exp_para.size}"
                )
        sp = np.stack([f.shape_para for f in fits])
        ep = np.stack([f.exp_para for f in fits])
        # Always GEMMs of exactly VERTEX_GROUP columns (zero-padded): BLAS picks kernels by
        # shape (a 1-column product goes through GEMV), and the last bits of a vertex must not
        # depend on which samples happen to share a group (shards, resume, skipped samples).
        g = VERTEX_GROUP
        pad = (-len(fits)) % g
        sp = np.concatenate([sp, np.zeros((pad, sp.shape[1]), sp.dtype)])
        ep = np.concatenate([ep, np.zeros((pad, ep.shape[1]), ep.dtype)])
        out = [self.model.vertices_batch(sp[i:i + g], ep[i:i + g]) for i in range(0, len(sp), g)]
        return np.concatenate(out)[: len(fits)]

    def keypoints(self, vertices: np.ndarray, fit: Fit, image_height: int) -> np.ndarray:
        """(68, 3) float32 image-frame model keypoints (x, y pixels, y down; z larger = nearer)."""
        kpts = pose_vertices(vertices[self.model.kpt_ind], fit.pose_para, image_height)
        if not np.all(np.isfinite(kpts)):
            raise InputError("Pose_Para/Shape_Para: posed keypoints are not finite")
        return kpts

    def check_placement(self, keypoints: np.ndarray, image_shape: tuple[int, ...],
                        transform: np.ndarray | None = None) -> None:
        """InputError unless the posed 68 keypoints (68, 2+) image pixels sit plausibly in the image
        (see KEYPOINT_MARGIN, MIN_FACE_PX) and, with ``transform``, enough of the crop lies inside it."""
        h, w = image_shape[:2]
        k = np.asarray(keypoints, np.float64)[:, :2]
        lo, hi = k.min(0), k.max(0)
        m = KEYPOINT_MARGIN
        if not (np.all(lo >= [-m * w, -m * h]) and np.all(hi <= [(1 + m) * w, (1 + m) * h])):
            raise InputError(f"Pose_Para: the face's keypoints span x {lo[0]:.4g}..{hi[0]:.4g}, "
                             f"y {lo[1]:.4g}..{hi[1]:.4g}, "
                             f"outside the {w}x{h} image (scale or translation implausible)")
        centre, side = (lo + hi) / 2, float(np.mean(hi - lo))
        if not (0 <= centre[0] <= w and 0 <= centre[1] <= h):
            raise InputError(f"Pose_Para: the face's centre ({centre[0]:.4g}, {centre[1]:.4g}) lies outside the "
                             f"{w}x{h} image")
        if not MIN_FACE_PX <= side <= 2 * max(h, w):
            raise InputError(f"Pose_Para: the face is {side:.4g} px wide in a {w}x{h} image (scale implausible)")
        if transform is not None:
            t = np.asarray(transform, np.float64)  # crop_transform: [[k, 0, -k left], [0, k, -k top], ...]
            k_scale = t[0, 0]
            left, top, size = -t[0, 2] / k_scale, -t[1, 2] / k_scale, (self.resolution - 1) / k_scale
            inside = (max(0.0, min(left + size, w) - max(left, 0.0)) * max(0.0, min(top + size, h) - max(top, 0.0))
                      / max(size * size, 1e-12))
            if inside < MIN_CROP_INSIDE:
                raise InputError(f"crop: only {100 * inside:.0f} % of the crop lies inside the {w}x{h} image")

    @staticmethod
    def check_crop(crop: np.ndarray) -> None:
        """InputError when a crop the label calls a face is blank (one colour, e.g. all black)."""
        if int(crop.max()) - int(crop.min()) < 8:
            raise InputError("crop: blank (one colour) where the label places a face")

    def crop_of(self, keypoints: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """3x3 image -> crop transform from image-frame keypoints (68, 2+); perturbed with ``rng``."""
        centre, size = training_crop(keypoints[:, :2], rng, self.scale, self.center_jitter, self.size_jitter)
        if not size > 1e-6:
            raise InputError(f"keypoint box is degenerate (size {size:.3g} px)")
        return crop_transform(centre, size, self.resolution)

    def crop_vertices(self, vertices: np.ndarray, fit: Fit, image_height: int, transform: np.ndarray) -> np.ndarray:
        """Model-frame (n, 3) -> crop frame in one affine map (pose, y flip, crop, z·k), then z -= min z.

        Same result as vertices_to_crop(pose_vertices(...), T) with one pass over the vertices.
        """
        s, rot, t = parse_pose_para(fit.pose_para)
        k = transform_scale(transform)
        flip = np.diag([k, -k, k])
        m = flip @ (s * rot)
        c = np.array([k * t[0] + transform[0, 2], k * (image_height - 1 - t[1]) + transform[1, 2], k * t[2]])
        out = np.asarray(vertices, np.float32) @ m.T.astype(np.float32)
        out += c.astype(np.float32)
        out[:, 2] -= out[:, 2].min()
        if not np.all(np.isfinite(out)):
            raise InputError("Pose_Para: posed vertices are not finite")
        return out

    def position_map(self, crop_vertices: np.ndarray) -> np.ndarray:
        """(R, R, 3) float32 UV position map of crop-frame vertices (0 outside the UV footprint)."""
        return self.plan.render(crop_vertices)

    def make(
        self,
        image: np.ndarray,
        fit: Fit,
        vertices: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
        transform: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Everything of one sample; ``transform`` (3x3) overrides the crop box when given."""
        h, w = image.shape[:2]
        if vertices is None:
            vertices = self.model_vertices([fit])[0]
        kpts = self.keypoints(vertices, fit, h)
        t = self.crop_of(kpts, rng) if transform is None else np.asarray(transform, np.float64)
        self.check_placement(kpts, image.shape, t)
        kpt68 = fit.pt3d_68 if fit.pt3d_68 is not None else kpts
        return {
            "crop": warp_crop(image, t, self.resolution),
            "position_map": self.position_map(self.crop_vertices(vertices, fit, h, t)),
            "transform": t,
            "kpt68": np.asarray(kpt68, np.float32),
            "pose_para": fit.pose_para.astype(np.float32),
            "yaw": float(np.degrees(fit.pose_para[1])),
            "image_size": (int(h), int(w)),
        }


def make_ground_truth(
    model: MorphableModel,
    layout: UVLayout,
    image: np.ndarray,
    mat: dict | Fit,
    rng: np.random.Generator | None = None,
    crop_config: CropConfig | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """GT of one sample.

    image: (H, W, 3) uint8 RGB; mat: the ``.mat`` dict (or a parsed :class:`Fit`);
    rng: crop perturbation (training sets) or None (exact box, validation); crop_config: the
    crop rules (``geometry.CropConfig``; None: the packaged defaults).
    Returns ``crop`` (R, R, 3) uint8, ``position_map`` (R, R, 3) float32 crop pixels,
    ``transform`` (3, 3) float64 image -> crop, ``kpt68`` (68, 3) float32 image frame
    (pt3d_68 when present, else the model's projected keypoints), ``pose_para`` (7,)
    float32, ``yaw`` degrees, ``image_size`` (h, w).
    """
    maker = GroundTruthMaker(model, layout, crop_config)
    return maker.make(image, maker.parse(mat), rng=rng)
