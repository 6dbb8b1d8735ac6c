"""NME metrics of face alignment and reconstruction, batched and vectorised (numpy).

Every function works on a batch of B images at once. Points are in the *original image
frame*: x right, y down (pixels), z larger = nearer (pixels; offsets are arbitrary until
aligned by :func:`align_z`). All NMEs are returned in **percent** (100 · error / normaliser).

Normalisers (per image, from the ground truth only):

- ``bbox``: sqrt(w·h) of the 2D box of the 68 ground-truth landmarks (3DDFA protocol,
  used by PRNet for sparse and dense alignment);
- ``interocular``: 3D distance between landmarks 36 and 45 (0-based outer eye corners;
  3D so that profiles do not collapse it), the literature's reconstruction normaliser;
- ``diagonal``: diagonal of the 2D box of the whole ground-truth mesh (PRNet-keras's
  choice, about 1.41x bbox: not comparable to papers, offered for comparison only).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

from prnet_keras.cancel import check_cancelled
from prnet_keras.errors import InputError

Normalizer = Literal["bbox", "diagonal", "interocular"]
ShiftZ = Literal["min", "mean", "none"]
NORMALIZERS = ("bbox", "diagonal", "interocular")
SHIFTZ = ("min", "mean", "none")
# 0-based outer eye corners of the 68-point (Multi-PIE) scheme.
LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 36, 45


def crop_to_image_batch(points: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    """(B, P, 3) crop-frame points and (B, 3, 3) image->crop transforms -> image frame.

    Batched form of :func:`prnet_keras.geometry.crop.crop_to_image`: x, y through T⁻¹,
    z divided by the crop scale k. float64 out.
    """
    p = np.asarray(points, np.float64)
    t_inv = np.linalg.inv(np.asarray(transforms, np.float64))
    out = np.empty_like(p)
    out[..., :2] = p[..., :2] @ t_inv[:, :2, :2].transpose(0, 2, 1) + t_inv[:, None, :2, 2]  # matmul >> einsum
    k_inv = np.sqrt(np.abs(np.linalg.det(t_inv[:, :2, :2])))  # = 1/k
    out[..., 2] = p[..., 2] * k_inv[:, None]
    return out


def _masked(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, bool)
    mask = np.asarray(mask, bool)
    if mask.shape != shape:
        raise InputError(f"metrics: mask shape {mask.shape} does not match points {shape}")
    return mask


def align_z(points: np.ndarray, mode: ShiftZ = "min", mask: np.ndarray | None = None) -> np.ndarray:
    """Remove each image's z offset: (B, P, 3) -> copy with z shifted per image.

    ``min``: min z over the (masked) points becomes 0 (official PRNet evaluation);
    ``mean``: mean z becomes 0; ``none``: unchanged. Ground truth and prediction are each
    aligned by their own points, so only the relative depth is compared.
    """
    if mode not in SHIFTZ:
        raise InputError(f"shiftZ must be one of {', '.join(SHIFTZ)}, got {mode!r}")
    out = np.array(points, np.float64, copy=True)
    if mode == "none":
        return out
    m = _masked(mask, out.shape[:2])
    z = out[..., 2]
    if mode == "min":
        off = np.where(m, z, np.inf).min(axis=1)
    else:
        off = np.where(m, z, 0.0).sum(axis=1) / np.maximum(m.sum(axis=1), 1)
    out[..., 2] -= np.where(np.isfinite(off), off, 0.0)[:, None]
    return out


def normalizer(
    kind: Normalizer, gt_kpt: np.ndarray, gt_dense: np.ndarray | None = None, dense_mask: np.ndarray | None = None
) -> np.ndarray:
    """(B,) normaliser in pixels from ground-truth landmarks (B, 68, 2|3) (and mesh (B, N, 2|3))."""
    k = np.asarray(gt_kpt, np.float64)
    if kind == "bbox":
        wh = k[..., :2].max(axis=1) - k[..., :2].min(axis=1)
        return np.sqrt(wh[:, 0] * wh[:, 1])
    if kind == "interocular":
        if k.shape[-1] < 3:
            raise InputError("interocular normaliser needs 3D ground-truth landmarks (B, 68, 3)")
        return np.linalg.norm(k[:, LEFT_EYE_OUTER] - k[:, RIGHT_EYE_OUTER], axis=-1)
    if kind == "diagonal":
        pts = k if gt_dense is None else np.asarray(gt_dense, np.float64)
        m = _masked(dense_mask if gt_dense is not None else None, pts.shape[:2])[..., None]
        hi = np.where(m, pts[..., :2], -np.inf).max(axis=1)
        lo = np.where(m, pts[..., :2], np.inf).min(axis=1)
        return np.linalg.norm(hi - lo, axis=-1)
    raise InputError(f"normalizer must be one of {', '.join(NORMALIZERS)}, got {kind!r}")


def nme(
    pred: np.ndarray, gt: np.ndarray, norm: np.ndarray, dims: int = 2, mask: np.ndarray | None = None
) -> np.ndarray:
    """Per-image NME in percent: mean over points of ||pred - gt|| (first ``dims`` coordinates) / norm.

    pred, gt (B, P, ≥dims); norm (B,); mask (B, P) bool selects the points that count
    (an image with no valid point, or a non-positive normaliser, gives NaN — never 0).
    """
    p = np.asarray(pred, np.float64)[..., :dims]
    g = np.asarray(gt, np.float64)[..., :dims]
    if p.shape != g.shape:
        raise InputError(f"metrics: prediction {p.shape} and ground truth {g.shape} differ in shape")
    m = _masked(mask, p.shape[:2])
    err = np.linalg.norm(p - g, axis=-1)
    count = m.sum(axis=1)
    mean = np.where(m, err, 0.0).sum(axis=1) / np.maximum(count, 1)
    norm = np.asarray(norm, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 100.0 * mean / norm
    return np.where((count > 0) & (norm > 0) & np.isfinite(out), out, np.nan)


def alignment_nme(
    pred: np.ndarray, gt: np.ndarray, norm: np.ndarray, shift_z: ShiftZ = "min", mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(2D NME, 3D NME) per image, percent. The 3D one compares z after :func:`align_z` of each set."""
    nme2 = nme(pred, gt, norm, 2, mask)
    nme3 = nme(align_z(pred, shift_z, mask), align_z(gt, shift_z, mask), norm, 3, mask)
    return nme2, nme3


