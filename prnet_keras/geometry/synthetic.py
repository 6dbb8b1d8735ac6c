"""A procedural morphable face model: deterministic from a seed, no files needed.

The surface is a grid over (θ, y): θ is the angle around a vertical axis (-100°..100°,
0 = straight ahead) and y the height; each horizontal section is an ellipse of half-width
a(y) and depth b(y) plus radial bumps (nose, eye sockets, brows, cheeks, lips, chin). The
grid is trimmed to a mask shape (jaw line below, rounded forehead above), which is also the
UV parameterisation: u = (θ/θmax + 1)/2, v = (y - ymin)/(ymax - ymin), so UV is injective.

Units and axes follow the BFM (micrometre-like units, x right, y up, z toward the camera;
the face is ~150,000 units wide between the jaw keypoints 0 and 16 and the nose tip sits at
z ≈ 130,000), so real 300W-LP / AFLW2000-3D ``Pose_Para`` scales (s ≈ 1e-3) give real face
sizes in 450x450 images. Everything is left-right symmetric: the mesh, the keypoints (0-based
pairs as in the iBUG 68 scheme), the mean texture and every basis (x displacement odd in x,
y and z even), so mirroring an image maps to the same identity/expression coefficients.

Bases (vertices = shapeMU + expMU + shapePC·sp + expPC·ep, raw coefficients as in 300W-LP):
- identity: 199 PCA-like smooth modes. Columns are orthogonal with squared norm
  ``c = n / 53215`` (``shapePC.T @ shapePC = c·I``): a coefficient then moves the surface by the
  same amount at any density (as a unit-norm column of the 53,215-vertex BFM), and
  ``Shape_Para`` ~ N(0, shapeEV²) has real-like magnitudes (~1e5). ``shapeEV`` holds standard deviations, decreasing.
- expression: 29 modes, 0 jaw open, 1 smile, 2 brow raise, 3 eye close (physical: one unit
  moves the jaw ~5 mm, the mouth corners ~4 mm, the brows ~3 mm, the upper lid ~3.3 mm)
  and 25 small smooth lower-face modes. ``Exp_Para`` ~ N(0, expEV²) is a few units.
- texture: 199 smooth colour modes with the same normalisation as the identity basis.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import numpy as np

try:  # optional: only limits BLAS threads during the build
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    def threadpool_limits(*_args, **_kwargs):  # type: ignore[no-redef]
        return contextlib.nullcontext()

from prnet_keras.errors import InputError
from prnet_keras.geometry.morphable import MorphableModel

N_SHAPE, N_EXP, N_TEX = 199, 29, 199
BFM_VERTICES = 53215
UNIT = 1000.0  # model units per millimetre (BFM is in micrometres)
THETA_MAX = np.deg2rad(100.0)
Y_MIN, Y_MAX = -106.0, 92.0
Z_CENTRE = 10.0
_LIP_LINE = -40.0  # mm: the mouth slit lies on the grid rows around it
_OPPONENT = np.array([[1, 1, 1], [1, -1, 0], [1, 1, -2]]) / np.sqrt([[3.0], [2.0], [6.0]])  # rows: luma, r-g, y-b
_DENSITIES = {"default": 12000, "bfm": BFM_VERTICES}
_KEEP_FRACTION = 0.84  # share of grid nodes inside the mask, to size the grid for a target count


# ---- landmarks and mean texture --------------------------------------------------------------
def _keypoint_targets() -> list[tuple[str, float, float]]:
    """68 iBUG landmark targets: ("contour", θ°, y mm) for 0-16, ("front", x mm, y mm) after.

    Point 0 and the first of each pair lie on the image left of a frontal face (x < 0).
    """
    contour = [(-80, 18), (-79, 0), (-77, -18), (-74, -35), (-68, -52), (-57, -66), (-43, -76), (-23, -83), (0, -86)]
    contour += [(-a, b) for a, b in contour[-2::-1]]
    brow_x = [-55, -46, -37, -28, -19, 19, 28, 37, 46, 55]
    up, lo = 27.0 + 5.0 * (1 - (5 / 13) ** 2), 27.0 - 4.5 * (1 - (5 / 13) ** 2)
    eyes = [(-44, 27), (-36, up), (-26, up), (-18, 27), (-26, lo), (-36, lo),
            (18, 27), (26, up), (36, up), (44, 27), (36, lo), (26, lo)]
    nose = [(0, 26), (0, 14), (0, 3), (0, -7), (-12, -17), (-6, -18.5), (0, -19.5), (6, -18.5), (12, -17)]
    mouth = [(-25, -41), (-16, -34), (-7, -31.5), (0, -32.5), (7, -31.5), (16, -34), (25, -41), (16, -47.5),
             (7, -50), (0, -50.5), (-7, -50), (-16, -47.5),
             (-21, -40.5), (-8, -39.5), (0, -39.5), (8, -39.5), (21, -40.5), (8, -41.5), (0, -41.5), (-8, -41.5)]
    front = [(x, _brow_line(np.float64(x))) for x in brow_x] + nose + eyes + mouth
    return [("contour", float(a), float(b)) for a, b in contour] + [("front", float(a), float(b)) for a, b in front]


def _brow_line(ax: np.ndarray) -> np.ndarray:
    return 44.0 + 5.0 * (1.0 - ((np.abs(ax) - 35.0) / 22.0) ** 2)


def _soft(d: np.ndarray, width: float = 0.8) -> np.ndarray:
    """Soft inside-ness of a signed distance (mm, positive inside) to avoid jagged painted edges."""
    return np.clip(0.5 + d / (2.0 * width), 0.0, 1.0)


def _paint(base: np.ndarray, amount: np.ndarray, colour: tuple[float, float, float]) -> np.ndarray:
    return base * (1.0 - amount[:, None]) + np.asarray(colour)[None] * amount[:, None]


def mean_texture(xf: np.ndarray, y: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """(n, 3) RGB 0..255: skin with brows, eyes (sclera, iris, pupil, lashes), nostrils, lips, hair."""
    ax = np.abs(xf)
    front = np.cos(theta).clip(0.0, 1.0)
    c = np.array([214.0, 168.0, 142.0])[None] * (0.9 + 0.1 * front)[:, None]
    c *= (1.0 - 0.13 * _gauss(ax, y, 31.0, 29.0, 14.0, 9.0) * front)[:, None]  # eye-socket shadow
    c += np.array([14.0, -6.0, -6.0])[None] * (_gauss(ax, y, 45.0, -5.0, 12.0, 10.0) * front)[:, None]  # cheeks
    brow_d = np.minimum((7.0 - 4.0 * (ax - 15.0) / 42.0) / 2.0 - np.abs(y - _brow_line(ax)),
                        np.minimum(ax - 15.0, 57.0 - ax))
    c = _paint(c, 0.9 * _soft(brow_d) * front, (72.0, 50.0, 38.0))
    dx, dy = ax - 31.0, y - 27.0
    lens = np.clip(1.0 - (dx / 13.0) ** 2, 0.0, None)
    e_up, e_lo = 5.0 * lens - dy, dy + 4.5 * lens
    eye = _soft(np.minimum(e_up, e_lo) * (np.abs(dx) < 13.0) - 5.0 * (np.abs(dx) >= 13.0), 0.6)
    c = _paint(c, eye, (236.0, 230.0, 224.0))
    r = np.hypot(dx, y - 26.5)
    c = _paint(c, eye * _soft(5.5 - r, 0.6), (88.0, 60.0, 40.0))
    c = _paint(c, eye * _soft(2.3 - r, 0.6), (18.0, 14.0, 14.0))
    lash = _soft(np.minimum(-e_up + 1.8, e_up + 0.2), 0.5) * (np.abs(dx) < 14.5)
    c = _paint(c, 0.9 * lash * front, (45.0, 32.0, 30.0))
    c = _paint(c, 0.5 * _soft(np.minimum(-e_lo + 0.9, e_lo + 0.1), 0.4) * (np.abs(dx) < 12.0), (120.0, 80.0, 70.0))
    nostril = 1.0 - ((ax - 6.5) / 3.5) ** 2 - ((y + 16.5) / 2.0) ** 2
    c = _paint(c, _soft(2.0 * nostril, 0.6), (70.0, 40.0, 38.0))
    lip_top = -31.5 - 9.0 * (ax / 25.0) ** 2
    lip_bottom = -50.5 + 10.0 * (ax / 25.0) ** 2
    lips = np.minimum(np.minimum(lip_top - y, y - lip_bottom), 25.0 - ax)
    c = _paint(c, 0.85 * _soft(lips), (186.0, 98.0, 98.0))
    c = _paint(c, _soft(np.minimum(1.2 - np.abs(y + 40.5), 21.0 - ax), 0.5), (95.0, 35.0, 38.0))
    hair = y - (80.0 - 12.0 * (np.abs(theta) / THETA_MAX) ** 2 - 4.0 * np.cos(5.0 * theta))
    c = _paint(c, 0.95 * _soft(hair, 2.0), (58.0, 42.0, 32.0))
    return np.clip(c, 0.0, 255.0).astype(np.float32)


def regions(xf: np.ndarray, y: np.ndarray, theta: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean (n,) masks of the nose, eye (with brows) and mouth regions."""
    ax, front = np.abs(xf), np.abs(theta) < np.deg2rad(75.0)
    return {
        "nose": front & (ax < 20.0) & (y > -22.0) & (y < 30.0),
        "eye": front & (ax > 10.0) & (ax < 60.0) & (y > 15.0) & (y < 55.0),
        "mouth": front & (ax < 32.0) & (y > -56.0) & (y < -26.0),
    }


