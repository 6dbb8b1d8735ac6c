"""Ground-truth position maps: conventions, determinism, consistency with the image."""

from __future__ import annotations

import numpy as np
import pytest

from prnet_keras.data.gt import GroundTruthMaker, make_ground_truth, sample_rng
from prnet_keras.data.sources import list_samples, read_sample
from prnet_keras.geometry import UVLayout, crop_to_image, keypoint_box, pose_vertices, render_uv_map, uv_pixel_coords


@pytest.fixture(scope="module")
def tiny_layout(tiny_model):
    return UVLayout.from_model(tiny_model)


@pytest.fixture(scope="module")
def sample(tiny_aflw):
    return read_sample(list_samples(tiny_aflw)[0])


def _nme(pred_xy: np.ndarray, gt_xy: np.ndarray) -> float:
    lo, hi = gt_xy.min(0), gt_xy.max(0)
    return float(np.linalg.norm(pred_xy - gt_xy, axis=1).mean() / np.sqrt(np.prod(hi - lo)))


def test_val_ground_truth_conventions(tiny_model, tiny_layout, sample):
    image, mat = sample
    gt = make_ground_truth(tiny_model, tiny_layout, image, mat)
    assert gt["crop"].shape == (256, 256, 3) and gt["crop"].dtype == np.uint8
    assert gt["position_map"].shape == (256, 256, 3) and gt["position_map"].dtype == np.float32
    assert gt["transform"].shape == (3, 3) and gt["image_size"] == (200, 200)
    assert gt["yaw"] == pytest.approx(np.degrees(mat["Pose_Para"][0, 1]), rel=1e-5)
    np.testing.assert_allclose(gt["kpt68"], mat["pt3d_68"].T)  # pt3d_68 wins when present
    # Exact box (no rng): the model keypoints' box scaled by 1.5 spans the crop, centred.
    v = pose_vertices(tiny_model.vertices(mat["Shape_Para"], mat["Exp_Para"]), mat["Pose_Para"], 200)
    centre, old = keypoint_box(v[tiny_model.kpt_ind])
    k = gt["transform"][0, 0]
    assert k == pytest.approx(255 / (1.5 * old))
    np.testing.assert_allclose(gt["transform"][:2, :2] @ centre + gt["transform"][:2, 2], [127.5, 127.5], atol=1e-6)
    # The map's landmark pixels, mapped back to the image, are the model keypoints.
    back = crop_to_image(tiny_layout.keypoints_from_map(gt["position_map"]), gt["transform"])
    assert _nme(back[:, :2], v[tiny_model.kpt_ind, :2]) < 0.01
    # z is re-based to min 0 over the model (crop pixels); outside the UV footprint is 0.
    face = gt["position_map"][tiny_layout.face_mask]
    assert face[:, 2].min() >= 0
    uv_px = uv_pixel_coords(tiny_model.uv_coords, 256)
    covered = render_uv_map(uv_px, tiny_model.all_triangles, np.ones((tiny_model.n_vertices, 1)), 256)[..., 0] > 0
    assert np.all(gt["position_map"][~covered] == 0)
    assert np.count_nonzero(np.any(face != 0, axis=1)) > 0.95 * len(face)


def test_crop_is_the_warped_image(tiny_model, tiny_layout, sample):
    image, mat = sample
    gt = make_ground_truth(tiny_model, tiny_layout, image, mat)
    t_inv = np.linalg.inv(gt["transform"])
    # Crop pixel (r, c) comes from image point T^-1 (c, r) (bilinear): check integer-exact spots.
    for r, c in [(60, 70), (128, 128), (200, 150)]:
        x, y = (t_inv @ [c, r, 1])[:2]
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        p = image.astype(np.float64)
        want = ((1 - fx) * (1 - fy) * p[y0, x0] + fx * (1 - fy) * p[y0, x0 + 1]
                + (1 - fx) * fy * p[y0 + 1, x0] + fx * fy * p[y0 + 1, x0 + 1])
        np.testing.assert_allclose(gt["crop"][r, c], want, atol=1.5)


def test_training_perturbation_is_seeded_per_sample(tiny_model, tiny_layout, sample):
    image, mat = sample
    a = make_ground_truth(tiny_model, tiny_layout, image, mat, rng=sample_rng(0, "image00001"))
    b = make_ground_truth(tiny_model, tiny_layout, image, mat, rng=sample_rng(0, "image00001"))
    c = make_ground_truth(tiny_model, tiny_layout, image, mat, rng=sample_rng(0, "image00002"))
    val = make_ground_truth(tiny_model, tiny_layout, image, mat)
    np.testing.assert_array_equal(a["transform"], b["transform"])
    np.testing.assert_array_equal(a["position_map"], b["position_map"])
    assert not np.allclose(a["transform"], c["transform"])
    # Perturbation bounds: size x U(0.9, 1.1), centre +- 0.1 old.
    ratio = val["transform"][0, 0] / a["transform"][0, 0]
    assert 0.9 <= ratio <= 1.1


def test_kpt68_falls_back_to_model_keypoints(tiny_model, tiny_layout, sample):
    image, mat = sample
    mat = dict(mat)
    mat.pop("pt3d_68")
    gt = make_ground_truth(tiny_model, tiny_layout, image, mat)
    v = pose_vertices(tiny_model.vertices(mat["Shape_Para"], mat["Exp_Para"]), mat["Pose_Para"], 200)
    np.testing.assert_allclose(gt["kpt68"], v[tiny_model.kpt_ind], atol=1e-3)


def test_batched_vertices_equal_single(tiny_model, tiny_layout, tiny_aflw):
    maker = GroundTruthMaker(tiny_model, tiny_layout)
    fits = [maker.parse(read_sample(r)[1], r.name) for r in list_samples(tiny_aflw)[:4]]
    batch = maker.model_vertices(fits)
    for f, v in zip(fits, batch):
        np.testing.assert_allclose(v, tiny_model.vertices(f.shape_para, f.exp_para), rtol=1e-4, atol=1e-2)


def test_mean_bfm_on_real_aflw_within_3_5_percent(reference_data, mean_bfm, official_layout):
    """The mean face posed by each real fit lands its 68 points within 3.5 % NME of pt3d_68."""
    for ref in list_samples(reference_data / "aflw2000-3d"):
        image, mat = read_sample(ref)
        gt = make_ground_truth(mean_bfm, official_layout, image, mat)
        back = crop_to_image(official_layout.keypoints_from_map(gt["position_map"]), gt["transform"])
        assert _nme(back[:, :2], mat["pt3d_68"][:2].T) < 0.035, ref.name