QUERY_CHUNK = 2048  # nearest-point queries per call (far-away queries can cost ~0.3 ms each)


def nearest_distances(query: np.ndarray, target: np.ndarray, backend: str = "open3d") -> np.ndarray:
    """(n,) distance from each query point (n, d) to its nearest target point (m, d), d = 2 or 3.

    open3d's nanoflann search when available (far-away queries, e.g. an untrained network's
    near-constant output, cost it ~10x less than cKDTree, which then visits most of the
    tree per query); otherwise cKDTree on the unique query rows.
    """
    q = np.asarray(query, np.float64)
    t = np.asarray(target, np.float64)
    if backend == "open3d":
        try:
            import open3d as o3d
        except Exception:  # noqa: BLE001 - missing library or libusb
            backend = "scipy"
    if backend == "open3d":

        def pad(a: np.ndarray) -> np.ndarray:
            return a if a.shape[1] == 3 else np.concatenate([a, np.zeros((len(a), 1))], 1)

        check_cancelled()  # one library call: a cancelled server request stops before it
        a = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pad(q)))
        b = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pad(t)))
        return np.asarray(a.compute_point_cloud_distance(b))
    uq, inv = np.unique(q, axis=0, return_inverse=True)
    tree = cKDTree(t)
    d = np.empty(len(uq))
    for start in range(0, len(uq), QUERY_CHUNK):  # in chunks: a cancelled server request stops between them
        check_cancelled()
        d[start:start + QUERY_CHUNK] = tree.query(uq[start:start + QUERY_CHUNK], workers=-1)[0]
    return d[inv.reshape(-1)]


def reconstruction_nme(
    pred: np.ndarray,
    gt: np.ndarray,
    norm: float,
    gt_normals: np.ndarray | None = None,
    backend: str = "open3d",
    method: str = "point_to_plane",
    icp_points: int | None = 4000,
    dims: tuple[int, ...] = (2, 3),
) -> tuple[float, float]:
    """(2D, 3D) reconstruction NME in percent for one image.

    ``pred`` (n, 3) predicted dense points is rigidly aligned onto ``gt`` (m, 3) by ICP
    (:func:`prnet_keras.evaluate.icp.icp`, started from matched centroids); then for each
    aligned predicted point the distance to the nearest ground-truth point, in 3D and in
    the image plane (x, y), averaged over *all* predicted points (no rejection when
    scoring) and divided by ``norm``. ``icp_points`` caps the points used to estimate the
    motion (an even subsample; scoring uses all). A dimension not in ``dims`` is returned
    as NaN without its nearest-point search.
    """
    from prnet_keras.evaluate.icp import icp

    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    if not (np.isfinite(norm) and norm > 0) or len(pred) < 6 or len(gt) < 6:
        return np.nan, np.nan
    step = max(1, len(pred) // icp_points) if icp_points else 1
    res = icp(pred[::step], gt, backend=backend, method=method, dst_normals=gt_normals)
    aligned = res.apply(pred)
    out = []
    for d in (2, 3):
        if d in dims:
            out.append(float(100.0 * nearest_distances(aligned[:, :d], gt[:, :d], backend).mean() / norm))
        else:
            out.append(np.nan)
    return out[0], out[1]
