"""Pose conventions (3DDFA), similarity transforms and Umeyama, against known answers."""

from __future__ import annotations

import numpy as np
import pytest

from prnet_keras.errors import InputError
from prnet_keras.geometry import pose


def test_angles_to_rotation_known_matrices():
    # Yaw +90°: Ry = [[0, 0, -1], [0, 1, 0], [1, 0, 0]] (3DDFA sign convention).
    r = pose.angles_to_rotation([0.0, np.pi / 2, 0.0])
    np.testing.assert_allclose(r, [[0, 0, -1], [0, 1, 0], [1, 0, 0]], atol=1e-12)
    # Pitch +90°: Rx = [[1, 0, 0], [0, 0, 1], [0, -1, 0]].
    r = pose.angles_to_rotation([np.pi / 2, 0.0, 0.0])
    np.testing.assert_allclose(r, [[1, 0, 0], [0, 0, 1], [0, -1, 0]], atol=1e-12)
    # Roll +90°: Rz = [[0, 1, 0], [-1, 0, 0], [0, 0, 1]].
    r = pose.angles_to_rotation([0.0, 0.0, np.pi / 2])
    np.testing.assert_allclose(r, [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-12)
    # Composition order R = Rx·Ry·Rz.
    a = np.array([0.3, -0.5, 0.7])
    expect = (pose.angles_to_rotation([a[0], 0, 0]) @ pose.angles_to_rotation([0, a[1], 0])
              @ pose.angles_to_rotation([0, 0, a[2]]))
    np.testing.assert_allclose(pose.angles_to_rotation(a), expect, atol=1e-12)


def test_rotation_round_trip_random(rng):
    for _ in range(200):
        a = rng.uniform([-np.pi, -np.pi / 2 + 1e-3, -np.pi], [np.pi, np.pi / 2 - 1e-3, np.pi])
        r = pose.angles_to_rotation(a)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1.0)
        np.testing.assert_allclose(pose.rotation_to_angles(r), a, atol=1e-9)


@pytest.mark.parametrize("yaw", [np.pi / 2, -np.pi / 2])
def test_rotation_to_angles_gimbal_lock(yaw):
    # At |yaw| = 90° only pitch ± roll is determined: the decomposition must still give
    # angles that rebuild the same rotation, with roll = 0.
    r = pose.angles_to_rotation([0.4, yaw, 0.25])
    a = pose.rotation_to_angles(r)
    assert a[2] == 0.0
    assert a[1] == pytest.approx(yaw)
    np.testing.assert_allclose(pose.angles_to_rotation(a), r, atol=1e-9)


@pytest.mark.parametrize("eps", [1e-3, 1e-5, 1e-7, 1e-9, 1e-12])
def test_rotation_to_angles_near_gimbal_lock_rebuilds_rotation(eps):
    for yaw in (np.pi / 2 - eps, -np.pi / 2 + eps):
        r = pose.angles_to_rotation([0.4, yaw, 0.25])
        np.testing.assert_allclose(pose.angles_to_rotation(pose.rotation_to_angles(r)), r, atol=1e-11)


def test_rotation_to_angles_rejects_bad_shape():
    with pytest.raises(InputError, match="rotation"):
        pose.rotation_to_angles(np.eye(2))
    with pytest.raises(InputError, match="angles"):
        pose.angles_to_rotation([0.1, 0.2])


def test_pose_para_parse_make_round_trip():
    p = pose.make_pose_para([0.1, -0.2, 0.3], [10.0, 20.0, 5.0], 0.0012)
    assert p.shape == (1, 7) and p.dtype == np.float32
    s, r, t = pose.parse_pose_para(p)
    assert s == pytest.approx(0.0012)
    np.testing.assert_allclose(r, pose.angles_to_rotation([0.1, -0.2, 0.3]), atol=1e-6)
    np.testing.assert_allclose(t, [10, 20, 5], atol=1e-5)
    with pytest.raises(InputError, match="Pose_Para"):
        pose.parse_pose_para(np.zeros(6))
    with pytest.raises(InputError, match="NaN"):
        pose.parse_pose_para(np.array([0, 0, 0, 0, 0, 0, np.nan]))


