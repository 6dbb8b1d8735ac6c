"""Checks against the real reference data (mean-only BFM, official uv-data, AFLW2000-3D fits).

All tests here take the ``reference_data`` fixture (via mean_bfm / official_layout) and skip
when the reference data is absent.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from prnet_keras.geometry import (
    UVLayout, crop_transform, estimate_pose_para, from_image, pose_vertices, render_uv_map, training_crop,
    uv_pixel_coords, vertex_visibility, vertices_to_crop,
)


@pytest.fixture(scope="module")
def derived_layout(mean_bfm) -> UVLayout:
    return UVLayout.from_model(mean_bfm)


@pytest.fixture(scope="module")
def aflw_samples(reference_data) -> list[tuple[str, dict]]:
    files = sorted((reference_data / "aflw2000-3d").glob("*.mat"))
    assert files, "reference aflw2000-3d/*.mat missing"
    return [(f.name, scipy.io.loadmat(f)) for f in files]


def nme_2d(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean 2D point error / sqrt(w·h) of the ground-truth box."""
    w, h = gt[:, :2].max(0) - gt[:, :2].min(0)
    return float(np.linalg.norm(pred[:, :2] - gt[:, :2], axis=1).mean() / np.sqrt(w * h))


def test_official_layout_sizes(official_layout):
    assert official_layout.n_vertices == 43867
    assert official_layout.triangles.shape == (86907, 3)
    assert official_layout.resolution == 256
    w = official_layout.weight_mask
    # Official uv_weight_mask.png holds 255 : 64 : 48 : 0, i.e. ~16 : 4 : 3 : 0.
    levels = sorted(np.unique(np.rint(w * 255)).astype(int))
    assert levels[0] == 0 and levels[-1] == 255 and {48, 64} <= set(levels)


def test_derived_uv_kpt_ind_equals_official(derived_layout, reference_data):
    official = np.loadtxt(reference_data / "prnet-uv-data" / "uv_kpt_ind.txt").astype(int)
    np.testing.assert_array_equal(derived_layout.uv_kpt_ind, official)


def test_derived_face_region_overlaps_official(derived_layout, official_layout):
    a, b = derived_layout.face_mask, official_layout.face_mask
    inter = int((a & b).sum())
    recall, precision = inter / b.sum(), inter / a.sum()
    print(f"derived face region {a.sum()} px, official {b.sum()} px: recall of official {recall:.4f}, "
          f"precision {precision:.4f}")
    # The official mask is a hand-trimmed subset of the UV footprint (no neck, no ears).
    assert recall > 0.995
    assert precision > 0.6


def test_uv_interpolation_exact_on_bfm_mesh(mean_bfm):
    # Rendering each vertex's own UV pixel position must give back every pixel's centre:
    # coverage and barycentric interpolation agree on the real 53k-vertex topology.
    uv = uv_pixel_coords(mean_bfm.uv_coords, 256)
    m = render_uv_map(uv, mean_bfm.triangles, uv, 256)
    covered = np.abs(m).sum(-1) > 0
    rows, cols = np.nonzero(covered)
    err = np.abs(m[rows, cols] - np.stack([cols, rows], 1)).max()
    assert err < 2e-3


def test_posed_mean_face_keypoints_from_uv_map(mean_bfm, derived_layout, official_layout, aflw_samples):
    uv = uv_pixel_coords(mean_bfm.uv_coords, 256)
    for name, mat in aflw_samples:
        v_img = pose_vertices(mean_bfm.vertices(), mat["Pose_Para"], 450)
        centre, size = training_crop(v_img[mean_bfm.kpt_ind])
        v_crop = vertices_to_crop(v_img, crop_transform(centre, size))
        pm = render_uv_map(uv, mean_bfm.all_triangles, v_crop, 256)
        direct = v_crop[mean_bfm.kpt_ind]
        err = np.linalg.norm(official_layout.keypoints_from_map(pm)[:, :2] - direct[:, :2], axis=1)
        print(f"{name}: UV-map keypoints vs projected kpt_ind: mean {err.mean():.3f} px, max {err.max():.3f} px")
        # uv_kpt_ind is the *rounded* UV pixel (up to 0.7 UV px off the vertex): mean error
        # stays under half a pixel, the worst point (stretched jaw line) under 2.5 px.
        assert err.mean() < 0.5 and err.max() < 2.5
        # Pose from the map against either canonical face recovers the fitted angles.
        for lay, tol in ((derived_layout, 0.01), (official_layout, 0.05)):
            est = estimate_pose_para(lay.canonical_vertices, from_image(lay.vertices_from_map(pm), 256))
            np.testing.assert_allclose(np.degrees(est[0, :3]), np.degrees(mat["Pose_Para"][0, :3]), atol=tol)


def test_mean_face_lands_on_aflw_keypoints(mean_bfm, aflw_samples):
    for name, mat in aflw_samples:
        v_img = pose_vertices(mean_bfm.vertices(), mat["Pose_Para"], 450)
        nme = nme_2d(v_img[mean_bfm.kpt_ind], mat["pt3d_68"][:2].T)
        print(f"{name}: mean BFM face with Pose_Para, 68-point NME {100 * nme:.2f} %")
        assert nme < 0.035


def test_visibility_of_frontal_face(mean_bfm, aflw_samples):
    name, mat = aflw_samples[0]  # image00050: yaw ~1 deg
    v_img = pose_vertices(mean_bfm.vertices(), mat["Pose_Para"], 450)
    vis = vertex_visibility(v_img, mean_bfm.all_triangles, 450, 450)
    assert vis[mean_bfm.kpt_ind[17:]].all()  # brows, eyes, nose, mouth
    assert 0.6 < vis.mean() < 0.95  # the back of the ears and under the chin are hidden


def test_derived_weight_regions_match_official(derived_layout, official_layout):
    face = official_layout.face_mask
    ours = (np.rint(derived_layout.weight_mask * 16) == 4) & face
    theirs = (np.rint(official_layout.weight_mask * 255) == 64) & face
    iou = (ours & theirs).sum() / (ours | theirs).sum()
    print(f"eyes-nose-mouth weight region: derived {ours.sum()} px, official {theirs.sum()} px, IoU {iou:.3f}")
    assert iou > 0.94
