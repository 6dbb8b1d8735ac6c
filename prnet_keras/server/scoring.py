"""The six PRNet-keras ``/evaluate`` numbers between a ground-truth and a predicted mesh.

Names and order follow the peer API: sparse 2D, sparse 3D, dense 2D, dense 3D,
reconstruction 2D, reconstruction 3D. The numbers are those of ``prnet-evaluate`` with its
default settings, computed by the same functions (:mod:`prnet_keras.evaluate.metrics`) on
one image, in percent (NME × 100):

* sparse: the 68 landmarks (``kpt_idx``) / sqrt(w·h) of the ground-truth 68-point 2D box
  (``bbox``, the standard AFLW2000-3D normaliser); 3D after aligning each set to min z = 0
  (``shiftZ = "min"``: z has no absolute origin in an orthographic fit);
* dense: all vertices, same normaliser and z alignment; needs the same vertex count (same
  UV layout), else ``None``;
* reconstruction: rigid ICP of the predicted vertices onto the ground-truth vertices
  (point-to-plane, target normals from the ground-truth triangles when it has them), then
  the mean distance from each aligned predicted vertex to the nearest ground-truth vertex,
  in 3D and in the image plane (x, y: the nearest point in the plane), / the outer
  interocular distance (landmarks 36 and 45, 0-based) of the ground truth.

The ICP motion is estimated on an even subsample of at most 4000 predicted points (scoring
uses every point), which bounds a request's ICP time whatever mesh it sends. A cancelled
request (time-out, client gone, server stopping; :mod:`prnet_keras.cancel`) stops between
the stages here, at every ICP iteration and every chunk of the nearest-point search (scipy
backend; open3d runs each of those as one library call).
"""

from __future__ import annotations

import numpy as np

from prnet_keras.cancel import check_cancelled
from prnet_keras.evaluate.icp import mesh_normals
from prnet_keras.evaluate.metrics import alignment_nme, normalizer, reconstruction_nme
from prnet_keras.server.meshes import Mesh

EVALUATION_TYPES = ["sparse 2D", "sparse 3D", "dense 2D", "dense 3D", "reconstruction 2D", "reconstruction 3D"]


def evaluate_meshes(gt: Mesh, pred: Mesh, icp_backend: str = "open3d", icp_method: str = "point_to_plane",
                    gt_normals: np.ndarray | None = None) -> list[float | None]:
    """The six numbers (see module doc) for one ground-truth / prediction pair; None where not scorable.

    icp_backend / icp_method: as ``prnet-evaluate --icp / --icp-method`` (the caller makes
    sure the backend is importable); gt_normals (N, 3): target normals for point-to-plane
    ICP (default: from the ground-truth triangles, else estimated from neighbours).
    """
    gt_kpt = np.asarray(gt.keypoints, np.float64)[None]
    pred_kpt = np.asarray(pred.keypoints, np.float64)[None]
    norm = normalizer("bbox", gt_kpt)
    values = [float(v[0]) for v in alignment_nme(pred_kpt, gt_kpt, norm, "min")]
    if len(pred.vertices) == len(gt.vertices):
        values += [float(v[0]) for v in alignment_nme(pred.vertices[None], gt.vertices[None], norm, "min")]
    else:
        values += [np.nan, np.nan]
    check_cancelled()
    if gt_normals is None and icp_method == "point_to_plane" and len(gt.triangles):
        gt_normals = mesh_normals(gt.vertices, gt.triangles)
    check_cancelled()
    rnorm = float(normalizer("interocular", gt_kpt)[0])
    values += list(reconstruction_nme(pred.vertices, gt.vertices, rnorm, gt_normals, icp_backend, icp_method))
    return [None if v is None or not np.isfinite(v) else round(float(v), 6) for v in values]
