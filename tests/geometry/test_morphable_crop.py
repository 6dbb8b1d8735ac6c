"""Morphable models (face3d BFM.mat round trip and validation) and crop transforms."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from prnet_keras.errors import InputError
from prnet_keras.geometry import crop, load_face3d_bfm, load_morphable_model, save_face3d_bfm


# ---- morphable ---------------------------------------------------------------------------------
def test_vertices_colors_and_batch(tiny_model):
    m = tiny_model
    sp, ep = np.array([1.0, -2.0, 0.5]), np.array([0.3, 0.0])
    v = m.vertices(sp, ep)
    expect = (m.shape_mu + m.exp_mu + m.shape_pc @ sp + m.exp_pc @ ep).reshape(-1, 3)
    np.testing.assert_allclose(v, expect, atol=1e-5)
    assert v.shape == (m.n_vertices, 3) and v.dtype == np.float32
    batch = m.vertices_batch(np.stack([sp, np.zeros(3)]), np.stack([ep, np.zeros(2)]))
    np.testing.assert_allclose(batch[0], v, atol=1e-5)
    np.testing.assert_allclose(batch[1], m.vertices(), atol=1e-6)
    c = m.colors(np.array([0.0, 1.0, 0.0]))
    assert c.shape == (m.n_vertices, 3) and c.min() >= 0 and c.max() <= 1
    np.testing.assert_allclose(m.colors(), 128 / 255)
    with pytest.raises(InputError, match="Shape_Para"):
        m.vertices(np.zeros(4))
    with pytest.raises(InputError, match="NaN"):
        m.vertices(None, np.array([np.nan, 0]))
    labels = m.region_labels()
    assert set(np.unique(labels)) == {0, 1, 2, 3}


def test_face3d_bfm_round_trip(tiny_model, tmp_path):
    path = tmp_path / "BFM.mat"
    save_face3d_bfm(tiny_model, path)
    assert (tmp_path / "BFM_UV.mat").exists()
    back = load_face3d_bfm(path)
    assert back.name == "tiny"
    for key in ("shape_mu", "shape_pc", "exp_pc", "tex_mu", "triangles", "kpt_ind", "uv_coords"):
        np.testing.assert_allclose(getattr(back, key), getattr(tiny_model, key), rtol=1e-6, err_msg=key)
    np.testing.assert_array_equal(back.region_labels(), tiny_model.region_labels())
    assert load_morphable_model(path).n_vertices == tiny_model.n_vertices
    # 1-based on disk, as face3d writes it.
    raw = scipy.io.loadmat(path)["model"][0, 0]
    assert raw["tri"].shape == (3, len(tiny_model.triangles)) and raw["tri"].min() == 1
    assert raw["kpt_ind"].min() == tiny_model.kpt_ind.min() + 1


def _rewrite(path, out, drop=None, replace=None):
    s = scipy.io.loadmat(path)["model"][0, 0]
    d = {k: s[k] for k in s.dtype.names if k != drop}
    d.update(replace or {})
    scipy.io.savemat(out, {"model": d})
    return out


@pytest.mark.parametrize("key", ["shapeMU", "shapePC", "shapeEV", "expPC", "texMU", "tri", "kpt_ind"])
def test_face3d_bfm_missing_key_is_named(tiny_model, tmp_path, key):
    save_face3d_bfm(tiny_model, tmp_path / "BFM.mat")
    bad = _rewrite(tmp_path / "BFM.mat", tmp_path / "bad.mat", drop=key)
    with pytest.raises(ValueError, match=f"bad.mat.*missing key '{key}' \\(expected \\(") as exc:
        load_face3d_bfm(bad)
    assert isinstance(exc.value, InputError)


@pytest.mark.parametrize(
    "key, value, expect",
    [
        ("shapeEV", np.ones((5, 1)), r"shapeEV has shape \(5,\), expected \(3,\)"),
        ("expPC", np.ones((10, 2)), r"expPC has shape \(10, 2\), expected \(504, k\)"),
        ("kpt_ind", np.arange(1, 68)[None], r"kpt_ind has shape \(67,\), expected \(68,\)"),
        ("tri", np.ones((2, 5)), r"tri has shape \(2, 5\), expected \(3, T\)"),
        ("texMU", np.ones((30, 1)), r"texMU has shape \(30,\), expected \(504,\)"),
        ("uv_coords", np.ones((10, 2)), r"uv_coords has shape \(10, 2\), expected \(168, 2\)"),
    ],
)
def test_face3d_bfm_wrong_shape_is_named(tiny_model, tmp_path, key, value, expect):
    save_face3d_bfm(tiny_model, tmp_path / "BFM.mat")
    bad = _rewrite(tmp_path / "BFM.mat", tmp_path / "bad.mat", replace={key: value})
    with pytest.raises(InputError, match=expect):
        load_face3d_bfm(bad)


def test_face3d_bfm_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_face3d_bfm(tmp_path / "none.mat")
    (tmp_path / "junk.mat").write_bytes(b"\x00" * 50)
    with pytest.raises(InputError, match="junk.mat"):
        load_face3d_bfm(tmp_path / "junk.mat")
    scipy.io.savemat(tmp_path / "other.mat", {"x": np.ones(3)})
    with pytest.raises(InputError, match="missing key 'model'"):
        load_face3d_bfm(tmp_path / "other.mat")
    with pytest.raises(InputError, match="--bfm"):
        load_morphable_model(tmp_path / "model.obj")


# ---- crops -------------------------------------------------------------------------------------
def test_keypoint_box_and_training_crop():
    k = np.array([[10.0, 20.0], [50.0, 20.0], [10.0, 100.0], [30.0, 60.0]])
    centre, old = crop.keypoint_box(k)
    np.testing.assert_allclose(centre, [30, 60])
    assert old == pytest.approx((40 + 80) / 2)
    c, size = crop.training_crop(k)
    np.testing.assert_allclose(c, [30, 60])
    assert size == pytest.approx(1.5 * 60)
    draws = [crop.training_crop(k, np.random.default_rng(s)) for s in range(200)]
    cs = np.array([d[0] for d in draws])
    sz = np.array([d[1] for d in draws])
    assert np.all(np.abs(cs - [30, 60]) <= 6.0) and np.abs(cs - [30, 60]).max() > 5.0
    assert sz.min() >= 90 * 0.9 and sz.max() <= 90 * 1.1
    again = crop.training_crop(k, np.random.default_rng(7))
    np.testing.assert_array_equal(again[0], draws[7][0])


def test_detector_crop():
    centre, size = crop.detector_crop([100, 50, 200, 170])
    np.testing.assert_allclose(centre, [150, 110])
    assert size == pytest.approx(1.6 * 110)
    centre, size = crop.detector_crop([100, 50, 200, 170], scale=1.58, center_shift=0.14)
    np.testing.assert_allclose(centre, [150, 110 + 0.14 * 110])


def test_crop_transform_maps_square_onto_crop_and_inverts():
    t = crop.crop_transform([100.0, 80.0], 51.0, 256)
    corners = np.array([[74.5, 54.5], [125.5, 105.5]])
    np.testing.assert_allclose(crop.apply_transform(corners, t), [[0, 0], [255, 255]], atol=1e-4)
    assert crop.transform_scale(t) == pytest.approx(5.0)
    pts = np.array([[90.0, 70.0, 3.0], [110.0, 95.0, -2.0]])
    c = crop.apply_transform(pts, t)
    np.testing.assert_allclose(c[:, 2], pts[:, 2] * 5.0)
    np.testing.assert_allclose(crop.crop_to_image(c, t), pts, atol=1e-4)
    v = crop.vertices_to_crop(pts, t)
    assert v[:, 2].min() == 0.0 and v[0, 2] - v[1, 2] == pytest.approx(25.0)


def test_crop_input_errors():
    with pytest.raises(InputError, match="keypoints"):
        crop.keypoint_box(np.array([[np.nan, 1.0], [2.0, 3.0]]))
    with pytest.raises(InputError, match="keypoints"):
        crop.training_crop(np.zeros((1, 2)))
    with pytest.raises(InputError, match="face box"):
        crop.detector_crop([10, 10, 5, 20])
    with pytest.raises(InputError, match="crop size"):
        crop.crop_transform([0.0, 0.0], 0.0)
