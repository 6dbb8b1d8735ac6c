"""3DMM fitting to 68 landmarks: pose, expression and identity from 2D (or 3D) points.

Batched and vectorised over B faces. The objective, with coefficients in units of the
bases' standard deviations σ (``shapeEV`` / ``expEV``), is

    Σ_j |x_j - P(X_j)|² / d²  +  reg_shape · Σ (sp_i / σ_i)²  +  reg_exp · Σ (ep_i / σ_i)²

with d = sqrt(w·h) of the landmarks' bounding box, so ``reg`` does not depend on the image or
face size: for Gaussian coefficients and landmark noise of std σ_n pixels per coordinate the
MAP weight is reg = (σ_n / d)² (the default 1e-4 suits landmarks good to ~1 % of the face).

It is minimised in two phases:

1. ``iters`` alternations of three linear steps (face3d's ``fit_points`` scheme):
   **camera** — the affine camera from the current 3D keypoints to the landmarks
   (least squares after normalising both point sets, the gold-standard estimate of an affine
   camera under image noise), decomposed into scale, an orthonormalised rotation and a
   translation in the 3DDFA convention of :mod:`prnet_keras.geometry.pose`; then
   **expression**, then **identity**, each a Tikhonov-regularised linear least-squares step;
2. ``refine`` joint Levenberg-Marquardt steps on all of them at once: the alternation crawls
   where pose and coefficients trade off (pitch against face shape), a joint step does not.

Profile faces: in 300-W style annotations the 17 jaw points follow the visible outline, not
fixed points of the face. With ``contour=True`` each jaw landmark on the side turned away
from the camera moves, every step, to the outermost projected vertex of a horizontal line of
the mean face through its own vertex (3DDFA's "landmark marching"); the chin and the side
facing the camera keep their vertices.

A model without bases (the mean-only BFM) gives the pose alone (zero coefficients).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from prnet_keras.errors import InputError
from prnet_keras.geometry.morphable import MorphableModel
from prnet_keras.geometry.pose import (
    affine_camera, make_pose_para, orthonormalise, rotation_to_angles, similarity_given_rotation, skew,
)

N_LANDMARKS = 68
JAW = np.arange(17)  # iBUG 68: 0-16 the jaw line, 8 the chin
CHIN = 8
DEFAULT_N_SHAPE, DEFAULT_N_EXP = 60, 29
DEFAULT_REG_SHAPE, DEFAULT_REG_EXP = 1e-4, 1e-4


class LandmarkFit(NamedTuple):
    """Result of :func:`fit_landmarks` (unpacks as a 4-tuple).

    pose_para (B, 1, 7) float32 [pitch, yaw, roll, tx, ty, tz, s] (``Pose_Para`` layout);
    shape_para (B, model.n_shape, 1) and exp_para (B, model.n_exp, 1) float64 raw
    coefficients (zero beyond the ``n_shape`` / ``n_exp`` fitted); residual (B,) float64:
    mean 2D distance between the fitted model keypoints and the landmarks divided by
    sqrt(w·h) of the landmarks' box (the AFLW2000-3D NME normalisation).
    """

    pose_para: np.ndarray
    shape_para: np.ndarray
    exp_para: np.ndarray
    residual: np.ndarray


# ---- model data --------------------------------------------------------------------------------
class _KeypointBases:
    """The model restricted to the keypoint vertices and the jaw-line candidates.

    Rows are the union of the 68 keypoint vertices and every contour candidate (C vertices):
    mean (C, 3), shape (C, 3, k_s) and exp (C, 3, k_e) bases already multiplied by their
    standard deviations (float64), ``kpt`` (68,) rows of the keypoints, ``lines`` (17, M) rows
    of each jaw landmark's candidates (padded with its own row).
    """

    def __init__(self, model: MorphableModel, n_shape: int, n_exp: int):
        kpt = model.kpt_ind
        mean_all = model.vertices()
        lines = _contour_lines(model, mean_all)
        verts, inverse = np.unique(np.concatenate([kpt, lines.reshape(-1)]), return_inverse=True)
        self.kpt = inverse[:N_LANDMARKS]
        self.lines = inverse[N_LANDMARKS:].reshape(lines.shape)
        self.side = np.sign(mean_all[kpt[JAW], 0] - mean_all[kpt[CHIN], 0])  # -1 image left, +1 right
        rows = (3 * verts[:, None] + np.arange(3)[None]).reshape(-1)
        self.mean = mean_all[verts].astype(np.float64)
        self.shape = self._basis(model.shape_pc, model.shape_ev, rows, n_shape)
        self.exp = self._basis(model.exp_pc, model.exp_ev, rows, n_exp)
        # The jaw lines' bases, flattened for one GEMM per marching step: (17·M·3, k).
        self.line_shape = None if self.shape is None else self.shape[self.lines].reshape(-1, n_shape)
        self.line_exp = None if self.exp is None else self.exp[self.lines].reshape(-1, n_exp)
        self.n_shape_model, self.n_exp_model = model.n_shape, model.n_exp
        self.shape_ev = np.asarray(model.shape_ev[:n_shape], np.float64)
        self.exp_ev = np.asarray(model.exp_ev[:n_exp], np.float64)

    @staticmethod
    def _basis(pc: np.ndarray, ev: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray | None:
        if k == 0:
            return None
        b = np.asarray(pc[rows, :k], np.float64) * np.asarray(ev[:k], np.float64)[None]
        if not np.any(b):  # mean-only model: no basis to fit
            return None
        return b.reshape(-1, 3, k)


def _contour_lines(model: MorphableModel, mean: np.ndarray) -> np.ndarray:
    """(17, M) vertex indices: for each jaw landmark, its horizontal line of the mean face.

    A line holds the vertices within 1.5 median mesh edges of the landmark's height, on its side
    of the face, between the midline and the landmark, and not behind it (z >= the landmark's z):
    where the outline of that row of the face can be seen from any yaw. Padded with the
    landmark's own vertex; the chin's line is the chin alone.
    """
    tri = model.triangles
    if tri.size:
        e = mean[tri[:, [0, 1, 2]]] - mean[tri[:, [1, 2, 0]]]
        edge = float(np.median(np.linalg.norm(e, axis=-1)))
    else:  # no triangles: fall back on a share of the face height
        edge = 0.01 * float(np.ptp(mean[:, 1]))
    band = 1.5 * edge
    kpt = model.kpt_ind
    centre_x = float(mean[kpt[CHIN], 0])
    out = []
    for j in JAW:
        k = kpt[j]
        x, y, z = mean[k] - [centre_x, 0.0, 0.0]
        side = np.sign(x)
        if j == CHIN or side == 0:
            out.append(np.array([k]))
            continue
        vx = (mean[:, 0] - centre_x) * side
        sel = (np.abs(mean[:, 1] - y) <= band) & (vx >= -edge) & (vx <= abs(x) + edge) & (mean[:, 2] >= z - edge)
        idx = np.flatnonzero(sel)
        out.append(np.union1d(idx, [k]))
    width = max(len(line) for line in out)
    return np.stack([np.pad(line, (0, width - len(line)), mode="edge") for line in out])


@functools.lru_cache(maxsize=8)
def _keypoint_bases(model: MorphableModel, n_shape: int, n_exp: int) -> _KeypointBases:
    return _KeypointBases(model, n_shape, n_exp)


# ---- linear algebra helpers --------------------------------------------------------------------
def _ridge(a: np.ndarray, b: np.ndarray, reg: float) -> np.ndarray:
    """argmin |a·z - b|² + reg·|z|² for a (B, m, k), b (B, m) -> (B, k)."""
    k = a.shape[-1]
    at = a.transpose(0, 2, 1)
    lhs = at @ a + reg * np.eye(k)[None]  # batched BLAS: einsum does not use it for these
    return np.linalg.solve(lhs, at @ b[..., None])[..., 0]


# ---- the fit -----------------------------------------------------------------------------------
def _check_points(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, np.float64)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[1] != N_LANDMARKS or p.shape[2] not in (2, 3):
        raise InputError(f"landmarks: expected shape (B, 68, 2|3) in image pixels, got {np.shape(points)}")
    if not np.all(np.isfinite(p)):
        raise InputError("landmarks: contain NaN or inf")
    span = p[:, :, :2].max(1) - p[:, :, :2].min(1)
    bad = np.flatnonzero(span.min(1) < 1.0)
    if bad.size:
        raise InputError(f"landmarks: set {int(bad[0])} spans less than 1 pixel in x or y (degenerate)")
    return p


def _check_count(value: int | None, limit: int, default: int, key: str) -> int:
    k = min(default, limit) if value is None else value
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= limit:
        raise InputError(f"{key}: expected an integer in [0, {limit}], got {value!r}")
    return int(k)


def check_fit_options(model: MorphableModel, n_shape: int | None = None, n_exp: int | None = None, iters: int = 4,
                      reg_shape: float = DEFAULT_REG_SHAPE, reg_exp: float = DEFAULT_REG_EXP,
                      refine: int = 4) -> tuple[int, int]:
    """Validate :func:`fit_landmarks` options; returns the (n_shape, n_exp) that will be fitted."""
    for key, v, lo in (("iters", iters, 1), ("refine", refine, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise InputError(f"{key}: expected an integer >= {lo}, got {v!r}")
    for key, reg in (("reg_shape", reg_shape), ("reg_exp", reg_exp)):
        if not (isinstance(reg, (int, float, np.floating)) and np.isfinite(reg) and reg > 0):
            raise InputError(f"{key}: expected a positive number, got {reg!r}")
    return (_check_count(n_shape, model.n_shape, DEFAULT_N_SHAPE, "n_shape"),
            _check_count(n_exp, model.n_exp, DEFAULT_N_EXP, "n_exp"))


def fit_landmarks(
    model: MorphableModel,
    points_2d: np.ndarray,
    image_height: int | np.ndarray,
    n_shape: int | None = None,
    n_exp: int | None = None,
    iters: int = 4,
    reg_shape: float = DEFAULT_REG_SHAPE,
    reg_exp: float = DEFAULT_REG_EXP,
    landmarks_3d: bool | None = None,
    contour: bool = False,
    refine: int = 4,
) -> LandmarkFit:
    """Fit pose, expression and identity of ``model`` to 68 landmarks of B faces.

    points_2d: (B, 68, 2) image pixels (x right, y down), or (B, 68, 3) with z (larger =
    nearer, in pixels like ``pt3d_68``); a single (68, 2|3) set is treated as B = 1.
    image_height: the image height in pixels (scalar or (B,)), for the y flip of the pose
    convention. n_shape / n_exp: leading components fitted (default 60 identity, 29
    expression, at most the model's); the rest stay 0. iters: alternations (each: camera,
    expression, identity). reg_shape / reg_exp: prior weights (module docstring).
    landmarks_3d: use z too (default: when the points have it); the camera is then a 3D
    affine map (all of tx, ty, tz fitted); with 2D points tz is 0. contour: move the jaw
    landmarks of the far side along their lines (module docstring) — for annotations whose
    jaw points follow the visible outline (300-W, 300W-LP ``pt2d``), not for model keypoints.

    Returns a :class:`LandmarkFit`. Measured on the synthetic model (its 199 / 29 bases
    scaled like the BFM's), 40 faces with coefficients ~ N(0, σ²) clipped at 3σ, pitch ~
    N(0, 10°), roll ~ N(0, 8°), faces ~190 px wide (tests/geometry/test_fitting.py):

    ============================  ================  ==================  ======================
    landmarks, prior              residual (mean)   yaw / pitch / roll  rotation error
                                                    mean error          mean (max)
    ============================  ================  ==================  ======================
    clean, reg 1e-6, refine 8     0.035 %           0.3 / 0.2 / 0.1°    0.4° (1.3°)
      same, |yaw| 60-75°          0.036 %           0.5 / 0.4 / 0.4°    0.6° (1.5°)
    clean, defaults               0.23 %            0.4 / 0.9 / 0.2°    1.1° (3.9°)
    2 px noise, defaults          1.05 %            0.7 / 1.3 / 0.3°    1.6° (5.1°)
      same, |yaw| 60-75°          1.12 %            0.6 / 2.8 / 2.6°    1.4° (4.1°)
    ============================  ================  ==================  ======================

    (Near profile pitch and roll share an axis, so a small rotation error splits into larger,
    opposite pitch and roll errors.) The mean-only BFM fitted to real AFLW2000-3D ``pt3d_68``
    lands 1.5-2.3 % from them with yaw within 1°: the missing identity is what remains.

    >>> from prnet_keras.geometry import make_pose_para, pose_vertices
    >>> from prnet_keras.geometry.synthetic import build_synthetic_model
    >>> model = build_synthetic_model()
    >>> pose = make_pose_para(np.radians([5.0, 40.0, -10.0]), [225.0, 225.0, 0.0], 1.5e-3)
    >>> kpts = pose_vertices(model.vertices(), pose, 450)[model.kpt_ind, :2]
    >>> fit = fit_landmarks(model, kpts[None], 450)
    >>> bool(fit.residual[0] < 1e-3), np.round(np.degrees(fit.pose_para[0, 0, :3]), 1).tolist()
    (True, [5.0, 40.0, -10.0])
    """
    pts = _check_points(points_2d)
    b = len(pts)
    heights = np.broadcast_to(np.asarray(image_height, np.float64).reshape(-1), (b,))
    if not np.all(np.isfinite(heights)) or np.any(heights < 1):
        raise InputError(f"image_height: expected positive pixel counts, got {image_height!r}")
    k_s, k_e = check_fit_options(model, n_shape, n_exp, iters, reg_shape, reg_exp, refine)
    use_z = pts.shape[2] == 3 if landmarks_3d is None else bool(landmarks_3d)
    if use_z and pts.shape[2] != 3:
        raise InputError("landmarks_3d: the landmarks have no z (expected shape (B, 68, 3))")
    kb = _keypoint_bases(model, k_s, k_e)

    r = 3 if use_z else 2
    # Camera frame (y up): the pose convention's y flip undone.
    target = pts[:, :, :r].copy()
    target[:, :, 1] = heights[:, None] - 1.0 - target[:, :, 1]
    lo, hi = pts[:, :, :2].min(1), pts[:, :, :2].max(1)
    norm = np.sqrt(np.maximum(np.prod(hi - lo, -1), 1e-12))  # (B,) landmark box size d
    alpha = np.zeros((b, k_s))  # identity in standard deviations
    beta = np.zeros((b, k_e))
    rows = np.broadcast_to(kb.kpt, (b, N_LANDMARKS)).copy()  # per-sample model rows of the 68 landmarks
    s = np.ones(b)
    rot = np.broadcast_to(np.eye(3), (b, 3, 3)).copy()
    t = np.zeros((b, r))

    for it in range(iters):
        if contour and it > 0:  # needs a pose: from the second pass on
            rows = _march(kb, rows, alpha, beta, s, rot)
        shape_part = _combine(kb.shape, rows, alpha)
        exp_part = _combine(kb.exp, rows, beta)
        X = kb.mean[rows] + shape_part + exp_part
        s, rot, t = _camera(X, target, r)
        if kb.exp is not None:
            beta = _solve_coefficients(kb.exp[rows], kb.mean[rows] + shape_part, target, s, rot[:, :r], t, norm,
                                       reg_exp)
            exp_part = _combine(kb.exp, rows, beta)
        if kb.shape is not None:
            alpha = _solve_coefficients(kb.shape[rows], kb.mean[rows] + exp_part, target, s, rot[:, :r], t, norm,
                                        reg_shape)
    X = kb.mean[rows] + _combine(kb.shape, rows, alpha) + _combine(kb.exp, rows, beta)
    s, rot, t = _camera(X, target, r)  # the pose of the final coefficients
    params = (s, rot, t, alpha, beta)
    damping = np.full(b, 1e-6)
    for _ in range(refine):
        if contour:
            rows = _march(kb, rows, alpha, beta, s, rot)
        params, damping = _levenberg_marquardt(kb, rows, target, norm, params, damping, reg_shape, reg_exp)
        s, rot, t, alpha, beta = params
    X = kb.mean[rows] + _combine(kb.shape, rows, alpha) + _combine(kb.exp, rows, beta)
    fitted = s[:, None, None] * np.einsum("brc,bnc->bnr", rot[:, :2], X) + t[:, None, :2]
    residual = np.linalg.norm(fitted - target[:, :, :2], axis=-1).mean(1) / norm
    residual = np.where(np.isfinite(residual), residual, np.inf)

    t3 = np.zeros((b, 3))
    t3[:, :r] = t
    pose = np.stack([make_pose_para(rotation_to_angles(rot[i]), t3[i], s[i]) for i in range(b)])
    shape_para = np.zeros((b, kb.n_shape_model, 1))
    shape_para[:, :k_s, 0] = alpha * kb.shape_ev
    exp_para = np.zeros((b, kb.n_exp_model, 1))
    exp_para[:, :k_e, 0] = beta * kb.exp_ev
    return LandmarkFit(pose, shape_para, exp_para, residual)


def _camera(X: np.ndarray, target: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale (B,), rotation (B, 3, 3) and translation (B, r) of the affine camera X -> target."""
    m, _ = affine_camera(X, target)
    _, rot = orthonormalise(m)
    s, t = similarity_given_rotation(X, target, rot[:, :r])
    return s, rot, t


def _cost(kb: _KeypointBases, rows: np.ndarray, target: np.ndarray, norm: np.ndarray, params: tuple,
          reg_shape: float, reg_exp: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cost (B,), scaled residuals (B, N·r), rotated keypoints (B, N, 3)) of the objective."""
    s, rot, t, alpha, beta = params
    b, n, r = target.shape
    X = kb.mean[rows] + _combine(kb.shape, rows, alpha) + _combine(kb.exp, rows, beta)
    Y = np.einsum("bij,bnj->bni", rot, X)
    res = ((s[:, None, None] * Y[:, :, :r] + t[:, None] - target) / norm[:, None, None]).reshape(b, n * r)
    cost = (res**2).sum(1) + reg_shape * (alpha**2).sum(1) + reg_exp * (beta**2).sum(1)
    return cost, res, Y


def _levenberg_marquardt(kb: _KeypointBases, rows: np.ndarray, target: np.ndarray, norm: np.ndarray,
                         params: tuple, damping: np.ndarray, reg_shape: float, reg_exp: float) -> tuple:
    """One joint step on (rotation, log scale, translation, identity, expression) per sample.

    The rotation is updated on the left, R <- exp([w]x)·R, so no angle parameterisation (and
    no gimbal lock) is involved. A step that does not lower a sample's cost is refused and
    that sample's damping raised (Levenberg-Marquardt); accepted steps lower it.
    Returns (params, damping).
    """
    s, rot, t, alpha, beta = params
    b, n, r = target.shape
    cost, res, Y = _cost(kb, rows, target, norm, params, reg_shape, reg_exp)
    # d pred / d w = -s·[Y]x (first r rows), d / d log s = s·Y, d / d t = I.
    blocks = [(-s[:, None, None, None] * skew(Y))[:, :, :r], (s[:, None, None] * Y[:, :, :r])[..., None],
              np.broadcast_to(np.eye(r), (b, n, r, r))]
    prior, coefs = [np.zeros(4 + r)], [np.zeros((b, 4 + r))]
    for basis, coef, reg in ((kb.shape, alpha, reg_shape), (kb.exp, beta, reg_exp)):
        if basis is not None:
            blocks.append(s[:, None, None, None] * _rotate_basis(rot[:, :r], basis[rows]))
            prior.append(np.full(coef.shape[1], reg))
            coefs.append(coef)
    jac = (np.concatenate(blocks, -1) / norm[:, None, None, None]).reshape(b, n * r, -1)
    prior_diag = np.concatenate(prior)
    coef_all = np.concatenate(coefs, 1)
    jt = jac.transpose(0, 2, 1)
    lhs = jt @ jac
    rhs = (jt @ res[..., None])[..., 0] + prior_diag[None] * coef_all
    lhs = lhs + np.diag(prior_diag)[None]
    lhs = lhs + damping[:, None, None] * np.diagonal(lhs, axis1=1, axis2=2)[:, None, :] * np.eye(lhs.shape[-1])[None]
    step = -np.linalg.solve(lhs, rhs[..., None])[..., 0]
    w = step[:, :3]
    angle = np.linalg.norm(w, axis=-1)
    k_mat = skew(w / np.maximum(angle, 1e-300)[:, None])
    update = (np.eye(3)[None] + np.sin(angle)[:, None, None] * k_mat
              + (1.0 - np.cos(angle))[:, None, None] * (k_mat @ k_mat))  # Rodrigues
    o = 4 + r
    new_alpha = alpha + step[:, o:o + alpha.shape[1]] if kb.shape is not None else alpha
    o += alpha.shape[1] if kb.shape is not None else 0
    new_beta = beta + step[:, o:o + beta.shape[1]] if kb.exp is not None else beta
    proposal = (s * np.exp(step[:, 3]), update @ rot, t + step[:, 4:4 + r], new_alpha, new_beta)
    new_cost = _cost(kb, rows, target, norm, proposal, reg_shape, reg_exp)[0]
    ok = np.isfinite(new_cost) & (new_cost <= cost)
    out = tuple(np.where(ok.reshape((-1,) + (1,) * (a.ndim - 1)), a, old) for a, old in zip(proposal, params))
    return out, np.where(ok, damping * 0.1, damping * 10.0)


def _rotate_basis(rot_rows: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(B, r, 3) rotation rows applied to (B, N, 3, k) basis vectors -> (B, N, r, k)."""
    return np.matmul(rot_rows[:, None], basis)


def _combine(basis: np.ndarray | None, rows: np.ndarray, coef: np.ndarray) -> np.ndarray | float:
    if basis is None:
        return 0.0
    b, n = rows.shape
    return (basis[rows].reshape(b, n * 3, -1) @ coef[..., None]).reshape(b, n, 3)


def _solve_coefficients(basis: np.ndarray, rest: np.ndarray, target: np.ndarray, s: np.ndarray,
                        rot_rows: np.ndarray, t: np.ndarray, norm: np.ndarray, reg: float) -> np.ndarray:
    """Coefficients (B, k) in std units of one basis (B, N, 3, k), the other parts fixed."""
    b, n, _, k = basis.shape
    r = rot_rows.shape[1]
    scale = (s / norm)[:, None, None, None]
    a = scale * _rotate_basis(rot_rows, basis)
    pred = s[:, None, None] * np.einsum("brc,bnc->bnr", rot_rows, rest) + t[:, None]
    resid = (target - pred) / norm[:, None, None]
    return _ridge(a.reshape(b, n * r, k), resid.reshape(b, n * r), reg)


def _march(kb: _KeypointBases, rows: np.ndarray, alpha: np.ndarray, beta: np.ndarray, s: np.ndarray,
           rot: np.ndarray) -> np.ndarray:
    """New landmark rows: far-side jaw landmarks on the outermost vertex of their line."""
    lines = kb.lines  # (17, M)
    pts = kb.mean[lines][None] + _line_part(kb.line_shape, lines, alpha) + _line_part(kb.line_exp, lines, beta)
    axis_2d = rot[:, :2, 0]  # image-plane direction of the model's +x axis (camera frame)
    axis_2d = axis_2d / np.maximum(np.linalg.norm(axis_2d, axis=-1, keepdims=True), 1e-12)
    # outward position = (R_2·p)·u = p·(R_2ᵀ·u): one direction per face, one product per vertex
    direction = np.einsum("brc,br->bc", rot[:, :2], axis_2d)
    proj = (pts @ direction[:, None, :, None])[..., 0]
    outward = proj * kb.side[None, :, None]
    best = lines[np.arange(len(lines))[None], np.argmax(outward, -1)]  # (B, 17)
    # +x turned toward the camera (z larger = nearer) when R[2, 0] > 0: the far side is -x.
    far = kb.side[None] * np.sign(rot[:, 2, 0])[:, None] < 0
    out = rows.copy()
    out[:, JAW] = np.where(far, best, kb.kpt[JAW][None])
    return out


def _line_part(flat_basis: np.ndarray | None, lines: np.ndarray, coef: np.ndarray) -> np.ndarray | float:
    if flat_basis is None:
        return 0.0
    j, m = lines.shape
    return (flat_basis @ coef.T).T.reshape(len(coef), j, m, 3)  # (B, 17, M, 3)