def test_similarity_and_image_flip_known_values():
    v = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    r = pose.angles_to_rotation([0.0, np.pi / 2, 0.0])  # x' = -z, z' = x
    out = pose.similarity_transform(v, 2.0, r, [10.0, 20.0, 30.0])
    np.testing.assert_allclose(out, [[10 - 6, 20 + 4, 30 + 2], [10, 20, 30]], atol=1e-5)
    assert out.dtype == np.float32
    img = pose.to_image(out, 100)
    np.testing.assert_allclose(img[:, 1], 99 - out[:, 1])
    np.testing.assert_allclose(pose.from_image(img, 100), out)
    np.testing.assert_array_equal(pose.orthographic_project(img), img[:, :2])
    p = pose.make_pose_para([0.0, np.pi / 2, 0.0], [10.0, 20.0, 30.0], 2.0)
    np.testing.assert_allclose(pose.pose_vertices(v, p, 100), img, atol=1e-4)
    cam = pose.camera_matrix(2.0, r, [10.0, 20.0, 30.0])
    np.testing.assert_allclose((cam @ np.c_[v, np.ones(2)].T).T, out, atol=1e-5)


def test_umeyama_recovers_known_similarity(rng):
    src = rng.normal(size=(50, 3)) * 30.0
    r = pose.angles_to_rotation([0.4, -0.9, 0.2])
    dst = 1.7 * src @ r.T + np.array([5.0, -3.0, 8.0])
    s, r_est, t = pose.umeyama(src, dst)
    assert s == pytest.approx(1.7, rel=1e-10)
    np.testing.assert_allclose(r_est, r, atol=1e-10)
    np.testing.assert_allclose(t, [5, -3, 8], atol=1e-8)
    s1, _, _ = pose.umeyama(src, dst, with_scale=False)
    assert s1 == 1.0


def test_umeyama_reflection_input_gives_proper_rotation():
    # dst is a mirror image of src: the best *rotation* must still have det(R) = +1.
    # Axis-aligned symmetric points make the answer exact: keep x, y, give up on z.
    src = np.concatenate([np.diag([30.0, 20.0, 5.0]), -np.diag([30.0, 20.0, 5.0])])
    mirror = np.diag([1.0, 1.0, -1.0])
    dst = src @ mirror.T
    s, r, t = pose.umeyama(src, dst)
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    # Flattest axis is z (std 5): flipping it costs least, so the optimum is the identity.
    np.testing.assert_allclose(r, np.eye(3), atol=1e-9)
    assert s == pytest.approx((900 + 400 - 25) / (900 + 400 + 25))  # (σx + σy - σz) / var
    # Without the sign correction the plain SVD solution would be the mirror itself.
    u, _, vt = np.linalg.svd((dst - dst.mean(0)).T @ (src - src.mean(0)))
    assert np.linalg.det(u @ vt) < 0


def test_umeyama_rejects_bad_input():
    with pytest.raises(InputError):
        pose.umeyama(np.zeros((5, 3)), np.zeros((4, 3)))
    with pytest.raises(InputError):
        pose.umeyama(np.full((5, 3), np.nan), np.zeros((5, 3)))


def test_estimate_pose_para_recovers_pose_para(rng):
    ref = rng.normal(size=(300, 3)) * np.array([60.0, 80.0, 40.0])
    truth = pose.make_pose_para([0.2, -0.7, 0.1], [200.0, 180.0, 0.0], 0.9)
    s, r, t = pose.parse_pose_para(truth)
    cam = pose.similarity_transform(ref, s, r, t)
    est = pose.estimate_pose_para(ref, cam)
    np.testing.assert_allclose(est[0, :3], truth[0, :3], atol=1e-4)
    np.testing.assert_allclose(est[0, 6], truth[0, 6], rtol=1e-4)
    np.testing.assert_allclose(est[0, 3:5], truth[0, 3:5], atol=1e-2)
