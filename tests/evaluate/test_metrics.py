"""NME metrics: exact values on hand-made cases (zero, offsets, scales, masks, z alignment)."""

from __future__ import annotations

import numpy as np
import pytest

from prnet_keras.errors import InputError
from prnet_keras.evaluate.metrics import (
    align_z, alignment_nme, crop_to_image_batch, nme, normalizer, reconstruction_nme,
)
from prnet_keras.geometry import crop_to_image, crop_transform


def _kpts(rng, b=3, w=100.0, h=80.0):
    """(b, 68, 3) landmarks whose 2D box is exactly w x h."""
    k = rng.uniform(0, 1, (b, 68, 3))
    k[:, 0, :2], k[:, 1, :2] = 0.0, 1.0
    return k * np.array([w, h, 50.0]) + np.array([40.0, 30.0, 7.0])


def test_perfect_prediction_is_zero(rng):
    k = _kpts(rng)
    n = normalizer("bbox", k)
    s2, s3 = alignment_nme(k, k, n)
    np.testing.assert_array_equal(s2, 0.0)
    np.testing.assert_array_equal(s3, 0.0)


def test_bbox_normaliser_and_known_offset(rng):
    k = _kpts(rng, w=100.0, h=64.0)
    n = normalizer("bbox", k)
    np.testing.assert_allclose(n, 80.0)  # sqrt(100 * 64)
    pred = k + np.array([3.0, 4.0, 0.0])  # every point off by 5 px
    np.testing.assert_allclose(nme(pred, k, n, dims=2), 100 * 5 / 80.0)
    np.testing.assert_allclose(nme(pred, k, n, dims=3), 100 * 5 / 80.0)


def test_scale_about_centre_gives_exact_nme():
    # points on a circle of radius 10 about c; scaling by 1.2 about c moves each by 2 px
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    gt = np.stack([10 * np.cos(t) + 50, 10 * np.sin(t) + 60, np.zeros(68)], -1)[None]
    pred = (gt - [50, 60, 0]) * 1.2 + [50, 60, 0]
    np.testing.assert_allclose(nme(pred, gt, np.array([40.0]), 2), [100 * 2 / 40.0])


def test_z_offset_removed_by_alignment(rng):
    k = _kpts(rng)
    pred = k + np.array([0.0, 0.0, 123.0])  # only a depth offset: 3D error vanishes after alignment
    n = normalizer("bbox", k)
    for mode in ("min", "mean"):
        _, s3 = alignment_nme(pred, k, n, mode)
        np.testing.assert_allclose(s3, 0.0, atol=1e-9)
    _, raw = alignment_nme(pred, k, n, "none")
    np.testing.assert_allclose(raw, 100 * 123.0 / n)


def test_align_z_modes_and_mask():
    p = np.array([[[0, 0, 5.0], [0, 0, 7.0], [0, 0, 100.0]]])
    m = np.array([[True, True, False]])
    assert align_z(p, "min", m)[0, :, 2].tolist() == [0.0, 2.0, 95.0]
    assert align_z(p, "mean", m)[0, :, 2].tolist() == [-1.0, 1.0, 94.0]
    with pytest.raises(InputError):
        align_z(p, "median")


def test_interocular_and_diagonal():
    k = np.zeros((1, 68, 3))
    k[0, 36] = [10, 20, 0]
    k[0, 45] = [40, 20, 40]
    np.testing.assert_allclose(normalizer("interocular", k), [50.0])
    dense = np.array([[[0, 0, 0], [30, 40, 9], [1000, 1000, 0]]], float)
    mask = np.array([[True, True, False]])
    np.testing.assert_allclose(normalizer("diagonal", k, dense, mask), [50.0])
    with pytest.raises(InputError):
        normalizer("eyes", k)


def test_masked_points_and_unscorable_images_are_nan_not_zero():
    gt = np.zeros((2, 3, 3))
    pred = gt.copy()
    pred[0, 0, 0] = 10.0  # masked out below
    pred[0, 1, 0] = 4.0
    mask = np.array([[False, True, True], [False, False, False]])
    out = nme(pred, gt, np.array([2.0, 2.0]), 2, mask)
    np.testing.assert_allclose(out[0], 100 * 2 / 2.0)  # (4 + 0) / 2 points / 2
    assert np.isnan(out[1])
    assert np.isnan(nme(gt[:1] + np.nan, gt[:1], np.array([1.0]))[0])
    assert np.isnan(nme(gt[:1], gt[:1], np.array([0.0]))[0])


def test_crop_to_image_batch_matches_geometry(rng):
    t = np.stack([crop_transform(rng.uniform(100, 300, 2), rng.uniform(100, 300)) for _ in range(4)])
    p = rng.uniform(0, 255, (4, 50, 3))
    got = crop_to_image_batch(p, t)
    for i in range(4):
        np.testing.assert_allclose(got[i], crop_to_image(p[i], t[i]), rtol=1e-5, atol=1e-3)


def test_reconstruction_rigid_motion_is_free(rng):
    u = np.linspace(-1, 1, 40)
    x, y = np.meshgrid(u, u)
    z = 0.5 * np.exp(-((x - 0.2) ** 2 + y**2) / 0.1) - 0.3 * x**2 + 0.1 * x * y
    gt = np.stack([x.ravel(), y.ravel(), z.ravel()], 1) * 60
    c, s = np.cos(0.2), np.sin(0.2)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    pred = gt @ rot.T + [5, -3, 12]
    r2, r3 = reconstruction_nme(pred, gt, 50.0, backend="scipy")
    assert r3 < 1e-3 and r2 < 1e-3
    # 1 px Gaussian noise cannot be aligned away: the error stays near the noise level (/ 50 px)
    noisy = gt + rng.normal(0, 1.0, gt.shape)
    _, r3n = reconstruction_nme(noisy, gt, 50.0, backend="scipy")
    assert 0.5 < r3n < 3.0
