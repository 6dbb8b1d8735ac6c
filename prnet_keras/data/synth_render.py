"""Rendering of synthetic face images: parameters, shading, backgrounds and occluders.

Everything here is plain numpy / OpenCV / numba (no TensorFlow), deterministic for a given
``numpy.random.Generator``, and works with any :class:`MorphableModel`. Image frame: x right,
y down, z larger = nearer (docs/conventions.md); colours are RGB float32 in [0, 1] until encoded.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from prnet_keras.geometry.morphable import MorphableModel
from prnet_keras.geometry.pose import make_pose_para, pose_vertices
from prnet_keras.geometry.raster import rasterize

# AFLW2000-3D's 21 points as 68-point indices; a tuple is averaged (eye centres, mouth centre).
AFLW21 = (17, 19, 21, 22, 24, 26, 36, (37, 38, 40, 41), 39, 42, (43, 44, 46, 47), 45,
          2, 31, 30, 35, 14, 48, (62, 66), 54, 8)
# Left/right swap of the iBUG 68 scheme (what a horizontal mirror does to the labels).
FLIP68 = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40] + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
    + [64, 63, 62, 61, 60, 67, 66, 65]
)


@dataclasses.dataclass
class FaceParams:
    """One sample's fit, in the 300W-LP ``.mat`` layout (shapes as stored there)."""

    shape_para: np.ndarray  # (n_shape,) raw coefficients
    exp_para: np.ndarray  # (n_exp,)
    tex_para: np.ndarray  # (n_tex,)
    pose_para: np.ndarray  # (1, 7) float32 [pitch, yaw, roll, tx, ty, tz, s]
    color_para: np.ndarray  # (1, 7) float32 [gain r, g, b, offset r, g, b, contrast]
    illum_para: np.ndarray  # (1, 10) [ambient r, g, b, directional r, g, b, θ_l, φ_l, ks, shininess]


# ---- parameters ------------------------------------------------------------------------------
def sample_yaw(rng: np.random.Generator, near_frontal_fraction: float) -> float:
    """Yaw in degrees: |yaw| <= 30 with the given probability, else uniform in (30, 90]."""
    if rng.random() < near_frontal_fraction:
        mag = rng.uniform(0.0, 30.0)
    else:
        mag = rng.uniform(30.0, 90.0)
    return float(mag if rng.random() < 0.5 else -mag)


def sample_identity(model: MorphableModel, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shape_para, exp_para, tex_para) ~ N(0, ev²), clipped to ±3 std.

    On the synthetic model the semantic expressions are kept plausible: jaw open and eye
    close are one-sided and often zero (faces mostly have their eyes open).
    """
    sp = np.clip(rng.standard_normal(model.n_shape), -3, 3) * model.shape_ev
    ep = np.clip(rng.standard_normal(model.n_exp), -3, 3) * model.exp_ev
    tp = np.clip(rng.standard_normal(model.n_tex), -3, 3) * model.tex_ev
    if model.name.startswith("synthetic") and model.n_exp >= 4:
        ep[0] = abs(ep[0]) * (rng.random() < 0.6)
        ep[3] = abs(ep[3]) * (rng.random() < 0.25)
    return sp.astype(np.float64), ep.astype(np.float64), tp.astype(np.float64)


def sample_pose(model: MorphableModel, shape_para: np.ndarray, exp_para: np.ndarray, rng: np.random.Generator,
                size: int, near_frontal_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Pose_Para (1, 7) placing the face in frame like 300W-LP, and the image-frame vertices (n, 3).

    Face width (keypoints 0-16 of the frontal mean) is 40-60 % of the image; the keypoint box
    centre lands within ±6 % of the image centre and the box stays inside the image.
    """
    angles = np.deg2rad([np.clip(rng.normal(0.0, 10.0), -30, 30), sample_yaw(rng, near_frontal_fraction),
                         np.clip(rng.normal(0.0, 8.0), -30, 30)])
    mean_k = model.vertices()[model.kpt_ind]
    s = rng.uniform(0.40, 0.60) * size / float(np.ptp(mean_k[:, 0]))
    v = model.vertices(shape_para, exp_para)
    at0 = pose_vertices(v, make_pose_para(angles, [0.0, 0.0, 0.0], s), size)
    k = at0[model.kpt_ind]
    lo, hi = k[:, :2].min(0), k[:, :2].max(0)
    target = size / 2.0 + rng.uniform(-0.06, 0.06, 2) * size
    shift = target - (lo + hi) / 2.0
    margin = 0.04 * size
    shift = np.clip(shift, margin - lo, size - 1 - margin - hi)  # keep the keypoint box in frame
    # image x = V'x + tx, image y = h-1-(V'y + ty): a shift dy down is ty = -dy.
    tz = -float(at0[:, 2].mean())  # centres the posed depth on 0, as the real fits roughly do
    pose = make_pose_para(angles, [shift[0], -shift[1], tz], s)
    # Recompute from the stored float32 parameters so files and pixels agree exactly.
    return pose, pose_vertices(v, pose, size)


