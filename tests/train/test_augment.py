"""Augmentation: image/label consistency, switches, ranges, determinism."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from prnet_keras import LABEL_SCALE
from prnet_keras.errors import InputError
from prnet_keras.train.augment import (
    AugmentConfig, AugmentParams, affine_matrices, apply_params, augment_batch, sample_params, warp_position_maps,
)

ONLY_GEOMETRY = dict(color=False, occlusion=False)


def test_defaults_match_the_paper():
    cfg = AugmentConfig.from_dict()
    assert cfg.rotation_range_deg == (-45.0, 45.0)
    assert cfg.scale_range == (0.9, 1.2)
    assert cfg.color_range == (0.6, 1.4)
    assert cfg.translation_frac == pytest.approx(0.1)
    assert cfg.occlusion_p == pytest.approx(0.5)
    assert cfg.occlusion_area == (0.02, 0.2) and cfg.occlusion_aspect == (0.3, 3.3)


@pytest.mark.parametrize("bad", [{"rotaton": True}, {"scale_range": [1.2, 0.9]}, {"occlusion_p": 2.0},
                                 {"color_range": "wide"}, {"occlusion_area": [0.1, 1.5]}])
def test_bad_options_raise_input_error(bad):
    with pytest.raises(InputError, match="augment"):
        AugmentConfig.from_dict(bad)


def test_affine_matches_opencv_rotation_matrix():
    m = affine_matrices(np.array([30.0]), np.array([1.1]), np.array([[5.0, -7.0]]), centre=127.5)[0]
    ref = cv2.getRotationMatrix2D((127.5, 127.5), 30.0, 1.1)
    ref[:, 2] += [5.0, -7.0]
    np.testing.assert_allclose(m, ref, atol=1e-9)


def test_label_xy_warp_equals_cv2_transform_of_points(toy_data):
    _, maps = toy_data
    rng = np.random.default_rng(0)
    params = sample_params(AugmentConfig.from_dict(ONLY_GEOMETRY), len(maps), rng)
    out = warp_position_maps(maps, params.matrices, params.scales)
    for i in range(len(maps)):
        covered = np.any(maps[i] != 0, -1)
        pts = maps[i][covered][:, None, :2].astype(np.float64)
        ref = cv2.transform(pts, params.matrices[i])[:, 0]
        np.testing.assert_allclose(out[i][covered][:, :2], ref, atol=1e-3)
        np.testing.assert_allclose(out[i][covered][:, 2], maps[i][covered][:, 2] * params.scales[i], rtol=1e-5)
        assert np.all(out[i][~covered] == 0), "uncovered UV pixels must stay 0"


def test_augmented_landmarks_land_on_the_same_image_features(toy_data, layout):
    images, maps = toy_data
    cfg = AugmentConfig.from_dict(ONLY_GEOMETRY)
    x, y = augment_batch(images, maps, cfg, np.random.default_rng(7))
    kr, kc = layout.uv_kpt_ind[1], layout.uv_kpt_ind[0]
    checked = 0
    for i in range(len(x)):
        kx, ky = y[i, kr, kc, 0], y[i, kr, kc, 1]
        inside = (kx >= 2) & (kx < 253) & (ky >= 2) & (ky < 253)
        vals = x[i, np.rint(ky[inside]).astype(int), np.rint(kx[inside]).astype(int)]
        # The landmark dots are pure white; bilinear resampling keeps their centres bright.
        assert np.mean(vals.min(-1) > 0.8) > 0.95
        checked += inside.sum()
        # And a random non-landmark face point keeps its UV-encoded colour (R = u, G = v).
        face = np.argwhere(layout.face_mask)[::997]
        fx, fy = y[i, face[:, 0], face[:, 1], 0], y[i, face[:, 0], face[:, 1], 1]
        ok = (fx >= 3) & (fx < 252) & (fy >= 3) & (fy < 252)
        col = x[i, np.rint(fy[ok]).astype(int), np.rint(fx[ok]).astype(int)] * 255
        err_u = np.abs(col[:, 0] - face[ok, 1])
        assert np.median(err_u) < 4
    assert checked > 300


@pytest.mark.parametrize("name", ["rotation", "translation", "scale", "color", "occlusion"])
def test_each_augmentation_is_switchable(toy_data, name):
    images, maps = toy_data
    off = {k: False for k in ("rotation", "translation", "scale", "color", "occlusion")}
    x0, y0 = augment_batch(images, maps, AugmentConfig.from_dict(off), np.random.default_rng(1))
    np.testing.assert_allclose(x0, images / 255.0, atol=1e-6)
    np.testing.assert_array_equal(y0, maps)
    only = dict(off, **{name: True}, occlusion_p=1.0)
    x1, y1 = augment_batch(images, maps, AugmentConfig.from_dict(only), np.random.default_rng(1))
    assert not np.allclose(x1, x0), f"{name} on should change the images"
    if name in ("color", "occlusion"):
        np.testing.assert_array_equal(y1, maps)  # photometric: labels untouched
    else:
        assert not np.allclose(y1, maps)
    if name == "translation":
        d = (y1 - maps)[..., :2][np.any(maps != 0, -1)]
        assert np.abs(d).max() <= 0.1 * 256 + 1e-3
        np.testing.assert_allclose(y1[..., 2], maps[..., 2])  # no scale: z unchanged


def test_sampled_ranges(toy_data):
    cfg = AugmentConfig.from_dict({"occlusion_p": 1.0})
    p = sample_params(cfg, 4000, np.random.default_rng(0))
    angles = np.rad2deg(np.arctan2(p.matrices[:, 0, 1], p.matrices[:, 0, 0]))
    assert angles.min() >= -45 and angles.max() <= 45 and angles.max() - angles.min() > 85
    assert p.scales.min() >= 0.9 and p.scales.max() <= 1.2
    assert p.colors.min() >= 0.6 and p.colors.max() <= 1.4
    w, h = p.occluders[:, 2] - p.occluders[:, 0], p.occluders[:, 3] - p.occluders[:, 1]
    area = w * h / 256**2
    assert area.min() > 0.015 and area.max() < 0.23
    assert (w / h).min() > 0.25 and (w / h).max() < 3.6
    assert p.occluders[:, 2].max() <= 256 and p.occluders[:, 3].max() <= 256 and p.occluders.min() >= 0
    assert 0.4 < p.occluder_noise.mean() < 0.6
    half = sample_params(AugmentConfig.from_dict({"occlusion_p": 0.5}), 4000, np.random.default_rng(0))
    on = (half.occluders[:, 2] > half.occluders[:, 0]).mean()
    assert 0.45 < on < 0.55


def test_occluder_paints_its_box_only(toy_data):
    images, maps = toy_data
    p = AugmentParams.identity(2)
    p.occluders[:] = [[10, 20, 60, 40], [0, 0, 0, 0]]
    p.occluder_colors[:] = [0.25, 0.5, 0.75]
    x, _ = apply_params(images[:2], maps[:2], p)
    np.testing.assert_allclose(x[0, 20:40, 10:60], np.broadcast_to([0.25, 0.5, 0.75], (20, 50, 3)))
    np.testing.assert_allclose(x[0, 40:], images[0, 40:] / 255.0, atol=1e-6)
    np.testing.assert_allclose(x[1], images[1] / 255.0, atol=1e-6)


def test_same_seed_same_batch_different_seed_different(toy_data):
    images, maps = toy_data
    cfg = AugmentConfig.from_dict()
    a = augment_batch(images, maps, cfg, np.random.default_rng(42))
    b = augment_batch(images, maps, cfg, np.random.default_rng(42))
    c = augment_batch(images, maps, cfg, np.random.default_rng(43))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.allclose(a[0], c[0])


def test_non_uint8_images_refused(toy_data):
    images, maps = toy_data
    with pytest.raises(InputError, match="uint8"):
        augment_batch(images.astype(np.float32), maps, AugmentConfig.from_dict(), np.random.default_rng(0))


def test_device_augmentation_matches_the_cpu_for_the_same_parameters(toy_data):
    """keras.ops augmentation (inside the train step) vs OpenCV/numba on the CPU, same draws."""
    import keras

    from prnet_keras.train.device_augment import augment_images, augment_labels

    images, maps = toy_data[0][:8], toy_data[1][:8]
    p = sample_params(AugmentConfig.from_dict({"occlusion_p": 1.0}), 8, np.random.default_rng(5))
    p.occluder_noise[:] = [True, True, True, True, False, False, False, False]
    p.noise_grains[:4] = [1, 2, 3, 13]  # nearest and bilinear texels
    x, y = apply_params(images, maps.copy(), p, 1 / LABEL_SCALE)
    inputs = {"image": images, "position_map": maps.astype(np.float16), **p.to_arrays()}
    xd = keras.ops.convert_to_numpy(augment_images(inputs))
    yd = keras.ops.convert_to_numpy(augment_labels(inputs))
    # Labels: the same affine; float16 maps round to 1/8 px at most here.
    np.testing.assert_allclose(yd * LABEL_SCALE, warp_position_maps(maps.astype(np.float16), p.matrices, p.scales),
                               atol=1e-3)
    np.testing.assert_allclose(y * LABEL_SCALE, yd * LABEL_SCALE, atol=0.13)
    # Images: bilinear in float vs OpenCV's 1/32-px fixed point and uint8 rounding.
    err = np.abs(x - xd) * 255
    assert err.mean() < 0.5 and np.percentile(err, 99.9) < 4 and err.max() < 12
    for i, (x0, y0, x1, y1) in enumerate(p.occluders):  # occluders (solid and noise) identical
        assert x1 > x0 and y1 > y0
        np.testing.assert_allclose(xd[i, y0:y1, x0:x1], x[i, y0:y1, x0:x1], atol=1e-5)
    # Float16 maps as their two byte planes (how gzip files store them) give the same labels.
    planes = maps.astype(np.float16).view(np.uint8).reshape(8, -1, 2).transpose(0, 2, 1).reshape(8, 2, 256, 256, 3)
    yp = keras.ops.convert_to_numpy(augment_labels({**inputs, "position_map": planes}))
    np.testing.assert_array_equal(yp, yd)
    # A switched-off batch is the plain crop.
    ident = AugmentParams.identity(2).to_arrays()
    plain = keras.ops.convert_to_numpy(augment_images({"image": images[:2], **ident}))
    np.testing.assert_allclose(plain, images[:2] / 255.0, atol=1e-6)


def test_noise_texture_is_the_hashed_grid_resized():
    from prnet_keras.train.augment import noise_coordinates, noise_texture, noise_value

    for grain in (1, 2, 3, 7, 16):
        tex = noise_texture(777, grain, 37, 53)
        iy, wy = noise_coordinates(np.arange(37)[:, None, None], grain)
        ix, wx = noise_coordinates(np.arange(53)[None, :, None], grain)
        c = np.arange(3)[None, None, :]
        seed = np.int32(777)
        top = noise_value(seed, iy, ix, c) * (1 - wx) + noise_value(seed, iy, ix + 1, c) * wx
        bottom = noise_value(seed, iy + 1, ix, c) * (1 - wx) + noise_value(seed, iy + 1, ix + 1, c) * wx
        np.testing.assert_allclose(tex, top * (1 - wy) + bottom * wy, atol=1e-6)
        assert tex.shape == (37, 53, 3) and 0 <= tex.min() and tex.max() <= 1
    assert 0.45 < noise_texture(1, 1, 64, 64).mean() < 0.55
    assert not np.allclose(noise_texture(1, 4, 20, 20), noise_texture(2, 4, 20, 20))


def test_byte_plane_maps_warp_exactly_like_widened_maps(toy_data):
    """Deflated float16 maps are warped from their byte planes: same float32 labels, bit for bit."""
    maps = toy_data[1][:4].astype(np.float16)
    maps[0, :3] = 0            # uncovered UV rows stay 0
    maps[1, 5, 5] = [0, -2.5, 0]  # a zero coordinate alone is not "uncovered"
    maps[2, 7, 7] = [6e-5, 1e-7, 65504]  # subnormal, smallest, largest float16
    planes = np.ascontiguousarray(np.moveaxis(maps.view(np.uint8).reshape(*maps.shape, 2), -1, 1))
    assert planes.shape == (4, 2, 256, 256, 3)
    p = sample_params(AugmentConfig(), 4, np.random.default_rng(3))
    want = warp_position_maps(maps.astype(np.float32), p.matrices, p.scales, 1 / LABEL_SCALE)
    got = warp_position_maps(planes, p.matrices, p.scales, 1 / LABEL_SCALE)
    np.testing.assert_array_equal(got, want)
    assert np.all(got[0, :3] == 0) and got[1, 5, 5, 0] != 0
