"""The server's six /evaluate numbers are the evaluator's (``evaluate.runner.score_batch``) on the same inputs.

Same inputs: the ground truth of a synthetic validation file and a perturbed copy as the
prediction (rotated 4°, shifted, 0.8 px noise), given to the evaluator as arrays and to
the server as meshes (vertices in the layout's face-pixel order, the layout's triangles
and keypoint vertices). Equal up to float32 rounding of the mesh vertices.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from prnet_keras.evaluate.runner import _gt_normals, make_settings, score_batch
from prnet_keras.evaluate.sources import HDF5Source, OraclePredictor, Predictions, kpt_vertex_index
from prnet_keras.server.meshes import Mesh
from prnet_keras.server.scoring import EVALUATION_TYPES, evaluate_meshes

METRICS = ("sparse_2d", "sparse_3d", "dense_2d", "dense_3d", "reconstruction_2d", "reconstruction_3d")


@pytest.fixture(scope="module")
def pair(synthetic_val_hdf5):
    source = HDF5Source(synthetic_val_hdf5)
    layout = source.layout
    gt, failed = source.read(range(3))
    assert not failed
    oracle = OraclePredictor(layout).predict(gt)
    assert np.all(np.any(layout.vertices_from_map(gt.maps) != 0, axis=-1))  # the ground truth covers every face pixel
    kidx = kpt_vertex_index(layout)
    gt_dense = oracle.dense.astype(np.float32).astype(np.float64)  # what a float32 mesh holds
    rng = np.random.default_rng(0)
    a = np.radians(4.0)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    centre = gt_dense.mean(1, keepdims=True)
    pred_dense = (gt_dense - centre) @ rot.T + centre + [3.0, -2.0, 7.0] + rng.normal(0, 0.8, gt_dense.shape)
    pred_dense = pred_dense.astype(np.float32).astype(np.float64)
    gt = dataclasses.replace(gt, kpt68=gt_dense[:, kidx].astype(np.float32))
    pred = Predictions(pred_dense[:, kidx], pred_dense, [None] * len(gt.names))
    meshes = [(Mesh(gt_dense[i].astype(np.float32), np.full_like(gt_dense[i], 0.5, np.float32), layout.triangles, kidx),
               Mesh(pred_dense[i].astype(np.float32), np.full_like(gt_dense[i], 0.5, np.float32), layout.triangles,
                    kidx))
              for i in range(len(gt.names))]
    return gt, pred, layout, meshes


@pytest.mark.parametrize("icp, method", [("scipy", "point_to_point"), ("open3d", "point_to_plane")])
def test_server_scores_equal_the_evaluators(pair, icp, method):
    gt, pred, layout, meshes = pair
    settings = make_settings(icp=icp, icp_method=method)
    if settings.icp != icp:
        pytest.skip(f"{icp} is not importable here")
    want = score_batch(gt, pred, layout, settings)
    normals = _gt_normals(gt, layout) if method == "point_to_plane" else None
    for i, (g, p) in enumerate(meshes):
        got = evaluate_meshes(g, p, icp, method, None if normals is None else normals[i])
        expected = [float(want[m][i]) for m in METRICS]
        assert all(v is not None and v > 0.05 for v in got)  # a real error, not a trivial zero
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_names_order_and_defaults(pair):
    _, _, _, meshes = pair
    assert EVALUATION_TYPES == ["sparse 2D", "sparse 3D", "dense 2D", "dense 3D", "reconstruction 2D",
                                "reconstruction 3D"]
    g, p = meshes[0]
    # the server's defaults (ICP from the ground-truth triangles' normals) land on the same numbers up to the ICP
    got = evaluate_meshes(g, p)
    assert got[:4] == evaluate_meshes(g, p, "scipy", "point_to_point")[:4]  # alignment numbers need no ICP
    other = Mesh(p.vertices[:-5], p.colors[:-5], p.triangles[:0], p.kpt_idx)
    assert evaluate_meshes(g, other)[2:4] == [None, None]  # another vertex count: no dense numbers


class _CountingFlag:
    """Stands in for a CancelToken's event: counts the checks; reads as set from check ``at`` on."""

    def __init__(self, at: int | None = None) -> None:
        self.calls, self.at = 0, at

    def is_set(self) -> bool:
        self.calls += 1
        return self.at is not None and self.calls >= self.at


def _checks(mesh_pair, at: int | None = None) -> int:
    from prnet_keras.cancel import CancelToken, cancellable

    token = CancelToken()
    token._event = flag = _CountingFlag(at)
    token.reason = "timed out"
    with cancellable(token):
        evaluate_meshes(*mesh_pair, "scipy", "point_to_point")
    return flag.calls


def test_a_cancelled_request_stops_inside_icp_and_the_nearest_point_search(pair):
    """Scoring through evaluate.metrics keeps the server's cancellation: a check at every ICP
    iteration and every chunk of the nearest-point searches (2D and 3D), not only around them."""
    from prnet_keras.cancel import Cancelled
    from prnet_keras.evaluate.icp import icp
    from prnet_keras.evaluate.metrics import QUERY_CHUNK

    big = pair[3][0]
    n = len(big[1].vertices)
    assert n > 2 * QUERY_CHUNK  # several search chunks
    step = max(1, n // 4000)
    iterations = icp(big[1].vertices[::step] - [0, 0, big[1].vertices[:, 2].min()],
                     big[0].vertices - [0, 0, big[0].vertices[:, 2].min()], "scipy", "point_to_point").iterations
    calls = _checks(big)
    assert calls >= iterations + 2 * -(-n // QUERY_CHUNK) - 2  # unique 2D rows may be a few fewer
    for at in (3, calls // 2, calls):
        with pytest.raises(Cancelled, match="timed out"):
            _checks(big, at)
