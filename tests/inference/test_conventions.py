"""Feeding the ground-truth position map in place of the network reproduces the GT mesh,
landmarks and pose: this pins the crop, the inverse transform, the y flip and the angles."""

from __future__ import annotations

import numpy as np
import pytest

from prnet_keras.geometry import angles_to_rotation, vertex_visibility
from prnet_keras.inference import Predictor


def _rotation_error_deg(r1: np.ndarray, r2: np.ndarray) -> float:
    c = (np.trace(r1.T @ r2) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


@pytest.fixture(scope="module")
def faces(posed_samples, bfm_layout, map_network):
    net = map_network([s.gt_map for s in posed_samples])
    pred = Predictor(net, bfm_layout, batch_size=8)
    out = pred.predict_batch([s.image for s in posed_samples], landmarks=[s.kpts for s in posed_samples])
    assert net.calls == [len(posed_samples)]  # every face of every image in one network batch
    return [f[0] for f in out]


def test_crop_is_the_training_crop(faces, posed_samples):
    for face, s in zip(faces, posed_samples):
        np.testing.assert_allclose(face.transform, s.transform, rtol=1e-9, atol=1e-9)


def test_mesh_reproduces_ground_truth(faces, posed_samples, bfm_layout):
    for face, s in zip(faces, posed_samples):
        want = bfm_layout.vertices_from_map(s.gt_image_map)
        assert face.vertices.shape == (bfm_layout.n_vertices, 3)
        np.testing.assert_allclose(face.vertices, want, atol=2e-3)


def test_landmarks_match_model_keypoints_and_pt3d(faces, posed_samples):
    for face, s in zip(faces, posed_samples):
        err = np.linalg.norm(face.keypoints - s.kpts, axis=1)
        assert err.mean() < 1.0, (s.name, err.mean())  # UV-pixel rounding only
        lo, hi = s.pt3d[:, :2].min(0), s.pt3d[:, :2].max(0)
        nme = np.linalg.norm(face.keypoints[:, :2] - s.pt3d[:, :2], axis=1).mean() / np.sqrt(np.prod(hi - lo))
        assert nme < 0.04, (s.name, nme)  # the mean face lands within 2-3 %: identity/expression are what is missing


def test_pose_within_one_degree(faces, posed_samples):
    for face, s in zip(faces, posed_samples):
        r_gt = angles_to_rotation(s.pose_para[:3])
        assert _rotation_error_deg(face.pose.rotation, r_gt) < 1.0, s.name
        np.testing.assert_allclose(face.pose.angles_deg, np.degrees(s.pose_para[:3]), atol=1.0, err_msg=s.name)
        assert face.pose.scale == pytest.approx(s.pose_para[6], rel=0.01)
        assert face.pose.rms_px < 0.5


def test_pose_with_official_layout(posed_samples, official_layout, map_network):
    """The official canonical face is not the BFM mean, but the fitted angles stay within 3 degrees."""
    net = map_network([s.gt_map for s in posed_samples])
    faces = Predictor(net, official_layout).predict_batch([s.image for s in posed_samples],
                                                         landmarks=[s.kpts for s in posed_samples])
    for (face,), s in zip(faces, posed_samples):
        assert face.vertices.shape == (43867, 3)
        assert _rotation_error_deg(face.pose.rotation, angles_to_rotation(s.pose_para[:3])) < 3.0, s.name


def test_frontalized_vertices_undo_pose(faces, bfm_layout):
    for face in faces:
        np.testing.assert_allclose(face.frontalized_vertices, bfm_layout.canonical_vertices, atol=0.02 * 1e4)
        err = np.abs(face.frontalized_vertices - bfm_layout.canonical_vertices).mean()
        assert err < 1e-3 * np.ptp(bfm_layout.canonical_vertices)


def test_colours_sample_image_without_mutating_vertices(faces, posed_samples):
    face, s = faces[0], posed_samples[0]
    before = face.vertices.copy()
    cols = face.colors
    np.testing.assert_array_equal(face.vertices, before)
    x = np.clip(np.rint(before[:, 0]), 0, s.image.shape[1] - 1).astype(int)
    y = np.clip(np.rint(before[:, 1]), 0, s.image.shape[0] - 1).astype(int)
    np.testing.assert_allclose(cols, s.image[y, x] / 255.0, atol=1e-6)
    assert cols.dtype == np.float32 and cols.shape == before.shape


def test_visibility_hides_far_side_of_profile(faces, posed_samples):
    # image00475 has yaw 65.6°: a good share of the face turns away.
    by_name = {s.name: f for f, s in zip(faces, posed_samples)}
    frontal, profile = by_name["image00050"].visibility.mean(), by_name["image00475"].visibility.mean()
    # (the mean-BFM layout covers ears and neck too, partly hidden even in a frontal view)
    assert frontal > 0.75
    assert profile < frontal - 0.15
    f = by_name["image00475"]
    np.testing.assert_array_equal(f.visibility, vertex_visibility(f.vertices, f.triangles, *f.image_size))


def test_depth_and_texture(faces, posed_samples):
    face, s = faces[0], posed_samples[0]
    depth = face.depth_image
    assert depth.shape == s.image.shape[:2]
    assert depth.max() == pytest.approx(face.vertices[:, 2].max(), abs=0.5)
    tex = face.texture()
    assert tex.shape == (256, 256, 3) and tex.dtype == np.uint8
    # A face pixel's texel is the image at that vertex's position.
    r, c = np.divmod(face.layout.kpt_flat[30], 256)
    x, y = face.position_map[r, c, :2]
    np.testing.assert_allclose(tex[r, c].astype(float), s.image[int(round(y)), int(round(x))].astype(float), atol=40)
    small = face.texture(128, visibility_mask=True)
    assert small.shape == (128, 128, 3)
    outside = ~face.layout.face_mask[::2, ::2]
    assert small[outside].max() == 0


def test_to_dict_is_json_safe(faces):
    import json

    d = faces[0].to_dict()
    text = json.dumps(d)  # raises on numpy types
    assert len(d["keypoints"]) == 68 and set(d["pose"]) >= {"pitch_deg", "yaw_deg", "roll_deg", "camera_matrix"}
    assert "vertices" not in d and "vertices" in json.loads(json.dumps(faces[0].to_dict(vertices=True)))
    assert text
