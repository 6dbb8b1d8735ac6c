"""Rigid ICP with outlier rejection: open3d (default), scipy cKDTree, or simpleicp.

All backends return the same :class:`ICPResult` with ``aligned = src @ R.T + t`` ≈ dst.
Points are (n, 3) float arrays in any consistent unit (evaluation uses image pixels).

Outlier rejection, common to every backend: correspondences farther than
``max_distance`` are dropped; the scipy backend also trims the worst ``trim`` fraction
of the remaining pairs each iteration (trimmed ICP), and open3d's point-to-plane uses a
Tukey robust kernel. ``max_distance`` defaults to 10 % of the target's bounding-box
diagonal, generous enough for a 30° start and tight enough to ignore non-overlapping parts.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

from prnet_keras.cancel import check_cancelled
from prnet_keras.errors import InputError

Backend = Literal["open3d", "scipy", "simpleicp"]
BACKENDS = ("open3d", "scipy", "simpleicp")


@dataclasses.dataclass
class ICPResult:
    """R (3, 3), t (3,): the rigid motion src -> dst; rmse of the inlier pairs (input units);
    fitness = inlier fraction of src; iterations run (-1 when the backend does not say);
    backend name."""

    rotation: np.ndarray
    translation: np.ndarray
    rmse: float
    fitness: float
    iterations: int
    backend: str

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Move (n, 3) points with the estimated motion."""
        return np.asarray(points, np.float64) @ self.rotation.T + self.translation

    @property
    def matrix(self) -> np.ndarray:
        """4x4 homogeneous form."""
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = self.rotation, self.translation
        return m


def available_backends() -> list[str]:
    """Backends importable in this environment, in order of preference."""
    out = []
    for name, module in (("open3d", "open3d"), ("scipy", "scipy"), ("simpleicp", "simpleicp")):
        try:
            __import__(module)
        except Exception:  # noqa: BLE001 - e.g. open3d's missing libusb raises OSError
            continue
        out.append(name)
    return out


def usable_backend(name: str) -> str:
    """``name``, except open3d when it cannot be imported here: scipy (scoring must work without open3d)."""
    if name == "open3d" and "open3d" not in available_backends():
        return "scipy"
    return name