def sample_appearance(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(Color_Para (1, 7) float32, Illum_Para (1, 10) float64): skin tone gains, light colour and direction."""
    tone = rng.uniform(0.45, 1.15)  # dark to light skin
    gains = tone * rng.uniform(0.9, 1.1, 3) * np.array([1.0, rng.uniform(0.9, 1.02), rng.uniform(0.85, 1.02)])
    offsets = rng.uniform(-0.03, 0.03, 3)
    color = np.concatenate([gains, offsets, [1.0]]).astype(np.float32)[None]
    ambient = rng.uniform(0.25, 0.6) * rng.uniform(0.92, 1.08, 3)
    direct = rng.uniform(0.4, 0.85) * rng.uniform(0.92, 1.08, 3)
    theta_l, phi_l = rng.uniform(-0.5, 1.0), rng.uniform(-1.1, 1.1)  # elevation, azimuth (radians)
    illum = np.concatenate([ambient, direct, [theta_l, phi_l, 0.0, 20.0]])[None]
    return color, illum


def light_direction(illum_para: np.ndarray) -> np.ndarray:
    """Unit light direction in the image frame (y down) from Illum_Para's elevation and azimuth."""
    theta, phi = float(illum_para[0, 6]), float(illum_para[0, 7])
    d = np.array([np.cos(theta) * np.sin(phi), -np.sin(theta), np.cos(theta) * np.cos(phi)])
    return d / np.linalg.norm(d)


# ---- rendering -------------------------------------------------------------------------------
def _normals(v: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (n, 3), oriented toward the camera (+z); bincount, not add.at."""
    fn = np.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]]).astype(np.float64)
    n = np.empty((v.shape[0], 3))
    idx = tri.reshape(-1)
    for c in range(3):
        n[:, c] = np.bincount(idx, weights=np.repeat(fn[:, c], 3), minlength=v.shape[0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    n[n[:, 2] < 0] *= -1.0
    return n.astype(np.float32)


def shade_face(model: MorphableModel, params: FaceParams, posed: np.ndarray, size: int,
               width: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render the face: (RGB (H, W, 3) float32 in [0, 1], coverage (H, W) float32, z-buffer (H, W)).

    H = ``size``, W = ``width`` (default ``size``: square images).

    Per-vertex colour = gain·texture + offset; light = ambient + directional·max(n·l, 0)
    per channel (Lambert), rasterised with the z-buffer over face and mouth triangles.
    """
    tri = model.all_triangles
    col = model.colors(params.tex_para)
    cp = params.color_para.reshape(-1)
    col = np.clip(col * cp[:3] + cp[3:6], 0.0, 1.0)
    il = params.illum_para.reshape(-1)
    lam = np.clip(_normals(posed, tri) @ light_direction(params.illum_para).astype(np.float32), 0.0, 1.0)
    shade = il[None, :3] + il[None, 3:6] * lam[:, None]
    attr = np.concatenate([col * shade, np.ones((col.shape[0], 1))], 1).astype(np.float32)
    img, depth, _ = rasterize(posed, tri, attr, size, size if width is None else int(width))
    return np.clip(img[..., :3], 0.0, 1.0), img[..., 3], depth


def keypoint_visibility(kpts: np.ndarray, depth: np.ndarray, coverage: np.ndarray, posed: np.ndarray) -> np.ndarray:
    """(68,) bool: keypoint inside the image and within 1 % of the depth range of the z-buffer."""
    h, w = depth.shape
    cols, rows = np.rint(kpts[:, 0]).astype(int), np.rint(kpts[:, 1]).astype(int)
    inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    rc, cc = np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)
    tol = max(0.5, 0.01 * float(np.ptp(posed[:, 2])))
    return inside & (coverage[rc, cc] > 0) & (kpts[:, 2] >= depth[rc, cc] - tol)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Cluttered background (H, W, 3) float32: gradient, random shapes and lines, blur, noise."""
    c0, c1 = rng.uniform(0, 1, 3).astype(np.float32), rng.uniform(0, 1, 3).astype(np.float32)
    ang = rng.uniform(0, np.pi)
    ramp = np.arange(size, dtype=np.float32) / size
    g = np.clip(np.float32(np.cos(ang)) * ramp[None, :] + np.float32(np.sin(ang)) * ramp[:, None], 0, 1)[..., None]
    img = (1 - g) * c0 + g * c1
    # Blotchy low-frequency texture (cheap: drawn small, upsampled).
    blot = rng.uniform(-0.12, 0.12, (size // 16, size // 16, 3)).astype(np.float32)
    img += cv2.resize(blot, (size, size), interpolation=cv2.INTER_CUBIC) * np.float32(rng.uniform(0, 1))
    for _ in range(int(rng.integers(4, 14))):
        colour = tuple(float(c) for c in rng.uniform(0, 1, 3))
        kind = rng.integers(0, 4)
        p = rng.integers(-size // 4, size + size // 4, 4)
        if kind == 0:
            cv2.rectangle(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), colour, -1)
        elif kind == 1:
            cv2.circle(img, (int(p[0]), int(p[1])), int(rng.integers(8, size // 4)), colour, -1)
        elif kind == 2:
            cv2.line(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), colour, int(rng.integers(1, 12)))
        else:
            axes = (int(rng.integers(8, size // 4)), int(rng.integers(8, size // 4)))
            cv2.ellipse(img, (int(p[0]), int(p[1])), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    k = int(rng.choice([1, 3, 5, 9]))
    if k > 1:
        img = cv2.GaussianBlur(img, (k, k), 0)
    return img


def occlude(img: np.ndarray, kpts: np.ndarray, rng: np.random.Generator) -> str:
    """Draw one occluder over the face in place: "patch", "hand" or "glasses". Returns its kind.

    kpts: (68, 2) image-frame landmarks (where the face is).
    """
    lo, hi = kpts.min(0), kpts.max(0)
    w, h = max(hi[0] - lo[0], 8.0), max(hi[1] - lo[1], 8.0)
    kind = str(rng.choice(["patch", "hand", "glasses"]))
    if kind == "glasses":
        le, re = kpts[36:42].mean(0), kpts[42:48].mean(0)
        r = max(0.22 * w, 4.0)
        colour = tuple(float(c) for c in rng.uniform(0.0, 0.15, 3))
        tilt = float(np.degrees(np.arctan2(re[1] - le[1], re[0] - le[0])))
        for e in (le, re):
            cv2.ellipse(img, (int(e[0]), int(e[1])), (int(r), int(0.7 * r)), tilt, 0, 360, colour, -1)
        cv2.line(img, (int(le[0]), int(le[1])), (int(re[0]), int(re[1])), colour, max(int(0.05 * w), 2))
    elif kind == "hand":
        c = lo + rng.uniform(0.2, 0.8, 2) * (hi - lo) + [0, 0.2 * h]
        skin = tuple(float(v) for v in np.array([0.85, 0.65, 0.55]) * rng.uniform(0.5, 1.1))
        cv2.ellipse(img, (int(c[0]), int(c[1])), (int(0.28 * w), int(0.22 * h)), float(rng.uniform(-40, 40)), 0, 360,
                    skin, -1)
        for i in range(4):
            fx = c[0] - 0.24 * w + i * 0.16 * w
            cv2.ellipse(img, (int(fx), int(c[1] - 0.3 * h)), (int(0.06 * w), int(0.2 * h)), 0, 0, 360, skin, -1)
    else:
        pw, ph = rng.uniform(0.2, 0.5) * w, rng.uniform(0.2, 0.5) * h
        x0 = int(lo[0] + rng.uniform(0, 1) * (w - pw))
        y0 = int(lo[1] + rng.uniform(0, 1) * (h - ph))
        x1, y1 = x0 + int(pw), y0 + int(ph)
        ys, xs = slice(max(y0, 0), max(y1, 0)), slice(max(x0, 0), max(x1, 0))
        region = img[ys, xs]
        if region.size:
            if rng.random() < 0.5:
                region[...] = rng.uniform(0, 1, 3)
            else:
                region[...] = rng.uniform(0, 1, region.shape)
    return kind


def compose(face: np.ndarray, coverage: np.ndarray, bg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Face over background with a soft edge, mild blur and sensor noise -> float32 (H, W, 3)."""
    alpha = cv2.GaussianBlur(coverage, (3, 3), 0)[..., None]
    img = bg + alpha * (face - bg)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    noise = rng.standard_normal(img.shape[:2] + (1,), dtype=np.float32)  # luminance noise: a third of the draws
    return img + noise * np.float32(rng.uniform(0.0, 0.03))


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def aflw21(kpts: np.ndarray, visible: np.ndarray, height: int) -> np.ndarray:
    """(2, 21) float64 AFLW points from (68, 2) landmarks; invisible ones are (-1, h+2) as in AFLW2000-3D."""
    out = np.empty((2, 21))
    for i, idx in enumerate(AFLW21):
        ids = list(idx) if isinstance(idx, tuple) else [idx]
        if visible[ids].all():
            out[:, i] = kpts[ids].mean(0)
        else:
            out[:, i] = (-1.0, height + 2.0)
    return out


def mirror_params(params: FaceParams, width: int) -> FaceParams:
    """Parameters of the horizontally mirrored image (x -> w-1-x) for a left-right symmetric model.

    With S = diag(-1, 1, 1): S·Rx(φ)Ry(γ)Rz(θ)·S = Rx(φ)Ry(-γ)Rz(-θ), so yaw and roll change
    sign, tx -> w-1-tx, and identity/expression/texture stay; the light azimuth mirrors too.
    """
    pose = params.pose_para.copy()
    pose[0, 1] *= -1.0
    pose[0, 2] *= -1.0
    pose[0, 3] = width - 1 - pose[0, 3]
    illum = params.illum_para.copy()
    illum[0, 7] *= -1.0
    return dataclasses.replace(params, pose_para=pose, illum_para=illum)
