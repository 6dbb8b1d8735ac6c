"""The six PRNet-keras ``/evaluate`` numbers between a ground-truth and a predicted mesh.

Names and order follow the peer API: sparse 2D, sparse 3D, dense 2D, dense 3D,
reconstruction 2D, reconstruction 3D. Values are percentages (NME × 100):

* sparse: the 68 landmarks (``kpt_idx``) / sqrt(w·h) of the ground-truth 68-point 2D box
  (the standard AFLW2000-3D normaliser);
* dense: all vertices, same normaliser; needs the same vertex count (same UV layout),
  else ``None``;
* reconstruction: rigid ICP of the predicted vertices onto the ground-truth vertices, then
  the mean nearest-point distance / outer interocular distance (landmarks 36 and 45,
  0-based) of the ground truth; "2D" measures the same pairs in x, y only.

3D errors align z offsets first: each point set is shifted to min z = 0 (config
``evaluate.shiftZ = "min"``; z has no absolute origin in an orthographic fit).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from prnet_keras.cancel import check_cancelled
from prnet_keras.evaluate.metrics import QUERY_CHUNK
from prnet_keras.server.meshes import Mesh

ICP_POINTS = 4000
EVALUATION_TYPES = ["sparse 2D", "sparse 3D", "dense 2D", "dense 3D", "reconstruction 2D", "reconstruction 3D"]


def _shift_z(points: np.ndarray) -> np.ndarray:
    out = np.asarray(points, np.float64).copy()
    out[:, 2] -= out[:, 2].min()
    return out


def _nme(pred: np.ndarray, gt: np.ndarray, dims: int, norm: float) -> float:
    if dims == 3:
        pred, gt = _shift_z(pred), _shift_z(gt)
    err = np.linalg.norm(np.asarray(pred, np.float64)[:, :dims] - np.asarray(gt, np.float64)[:, :dims], axis=1)
    return float(100.0 * err.mean() / norm)


def box_normaliser(gt_keypoints: np.ndarray) -> float:
    """sqrt(w·h) of the 2D box of the ground-truth 68 landmarks (pixels, >= 1e-6)."""
    k = np.asarray(gt_keypoints, np.float64)[:, :2]
    w, h = k.max(0) - k.min(0)
    return float(max(np.sqrt(max(w, 0.0) * max(h, 0.0)), 1e-6))


def _reconstruction(gt: Mesh, pred: Mesh, icp_backend: str) -> tuple[float, float]:
    """(2D, 3D) mean nearest-point distance after rigid ICP / outer interocular distance, in %."""
    from prnet_keras.evaluate.icp import icp

    dst = _shift_z(gt.vertices)
    src = _shift_z(pred.vertices)
    # the motion is estimated on an even subsample of at most ICP_POINTS predicted points, as
    # evaluate.metrics.reconstruction_nme does (scoring below uses every point): this bounds
    # a request's ICP time whatever mesh it sends
    result = icp(src[::max(1, len(src) // ICP_POINTS)], dst, backend=icp_backend)
    moved = result.apply(src)
    tree, nearest = cKDTree(dst), np.empty(len(moved), np.int64)
    for start in range(0, len(moved), QUERY_CHUNK):  # far-away points (an untrained network) are slow to query
        check_cancelled()
        nearest[start:start + QUERY_CHUNK] = tree.query(moved[start:start + QUERY_CHUNK], k=1)[1]
    diff = moved - dst[nearest]
    kp = gt.keypoints
    iod = float(max(np.linalg.norm(kp[36] - kp[45]), 1e-6))
    return (
        float(100.0 * np.linalg.norm(diff[:, :2], axis=1).mean() / iod),
        float(100.0 * np.linalg.norm(diff, axis=1).mean() / iod),
    )


def evaluate_meshes(gt: Mesh, pred: Mesh, icp_backend: str = "scipy") -> list[float | None]:
    """The six numbers (see module doc) for one ground-truth / prediction pair."""
    norm = box_normaliser(gt.keypoints)
    values: list[float | None] = [
        _nme(pred.keypoints, gt.keypoints, 2, norm),
        _nme(pred.keypoints, gt.keypoints, 3, norm),
    ]
    if len(pred.vertices) == len(gt.vertices):
        values += [_nme(pred.vertices, gt.vertices, 2, norm), _nme(pred.vertices, gt.vertices, 3, norm)]
    else:
        values += [None, None]
    check_cancelled()
    values += list(_reconstruction(gt, pred, icp_backend))
    return [None if v is None or not np.isfinite(v) else round(float(v), 6) for v in values]