KEYPOINT_TARGETS = _keypoint_targets()


# ---- surface -------------------------------------------------------------------------------
def _half_width(y: np.ndarray) -> np.ndarray:
    """a(y) mm: head half-width, narrowing toward the chin and the crown."""
    a = np.where(y < -10.0, 76.0 - 0.006 * (y + 10.0) ** 2, 76.0 - 0.0025 * np.maximum(y - 40.0, 0.0) ** 2)
    return np.maximum(a, 40.0)


def _depth(y: np.ndarray) -> np.ndarray:
    """b(y) mm: front radius; the forehead slopes back and the surface curls under the chin."""
    b = np.full_like(y, 88.0)
    b = np.where(y > 55.0, 88.0 - 0.012 * (y - 55.0) ** 2, b)
    return np.where(y < -80.0, 88.0 - 0.06 * (y + 80.0) ** 2, b)


def _gauss(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _relief(xf: np.ndarray, y: np.ndarray, front: np.ndarray) -> np.ndarray:
    """Radial bumps (mm) at frontal coordinates (xf, y): nose, sockets, brows, cheeks, lips, chin."""
    ax = np.abs(xf)
    # Nose: a ridge from the bridge (y 28) rising to the tip (y -7), then dropping to the base.
    t = np.clip((28.0 - y) / 35.0, 0.0, 1.0)
    height = np.where(y > -7.0, 7.0 + 23.0 * t**1.6, 30.0 * np.exp(-(((y + 7.0) / 6.5) ** 2)))
    height = height * np.exp(-(np.maximum(y - 24.0, 0.0) / 9.0) ** 2)  # fade out above the bridge
    width = 5.0 + 6.0 * t**2
    d = height * np.exp(-0.5 * (xf / width) ** 2)
    d += 6.0 * _gauss(ax, y, 13.0, -12.0, 5.0, 4.5)  # nostril wings
    d -= 7.0 * _gauss(ax, y, 31.0, 27.0, 13.0, 8.0)  # eye sockets
    d += 3.5 * _gauss(ax, y, 31.0, 27.0, 8.0, 5.0)  # eyeballs
    d += 4.0 * np.exp(-0.5 * ((y - 45.0) / 6.0) ** 2) * np.exp(-0.5 * (ax / 45.0) ** 4)  # brow ridge
    d += 5.0 * _gauss(ax, y, 46.0, 3.0, 14.0, 12.0)  # cheekbones
    d += 6.0 * _gauss(xf, y, 0.0, -33.5, 17.0, 3.5) + 5.0 * _gauss(xf, y, 0.0, -47.0, 15.0, 4.0)  # lips
    d -= 2.5 * _gauss(xf, y, 0.0, -56.0, 16.0, 3.5)  # groove under the lower lip
    d += 8.0 * _gauss(xf, y, 0.0, -75.0, 17.0, 9.0)  # chin
    return d * front


def _grid(target: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid axes (θ radians, y mm) sized for about ``target`` kept vertices; θ count is odd (θ=0 exists)."""
    ny = max(int(round(np.sqrt(target / _KEEP_FRACTION / 1.15))), 20)
    nt = int(round(1.15 * ny)) | 1
    return np.linspace(-THETA_MAX, THETA_MAX, nt), np.linspace(Y_MIN, Y_MAX, ny)


def _inside(theta: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The mask outline in (θ, y): jaw line below, rounded forehead corners above."""
    r = np.abs(theta) / THETA_MAX
    return (y >= Y_MIN + 70.0 * r**2.2 - 1e-9) & (y <= Y_MAX - 30.0 * r**2 + 1e-9)


def _surface(theta: np.ndarray, y: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
    """(θ, y) -> (n, 3) mm points: ellipse section plus the radial relief (and optional extra mm)."""
    a, b = _half_width(y), _depth(y)
    xf = a * np.sin(theta)
    front = np.clip((np.deg2rad(95.0) - np.abs(theta)) / np.deg2rad(25.0), 0.0, 1.0)
    d = _relief(xf, y, front) + (0.0 if extra is None else extra)
    return np.stack([(a + d) * np.sin(theta), y, Z_CENTRE + (b + d) * np.cos(theta)], 1)


def _grid_triangles(keep: np.ndarray) -> np.ndarray:
    """Two triangles per kept quad of the (y, θ) grid, diagonals mirrored about θ = 0.

    Winding is counter-clockwise seen from outside (normals point away from the head).
    """
    ny, nt = keep.shape
    index = np.full(keep.shape, -1, np.int64)
    index[keep] = np.arange(int(keep.sum()))
    j, i = np.meshgrid(np.arange(ny - 1), np.arange(nt - 1), indexing="ij")
    a, b = index[j, i], index[j, i + 1]  # lower row: θ increasing
    c, d = index[j + 1, i], index[j + 1, i + 1]  # upper row
    left = (i < (nt - 1) // 2)
    # Left half splits along a-d, right half along b-c: the mesh is its own mirror image.
    t1 = np.where(left[..., None], np.stack([a, b, d], -1), np.stack([a, b, c], -1))
    t2 = np.where(left[..., None], np.stack([a, d, c], -1), np.stack([b, d, c], -1))
    tri = np.concatenate([t1.reshape(-1, 3), t2.reshape(-1, 3)], 0)
    return tri[(tri >= 0).all(1)].astype(np.int32)


# ---- bases ---------------------------------------------------------------------------------
def _smooth_fields(s: np.ndarray, t: np.ndarray, order: int,
                   colour: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Low-frequency symmetric scalar fields per component at (s, t) in [-1, 1]².

    Chebyshev products T_a(s)·T_j(t) (well conditioned on the trimmed domain). Returns, for
    x, y, z (or r, g, b), ((n, m_c) values, (m_c,) frequency a/2 + j). Geometry: x fields are
    odd in s (a odd), y and z even (a even), so every combination stays mirror symmetric;
    colour channels are all even.
    """
    ts = np.polynomial.chebyshev.chebvander(s, 2 * order + 1)
    tt = np.polynomial.chebyshev.chebvander(t, order)
    out = []
    for comp in range(3):
        odd = comp == 0 and not colour
        a = np.arange(1 if odd else 0, 2 * order + 1 - (1 if odd else 0) + 1, 2)
        vals = (ts[:, a][:, :, None] * tt[:, None, :]).reshape(s.size, -1)
        out.append((vals, (a[:, None] / 2.0 + np.arange(order + 1)[None]).reshape(-1)))
    return out


def _pca_basis(fields: list[tuple[np.ndarray, np.ndarray]], k: int, rng: np.random.Generator,
               decay: float, comp_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """PCA of a random smooth vector field: ((3n, k) orthonormal columns, (k,) relative std, decreasing).

    The field is Σ_c F_c·W·z with z ~ N(0, Z Zᵀ) for a random Z. With F_c = Q_c·R_c per
    component (R_c from the Cholesky factor of the small Gram matrix: LAPACK QR of the tall
    matrix is far slower), the covariance's eigenvectors are Q·E where E are the
    eigenvectors of the small R·W·Z·Zᵀ·W·Rᵀ: no tall SVD needed.
    """
    from scipy.linalg import solve_triangular

    rs, ws = [], []
    for (vals, freq), scale in zip(fields, comp_scale):
        gram = vals.T @ vals
        rs.append(np.linalg.cholesky(gram + 1e-12 * np.trace(gram) * np.eye(len(gram))).T)
        ws.append(scale * np.exp(-freq / decay))
    m = sum(r.shape[0] for r in rs)
    rw = np.zeros((m, m))
    o = 0
    for r, w in zip(rs, ws):
        rw[o:o + r.shape[0], o:o + r.shape[0]] = r * w[None]
        o += r.shape[0]
    a = rw @ rng.standard_normal((m, m))
    evals, evecs = np.linalg.eigh(a @ a.T)
    order = np.argsort(evals)[::-1][:k]
    e = evecs[:, order]
    # Eigenvector signs are arbitrary (LAPACK-dependent): fix them so that the same seed gives
    # the same bases on any machine, and saved coefficients keep their meaning.
    e *= np.sign(e[np.argmax(np.abs(e), axis=0), np.arange(e.shape[1])])[None]
    n = fields[0][0].shape[0]
    basis = np.zeros((n, 3, k))
    o = 0
    for c, ((vals, _), r) in enumerate(zip(fields, rs)):
        basis[:, c] = vals @ solve_triangular(r, e[o:o + r.shape[0]])  # Q_c·E_c = F_c·R_c⁻¹·E_c
        o += r.shape[0]
    sig = np.sqrt(np.maximum(evals[order], 0.0))
    return basis.reshape(3 * n, k), np.maximum(sig / sig[0], 1e-6)


def _expression_basis(pts: np.ndarray, theta: np.ndarray, y: np.ndarray, xf: np.ndarray, s: np.ndarray,
                      t: np.ndarray, slit: tuple[float, float], rng: np.random.Generator,
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(3n, 29) mm per unit coefficient and (29,) std devs; first four modes are semantic."""
    n = y.size
    pcs = np.zeros((n, 3, N_EXP))
    ax = np.abs(xf)
    front = np.cos(theta).clip(0.0, 1.0)
    # 0 jaw open: rotate about an axis near the ears (y 15, z 10); weight 1 below the lip line,
    # 0 above it, rising toward the jaw joint at the sides.
    y_up, y_lo = slit
    line = y_up + 50.0 * (np.abs(theta) / THETA_MAX) ** 2.5
    # Sharp between the lips (0 on the upper slit row, 1 on the lower: they part), a soft
    # blend over the cheeks (no crease).
    width = (y_up - y_lo) + 28.0 * np.clip((ax - 20.0) / 20.0, 0.0, 1.0)
    wj = np.clip((line - y) / width, 0.0, 1.0)
    ang = np.deg2rad(2.6)  # ~5 mm at the chin per unit
    py, pz = pts[:, 1] - 15.0, pts[:, 2] - 10.0
    pcs[:, 1, 0] = wj * (py * np.cos(ang) - pz * np.sin(ang) - py)
    pcs[:, 2, 0] = wj * (py * np.sin(ang) + pz * np.cos(ang) - pz)
    # 1 smile: mouth corners up, out and back; cheeks lift.
    g = _gauss(ax, y, 24.0, -40.0, 10.0, 9.0) * front
    pcs[:, 0, 1] = np.sign(xf) * 2.5 * g
    pcs[:, 1, 1] = 4.0 * g + 1.5 * _gauss(ax, y, 40.0, -10.0, 14.0, 12.0) * front
    pcs[:, 2, 1] = -2.0 * g
    # 2 brow raise: the brow band and lower forehead move up.
    pcs[:, 1, 2] = 3.0 * np.exp(-0.5 * ((y - 48.0) / 9.0) ** 2) * np.exp(-0.5 * (ax / 65.0) ** 6)
    # 3 eye close: the upper lid (above the eye centre line) slides down and slightly forward.
    lid = np.clip((y - 27.0) / 5.0, 0.0, 1.0) * np.clip((38.0 - y) / 6.0, 0.0, 1.0)
    we = lid * np.exp(-0.5 * ((ax - 31.0) / 12.0) ** 4)
    pcs[:, 1, 3] = -3.3 * we
    pcs[:, 2, 3] = 0.6 * we
    # 4..28: small smooth random lower-face modes, mirror symmetric.
    window = _gauss(xf, y, 0.0, -45.0, 35.0, 25.0) * front
    for c, (vals, freq) in enumerate(_smooth_fields(s, t, 4)):
        pcs[:, c, 4:] = (vals * np.exp(-freq / 2.0)[None]) @ rng.standard_normal((vals.shape[1], N_EXP - 4))
    pcs[:, :, 4:] *= window[:, None, None]
    pcs[:, :, 4:] /= np.abs(pcs[:, :, 4:]).max(axis=(0, 1), keepdims=True)  # 1 mm peak per unit
    ev = np.concatenate([[1.2, 1.0, 0.8, 0.7], 0.6 * np.arange(1, N_EXP - 3) ** -0.8])
    return pcs.reshape(3 * n, N_EXP), ev


# ---- model ---------------------------------------------------------------------------------
def _target_vertices(density: str | int) -> int:
    if isinstance(density, str):
        if density in _DENSITIES:
            return _DENSITIES[density]
        if density.isdigit():
            density = int(density)
        else:
            raise InputError(f"density: expected 'default', 'bfm' or a vertex count, got {density!r}")
    if isinstance(density, (int, np.integer)) and not isinstance(density, bool) and 2000 <= density <= 200000:
        return int(density)
    raise InputError(f"density: vertex count must be an integer in [2000, 200000], got {density!r}")


def _snap_keypoints(theta: np.ndarray, y: np.ndarray, xf: np.ndarray, mouth_tri: np.ndarray) -> np.ndarray:
    """68 vertex indices nearest to the anatomical targets (contour in (θ, y), the rest frontal)."""
    kpt = np.zeros(68, np.int64)
    deg = np.rad2deg(theta)
    for k, (kind, px, py) in enumerate(KEYPOINT_TARGETS):
        if kind == "contour":
            dist = ((deg - px) * 1.0) ** 2 + (y - py) ** 2
        else:
            dist = (xf - px) ** 2 + (y - py) ** 2 + 1e6 * (np.abs(deg) > 80.0)
        kpt[k] = int(np.argmin(dist))
    # Inner lips: the upper/lower edge of the mouth slit, so the two rows never collapse.
    upper, lower = _slit_edges(mouth_tri, y)
    for ks, edge in ((range(61, 64), upper), (range(65, 68), lower)):
        for k in ks:
            _, px, py = KEYPOINT_TARGETS[k]
            kpt[k] = edge[np.argmin((xf[edge] - px) ** 2 + (y[edge] - py) ** 2)]
    return kpt


def _slit_edges(mouth_tri: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    verts = np.unique(mouth_tri)
    mid = 0.5 * (y[verts].max() + y[verts].min())
    return verts[y[verts] > mid], verts[y[verts] <= mid]


def build_synthetic_model(seed: int = 0, density: str | int = "default") -> MorphableModel:
    """Build the procedural morphable model.

    density: "default" (~11.9k vertices, ~23k triangles), "bfm" (~53k vertices, ~105k
    triangles, like the real BFM) or a target vertex count. The same ``seed`` and density
    always give identical arrays; the seed changes the random identity / texture / extra
    expression bases (the mean face, keypoints and the four semantic expressions are fixed).
    Returns a :class:`MorphableModel` in BFM units (see the module docstring). Arrays are
    cached per process and shared read-only between the models returned.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed: expected a non-negative integer, got {seed!r}")
    arrays = _cached_arrays(int(seed), _target_vertices(density))
    return MorphableModel(**{k: (dict(v) if isinstance(v, dict) else v) for k, v in arrays.items()})


@functools.lru_cache(maxsize=4)
def _cached_arrays(seed: int, target: int) -> dict:
    # The matrices are small: BLAS threads only add contention on shared machines.
    with threadpool_limits(1):
        model = _build(seed, target)
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)}
    for v in list(fields.values()) + list(model.regions.values()):
        if isinstance(v, np.ndarray):
            v.setflags(write=False)
    return fields


def _build(seed: int, target: int) -> MorphableModel:
    tgrid, ygrid = _grid(target)
    tt, yy = np.meshgrid(tgrid, ygrid)
    keep = _inside(tt, yy)
    theta, y = tt[keep], yy[keep]
    tri = _grid_triangles(keep)
    used = np.unique(tri)  # drop mask nodes no quad reaches (e.g. the lone bottom tip)
    remap = np.full(theta.size, -1, np.int64)
    remap[used] = np.arange(used.size)
    theta, y, tri = theta[used], y[used], remap[tri].astype(np.int32)
    pts = _surface(theta, y)
    xf = _half_width(y) * np.sin(theta)  # frontal x before relief: where features are painted
    n = y.size

    mouth = _mouth_mask(tri, xf, y)
    mouth_tri, face_tri = tri[mouth], tri[~mouth]
    kpt = _snap_keypoints(theta, y, xf, mouth_tri)

    s = theta / THETA_MAX
    t = 2.0 * (y - Y_MIN) / (Y_MAX - Y_MIN) - 1.0
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    norm = np.sqrt(n / BFM_VERTICES)  # columns get squared norm c = n / 53215 (module docstring)
    shape_pc, rel = _pca_basis(_smooth_fields(s, t, 8), N_SHAPE, rng, decay=2.2)
    shape_ev = 9.0e5 * rel
    upper, lower = _slit_edges(mouth_tri, y)
    exp_pc, exp_ev = _expression_basis(pts, theta, y, xf, s, t, (y[upper].max(), y[lower].min()), rng)
    # Colour modes are built in an opponent space (luma, red-green, yellow-blue) with mostly
    # luma variance, then rotated to RGB by an orthogonal matrix (keeps orthonormality).
    tex_opp, trel = _pca_basis(_smooth_fields(s, t, 8, colour=True), N_TEX, rng, decay=1.5, comp_scale=(1.0, 0.3, 0.3))
    tex_pc = (_OPPONENT.T @ tex_opp.reshape(n, 3, N_TEX)).reshape(3 * n, N_TEX)
    tex_ev = 3.0e3 * trel

    uv = np.stack([(s + 1.0) / 2.0, (y - Y_MIN) / (Y_MAX - Y_MIN)], 1)
    return MorphableModel(
        name=f"synthetic-{seed}-{n}",
        shape_mu=(pts * UNIT).reshape(-1), shape_pc=(shape_pc * norm).astype(np.float32), shape_ev=shape_ev,
        exp_mu=np.zeros(3 * n, np.float32), exp_pc=(exp_pc * UNIT).astype(np.float32), exp_ev=exp_ev,
        tex_mu=mean_texture(xf, y, theta).reshape(-1), tex_pc=(tex_pc * norm).astype(np.float32), tex_ev=tex_ev,
        triangles=face_tri, mouth_triangles=mouth_tri, kpt_ind=kpt,
        uv_coords=uv.astype(np.float32), regions=regions(xf, y, theta),
    )


def _mouth_mask(tri: np.ndarray, xf: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(T,) bool: triangles of the one quad row straddling the lip line (y = -40 mm) between the
    mouth corners: the mouth 'hole' of the face mesh, closed by ``tri_mouth`` as in the BFM."""
    rows = np.unique(y)
    y_up, y_lo = rows[rows >= _LIP_LINE].min(), rows[rows < _LIP_LINE].max()
    in_row = ((y[tri] == y_up) | (y[tri] == y_lo)).all(1)
    return in_row & (np.abs(xf[tri]).max(1) < 22.0)


def mirror_permutation(model: MorphableModel) -> np.ndarray:
    """(n,) index p with vertex p[i] the mirror image (x -> -x) of vertex i in the mean shape."""
    from scipy.spatial import cKDTree

    v = model.vertices()
    _, idx = cKDTree(v).query(v * np.array([-1.0, 1.0, 1.0], np.float32))
    return idx.astype(np.int64)
