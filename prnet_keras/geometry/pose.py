"""Pose and cameras in the 3DDFA convention (docs/conventions.md).

Angles are (pitch φ, yaw γ, roll θ) in radians and R = Rx(φ)·Ry(γ)·Rz(θ) with

    Rx = [[1, 0, 0], [0, cφ, sφ], [0, -sφ, cφ]]
    Ry = [[cγ, 0, -sγ], [0, 1, 0], [sγ, 0, cγ]]
    Rz = [[cθ, sθ, 0], [-sθ, cθ, 0], [0, 0, 1]]

Posed vertices are V' = s·V·Rᵀ + t (orthographic camera); image coordinates flip y with
the image height: y_img = h - 1 - V'y, and z stays (larger = nearer the camera).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from prnet_keras.errors import InputError

_GIMBAL_EPS = 1e-12


def angles_to_rotation(angles: np.ndarray) -> np.ndarray:
    """(3,) [pitch, yaw, roll] radians -> (3, 3) rotation R = Rx·Ry·Rz (float64)."""
    a = np.asarray(angles, dtype=np.float64).reshape(-1)
    if a.size != 3:
        raise InputError(f"angles: expected 3 values [pitch, yaw, roll] in radians, got {a.size}")
    phi, gamma, theta = (float(x) for x in a)
    cx, sx = np.cos(phi), np.sin(phi)
    cy, sy = np.cos(gamma), np.sin(gamma)
    cz, sz = np.cos(theta), np.sin(theta)
    rx = np.array([[1, 0, 0], [0, cx, sx], [0, -sx, cx]])
    ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    rz = np.array([[cz, sz, 0], [-sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


def rotation_to_angles(rotation: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> (3,) [pitch, yaw, roll] radians, inverse of angles_to_rotation.

    From R = Rx·Ry·Rz: R[0,2] = -sin(yaw), R[0,1]/R[0,0] = tan(roll), then pitch from
    R·Rz(roll)ᵀ = Rx·Ry. At gimbal lock (|yaw| = 90°) pitch and roll are not separable:
    roll is set to 0 and the whole in-plane angle goes to pitch. Angles rebuild R to
    ~1e-15 everywhere, including next to the lock.
    """
    r = np.asarray(rotation, dtype=np.float64)
    if r.shape != (3, 3):
        raise InputError(f"rotation: expected shape (3, 3), got {r.shape}")
    cos_yaw = float(np.hypot(r[0, 0], r[0, 1]))
    # atan2 rather than arcsin(-R[0,2]): stays accurate near |yaw| = 90°.
    yaw = np.arctan2(-r[0, 2], cos_yaw)
    # Roll from the first row (= cos(yaw)·[cos θ, sin θ]); at gimbal lock it is undefined: 0.
    roll = float(np.arctan2(r[0, 1], r[0, 0])) if cos_yaw > _GIMBAL_EPS else 0.0
    # Pitch from R·Rz(roll)ᵀ = Rx·Ry, whose entries [2,1] = -sin φ and [1,1] = cos φ do not
    # vanish near gimbal lock, so any roll error is absorbed and R is rebuilt exactly.
    cr, sr = np.cos(roll), np.sin(roll)
    m21 = r[2, 1] * cr - r[2, 0] * sr
    m11 = r[1, 1] * cr - r[1, 0] * sr
    pitch = np.arctan2(-m21, m11)
    return np.array([pitch, yaw, roll])