def _kabsch(src: np.ndarray, dst: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares rotation/translation with dst ≈ R·src + t (optionally weighted)."""
    if w is None:
        w = np.ones(len(src))
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    h = ((src - mu_s) * w[:, None]).T @ (dst - mu_d)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rot, mu_d - rot @ mu_s


def _point_to_plane_step(src: np.ndarray, dst: np.ndarray, nrm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One linearised point-to-plane solve (small-angle), re-orthonormalised to a rotation."""
    a = np.concatenate([np.cross(src, nrm), nrm], axis=1)  # (n, 6)
    b = np.einsum("ij,ij->i", dst - src, nrm)
    x, *_ = np.linalg.lstsq(a, b, rcond=None)
    wx, wy, wz = x[:3]
    skew = np.array([[0.0, -wz, wy], [wz, 0.0, -wx], [-wy, wx, 0.0]])
    u, _, vt = np.linalg.svd(np.eye(3) + skew)
    return u @ vt, x[3:]


def mesh_normals(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(n, 3) area-weighted unit vertex normals of a triangle mesh (T, 3); sign is irrelevant
    to point-to-plane ICP. bincount scatter: several times faster than np.add.at on 87k faces."""
    v = np.asarray(points, np.float64)
    tri = np.asarray(triangles, np.int64)
    fn = np.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]])
    idx = tri.ravel()
    rep = np.repeat(fn, 3, axis=0)
    out = np.stack([np.bincount(idx, rep[:, c], minlength=len(v)) for c in range(3)], axis=1)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def grid_normals(points: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Unit normals of surfaces sampled on a pixel grid (position maps), batched.

    points (B, H, W, 3), valid (B, H, W) bool -> (B, H, W, 3) float32 from the cross product
    of the row and column derivatives (central differences, one-sided next to invalid
    pixels). ~10x cheaper than triangle-based normals for a 44k-point face; sign irrelevant.
    """
    p = np.asarray(points, np.float32)
    v = np.asarray(valid, bool)

    def deriv(axis: int) -> np.ndarray:
        nxt, prv = np.roll(p, -1, axis), np.roll(p, 1, axis)
        vn, vp = np.roll(v, -1, axis), np.roll(v, 1, axis)
        # no wrap-around across the image border
        edge = [slice(None)] * 3
        edge[axis] = -1
        vn[tuple(edge)] = False
        edge[axis] = 0
        vp[tuple(edge)] = False
        vn, vp = vn[..., None], vp[..., None]
        return np.where(vn & vp, (nxt - prv) * 0.5, np.where(vn, nxt - p, np.where(vp, p - prv, 0.0)))

    n = np.cross(deriv(2), deriv(1))
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


def estimate_normals(points: np.ndarray, k: int = 12) -> np.ndarray:
    """(n, 3) unit normals from the smallest principal axis of each point's k neighbours."""
    pts = np.asarray(points, np.float64)
    _, idx = cKDTree(pts).query(pts, k=min(k, len(pts)), workers=-1)
    nb = pts[idx] - pts[idx].mean(1, keepdims=True)
    cov = np.einsum("nki,nkj->nij", nb, nb)
    _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
    return vecs[:, :, 0]


def _scipy_icp(
    src: np.ndarray, dst: np.ndarray, normals: np.ndarray | None, method: str, max_distance: float,
    max_iter: int, tol: float, trim: float,
) -> ICPResult:
    tree = cKDTree(dst)
    if method == "point_to_plane" and normals is None:
        normals = estimate_normals(dst)
    rot, t = np.eye(3), np.zeros(3)
    scale = max(float(np.linalg.norm(dst.max(0) - dst.min(0))), 1e-12)
    prev = np.inf
    rmse, fitness, it = np.inf, 0.0, 0
    for it in range(1, max_iter + 1):  # noqa: B007 - the count is reported after the loop
        check_cancelled()  # a cancelled server request stops between iterations
        moved = src @ rot.T + t
        dist, idx = tree.query(moved, distance_upper_bound=max_distance, workers=-1)
        ok = np.isfinite(dist)
        if ok.sum() < 6:
            break
        if trim > 0:
            # trimmed ICP: the worst pairs are most likely non-overlap or noise
            ok &= dist <= np.quantile(dist[ok], 1.0 - trim)
        s, d = moved[ok], dst[idx[ok]]
        if method == "point_to_plane":
            d_rot, d_t = _point_to_plane_step(s, d, normals[idx[ok]])
        else:
            d_rot, d_t = _kabsch(s, d)
        rot, t = d_rot @ rot, d_rot @ t + d_t
        rmse = float(np.sqrt(np.mean(dist[ok] ** 2)))
        fitness = float(ok.mean())
        step = np.abs(d_rot - np.eye(3)).max() + np.abs(d_t).max() / scale
        if abs(prev - rmse) <= tol * max(rmse, 1e-12) or step < tol * 1e-3:
            break
        prev = rmse
    return ICPResult(rot, t, rmse, fitness, it, "scipy")


def _open3d_icp(
    src: np.ndarray, dst: np.ndarray, normals: np.ndarray | None, method: str, max_distance: float,
    max_iter: int, tol: float,
) -> ICPResult:
    import open3d as o3d

    reg = o3d.pipelines.registration
    ps, pd = o3d.geometry.PointCloud(), o3d.geometry.PointCloud()
    ps.points = o3d.utility.Vector3dVector(src)
    pd.points = o3d.utility.Vector3dVector(dst)
    if method == "point_to_plane":
        if normals is not None:
            pd.normals = o3d.utility.Vector3dVector(np.asarray(normals, np.float64))
        else:
            pd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(knn=12))
        # Tukey kernel: residuals beyond k get zero weight (robust outlier rejection)
        estimation = reg.TransformationEstimationPointToPlane(reg.TukeyLoss(k=max_distance / 2.0))
    else:
        estimation = reg.TransformationEstimationPointToPoint()
    criteria = reg.ICPConvergenceCriteria(relative_fitness=tol, relative_rmse=tol, max_iteration=max_iter)
    res = reg.registration_icp(ps, pd, max_distance, np.eye(4), estimation, criteria)
    m = np.asarray(res.transformation)
    # open3d does not report the iteration count: -1
    return ICPResult(m[:3, :3].copy(), m[:3, 3].copy(), float(res.inlier_rmse), float(res.fitness), -1, "open3d")


def _simpleicp(src: np.ndarray, dst: np.ndarray, max_distance: float, max_iter: int) -> ICPResult:
    import contextlib
    import io

    from simpleicp import PointCloud, SimpleICP

    pc_fix = PointCloud(dst, columns=["x", "y", "z"])
    pc_mov = PointCloud(src, columns=["x", "y", "z"])
    solver = SimpleICP()
    solver.add_point_clouds(pc_fix, pc_mov)
    with contextlib.redirect_stdout(io.StringIO()):  # simpleicp prints a log table
        h, _, _, residuals = solver.run(
            max_overlap_distance=max_distance, max_iterations=max_iter,
            correspondences=min(len(dst), 5000), min_change=0.01,
        )
    h = np.asarray(h, np.float64)
    r = np.asarray(residuals, np.float64).ravel()
    return ICPResult(h[:3, :3].copy(), h[:3, 3].copy(), float(np.sqrt(np.mean(r**2))) if r.size else np.inf,
                     1.0, max_iter, "simpleicp")


def icp(
    src: np.ndarray,
    dst: np.ndarray,
    backend: Backend = "open3d",
    method: Literal["point_to_plane", "point_to_point"] = "point_to_plane",
    dst_normals: np.ndarray | None = None,
    max_distance: float | None = None,
    max_iter: int = 30,
    tol: float = 1e-6,
    trim: float = 0.1,
    init_centroids: bool = True,
) -> ICPResult:
    """Rigidly align ``src`` (n, 3) onto ``dst`` (m, 3).

    ``dst_normals`` (m, 3) unit normals of the target (point-to-plane; estimated from
    neighbours when missing). ``init_centroids`` starts from the translation that matches
    the centroids (right when both clouds cover the same surface). The returned motion
    includes that initial translation.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    for name, a in (("src", src), ("dst", dst)):
        if a.ndim != 2 or a.shape[1] != 3 or len(a) < 6 or not np.isfinite(a).all():
            raise InputError(f"icp: {name} must be (n>=6, 3) finite points, got shape {a.shape}")
    if backend not in BACKENDS:
        raise InputError(f"icp: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if method not in ("point_to_plane", "point_to_point"):
        raise InputError(f"icp: method must be point_to_plane or point_to_point, got {method!r}")
    if max_distance is None:
        max_distance = 0.1 * float(np.linalg.norm(dst.max(0) - dst.min(0)))
    t0 = dst.mean(0) - src.mean(0) if init_centroids else np.zeros(3)
    moved = src + t0
    check_cancelled()  # the scipy backend checks again every iteration; open3d runs as one call
    if backend == "open3d":
        res = _open3d_icp(moved, dst, dst_normals, method, max_distance, max_iter, tol)
    elif backend == "simpleicp":
        res = _simpleicp(moved, dst, max_distance, max_iter)
    else:
        res = _scipy_icp(moved, dst, dst_normals, method, max_distance, max_iter, tol, trim)
    res.translation = res.rotation @ t0 + res.translation
    return res