def parse_pose_para(pose_para: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """300W-LP / AFLW2000-3D ``Pose_Para`` (1x7 [pitch, yaw, roll, tx, ty, tz, s]) -> (s, R, t).

    t is (3,) [tx, ty, tz]; tz is carried but irrelevant (depth is re-based later).
    """
    p = np.asarray(pose_para, dtype=np.float64).reshape(-1)
    if p.size != 7:
        raise InputError(f"Pose_Para: expected 7 values [pitch, yaw, roll, tx, ty, tz, s], got {p.size}")
    if not np.all(np.isfinite(p)):
        raise InputError("Pose_Para: contains NaN or inf")
    return float(p[6]), angles_to_rotation(p[:3]), p[3:6].copy()


def make_pose_para(angles: np.ndarray, t: np.ndarray, s: float) -> np.ndarray:
    """Inverse of parse_pose_para's layout: (1, 7) float32 [pitch, yaw, roll, tx, ty, tz, s]."""
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    if t.size == 2:
        t = np.append(t, 0.0)
    return np.concatenate([np.asarray(angles, float).reshape(3), t, [s]]).astype(np.float32)[None]


def similarity_transform(vertices: np.ndarray, s: float, rotation: np.ndarray, t: np.ndarray) -> np.ndarray:
    """V' = s·V·Rᵀ + t for (n, 3) vertices; returns float32 (n, 3)."""
    v = np.asarray(vertices, dtype=np.float32)
    r = np.asarray(rotation, dtype=np.float32)
    return (np.float32(s) * (v @ r.T) + np.asarray(t, dtype=np.float32).reshape(1, 3)).astype(np.float32)


def to_image(vertices: np.ndarray, height: int) -> np.ndarray:
    """Camera frame (y up) -> image frame (y down): y = h - 1 - y. Returns a copy."""
    out = np.array(vertices, dtype=np.float32, copy=True)
    out[:, 1] = height - 1 - out[:, 1]
    return out


def from_image(vertices: np.ndarray, height: int) -> np.ndarray:
    """Image frame -> camera frame; the flip is its own inverse."""
    return to_image(vertices, height)


def pose_vertices(vertices: np.ndarray, pose_para: np.ndarray, image_height: int) -> np.ndarray:
    """Model-frame vertices + Pose_Para -> image-frame vertices (n, 3) float32, y down."""
    s, r, t = parse_pose_para(pose_para)
    return to_image(similarity_transform(vertices, s, r, t), image_height)


def orthographic_project(vertices: np.ndarray) -> np.ndarray:
    """(n, 3) -> (n, 2): the orthographic camera keeps x, y."""
    return np.asarray(vertices)[:, :2].copy()


@njit(cache=True, nogil=True)
def _centred_moments(src, dst):  # pragma: no cover - compiled
    """(all finite, mean of src (d,), mean of dst (d,), cross-covariance (d, d) of dst and src,
    variance of src) of two (n, d) float64 point sets, in two passes without temporaries."""
    n, d = src.shape
    mu_src, mu_dst = np.zeros(d), np.zeros(d)
    finite = True
    for i in range(n):
        for k in range(d):
            a, b = src[i, k], dst[i, k]
            finite = finite and math.isfinite(a) and math.isfinite(b)
            mu_src[k] += a
            mu_dst[k] += b
    mu_src /= n
    mu_dst /= n
    cov = np.zeros((d, d))
    var = 0.0
    for i in range(n):
        for k in range(d):
            xs = src[i, k] - mu_src[k]
            var += xs * xs
            for j in range(d):
                cov[j, k] += (dst[i, j] - mu_dst[j]) * xs
    return finite, mu_src, mu_dst, cov / n, var / n


@njit(cache=True, nogil=True)
def _rms_residual(src, dst, scale, rot, t):  # pragma: no cover - compiled
    """sqrt(mean over points of |dst - (scale·rot·src + t)|²) for (n, d) float64 point sets."""
    n, d = src.shape
    total = 0.0
    for i in range(n):
        for j in range(d):
            fit = t[j]
            for k in range(d):
                fit += scale * rot[j, k] * src[i, k]
            total += (dst[i, j] - fit) ** 2
    return math.sqrt(total / n)


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity dst ≈ s·R·src + t (Umeyama 1991) for (n, d) point sets.

    Returns (s, R (d, d) proper rotation, t (d,)). Reflections are excluded by the sign
    correction of the smallest singular value, so det(R) = +1 always.
    """
    src = np.ascontiguousarray(src, dtype=np.float64)
    dst = np.ascontiguousarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[0] < src.shape[1]:
        raise InputError(f"umeyama: expected two (n, d) arrays with n >= d, got {src.shape} and {dst.shape}")
    # one pass for the moments (a dense mesh: 44k points; numpy's temporaries cost ~2 ms)
    finite, mu_src, mu_dst, cov, var_src = _centred_moments(src, dst)
    if not finite:
        raise InputError("umeyama: point sets contain NaN or inf")
    d = src.shape[1]
    u, sig, vt = np.linalg.svd(cov)
    fix = np.ones(d)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[-1] = -1.0
    rot = u @ np.diag(fix) @ vt
    scale = float((sig * fix).sum() / var_src) if with_scale and var_src > 0 else 1.0
    t = mu_dst - scale * rot @ mu_src
    return scale, rot, t


def rms_residual(src: np.ndarray, dst: np.ndarray, scale: float, rot: np.ndarray, t: np.ndarray) -> float:
    """Root-mean-square distance between ``dst`` and ``scale·rot·src + t`` ((n, d) point sets)."""
    src, dst, rot, t = (np.ascontiguousarray(a, np.float64) for a in (src, dst, rot, t))
    return float(_rms_residual(src, dst, float(scale), rot, t))


def estimate_pose_para(reference: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Pose_Para (1, 7) [pitch, yaw, roll, tx, ty, tz, s] of ``points`` relative to ``reference``.

    reference (n, 3): a frontal face in the model frame (y up), e.g.
    ``UVLayout.canonical_vertices``; points (n, 3): the same surface points in the camera
    frame (y up; use :func:`from_image` on image-frame points). Solves points ≈
    s·reference·Rᵀ + t by :func:`umeyama` and decomposes R into 3DDFA angles.
    """
    s, rot, t = umeyama(reference, points)
    return make_pose_para(rotation_to_angles(rot), t, s)


def camera_matrix(s: float, rotation: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(3, 4) affine camera P = [s·R | t] so that V' = P·[V; 1]."""
    p = np.zeros((3, 4))
    p[:, :3] = s * np.asarray(rotation)
    p[:, 3] = np.asarray(t).reshape(3)
    return p


# ---- batched affine cameras (landmark fitting) ----------------------------------------------------
def affine_camera(model_points: np.ndarray, image_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares affine camera x ≈ M·X + t for B point sets, after normalising both sides.

    model_points (B, N, 3); image_points (B, N, r), r = 2 (x, y) or 3 (x, y, z), camera frame.
    Returns M (B, r, 3) and t (B, r). Both point sets are centred and scaled to unit RMS
    distance before solving (Hartley's normalisation), which keeps the 3x3 normal equations
    well conditioned whatever the units; the result is mapped back to the original units.
    """
    X = np.asarray(model_points, np.float64)
    x = np.asarray(image_points, np.float64)
    mx, mX = x.mean(1, keepdims=True), X.mean(1, keepdims=True)
    xc, Xc = x - mx, X - mX
    sx = 1.0 / np.sqrt((xc**2).sum(-1).mean(1))[:, None, None]
    sX = 1.0 / np.sqrt((Xc**2).sum(-1).mean(1))[:, None, None]
    xn, Xn = xc * sx, Xc * sX
    gram = np.einsum("bni,bnj->bij", Xn, Xn)
    cross = np.einsum("bni,bnj->bij", Xn, xn)  # (B, 3, r)
    m_norm = np.linalg.solve(gram, cross).transpose(0, 2, 1)  # (B, r, 3)
    m = m_norm * (sX / sx)
    t = mx[:, 0] - np.einsum("brc,bc->br", m, mX[:, 0])
    return m, t


def orthonormalise(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Affine camera rows (B, 2|3, 3) -> (scale (B,), proper rotation (B, 3, 3)).

    Two rows: the third is their cross product (after normalising each). The nearest
    rotation comes from the SVD with the sign of the last singular vector fixed (det = +1);
    the scale is the mean row norm.
    """
    m = np.asarray(m, np.float64)
    norms = np.linalg.norm(m, axis=-1)
    scale = norms.mean(-1)
    r = m / np.maximum(norms[..., None], 1e-300)
    if r.shape[1] == 2:
        r = np.concatenate([r, np.cross(r[:, 0], r[:, 1])[:, None]], 1)
    u, _, vt = np.linalg.svd(r)
    fix = np.ones((len(r), 3))
    fix[:, 2] = np.sign(np.linalg.det(u @ vt))
    return scale, (u * fix[:, None]) @ vt


def similarity_given_rotation(X: np.ndarray, x: np.ndarray, rot_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares scale (B,) and translation (B, r) of x ≈ s·R_r·X + t for fixed rows R_r."""
    mX, mx = X.mean(1), x.mean(1)
    y = np.einsum("brc,bnc->bnr", rot_rows, X - mX[:, None])
    s = np.einsum("bnr,bnr->b", y, x - mx[:, None]) / np.maximum(np.einsum("bnr,bnr->b", y, y), 1e-300)
    t = mx - s[:, None] * np.einsum("brc,bc->br", rot_rows, mX)
    return s, t


def skew(v: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3) cross-product matrices [v]x."""
    z = np.zeros(v.shape[:-1])
    return np.stack([np.stack([z, -v[..., 2], v[..., 1]], -1), np.stack([v[..., 2], z, -v[..., 0]], -1),
                     np.stack([-v[..., 1], v[..., 0], z], -1)], -2)
