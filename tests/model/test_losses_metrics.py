"""Losses (values against numpy, mask handling, serialisation) and the landmark NME metric."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from PIL import Image

from prnet_keras.errors import InputError
from prnet_keras.model import LOSSES, LandmarkNME, build_model, get_loss
from prnet_keras.model.losses import PositionMapLoss, load_weight_mask


@pytest.fixture(scope="module")
def maps():
    rng = np.random.default_rng(0)
    y_true = rng.random((3, 256, 256, 3), np.float32)
    y_pred = np.clip(y_true + rng.normal(0, 0.05, y_true.shape), 0, 1).astype(np.float32)
    return y_true, y_pred


def reference(name, y_true, y_pred, w):
    d = y_pred.astype(np.float64) - y_true
    if name == "mse":
        return np.mean(d ** 2)
    err = np.abs(d) if name == "weighted_l1" else d ** 2
    per_sample = (err * w[None, :, :, None]).sum(axis=(1, 2, 3)) / (3 * np.count_nonzero(w))
    return np.mean(np.sqrt(per_sample) if name == "weighted_rmse" else per_sample)


@pytest.mark.parametrize("name", LOSSES)
def test_loss_values_match_numpy(name, maps, tiny_layout):
    y_true, y_pred = maps
    loss = get_loss(name, weight_mask=tiny_layout.weight_mask)
    got = float(loss(y_true, y_pred))
    np.testing.assert_allclose(got, reference(name, y_true, y_pred, tiny_layout.weight_mask), rtol=1e-5)


def test_weighted_loss_ignores_zero_weight_pixels_and_averages_over_face(maps, tiny_layout):
    y_true, y_pred = maps
    w = tiny_layout.weight_mask
    loss = get_loss("weighted_mse", weight_mask=w)
    # anything outside the face (weight 0) does not change the loss
    garbage = y_pred.copy()
    garbage[:, w == 0] = 1e3
    assert float(loss(y_true, garbage)) == pytest.approx(float(loss(y_true, y_pred)), rel=1e-6)
    # a constant error e on every element gives mean(w over the face) * e^2, whatever the face size
    e = 0.1
    face = w > 0
    expected = e ** 2 * w[face].mean()
    assert float(loss(y_true, y_true + e)) == pytest.approx(expected, rel=1e-4)
    # landmark pixels weigh 16/3 times a plain face pixel
    one = y_true[:1].copy()
    r, c = tiny_layout.uv_kpt_ind[1, 0], tiny_layout.uv_kpt_ind[0, 0]
    plain = np.argwhere(w == 3 / 16)[0]
    bump_k, bump_f = one.copy(), one.copy()
    bump_k[0, r, c, 0] += 0.5
    bump_f[0, plain[0], plain[1], 0] += 0.5
    assert float(loss(one, bump_k)) / float(loss(one, bump_f)) == pytest.approx(16 / 3, rel=1e-4)


def test_unweighted_defaults_and_mse_ignores_mask(maps, tiny_layout):
    y_true, y_pred = maps
    plain = float(get_loss("mse")(y_true, y_pred))
    assert float(get_loss("mse", tiny_layout.weight_mask)(y_true, y_pred)) == pytest.approx(plain, rel=1e-6)
    assert float(get_loss("weighted_mse")(y_true, y_pred)) == pytest.approx(plain, rel=1e-5)  # None = uniform


def test_rmse_gradient_is_finite_at_zero_error(tiny_layout):
    y = np.full((1, 256, 256, 3), 0.5, np.float32)
    identity = keras.initializers.Constant(np.eye(3, dtype=np.float32)[None, None])
    model = keras.Sequential([keras.Input((256, 256, 3)),
                              keras.layers.Conv2D(3, 1, use_bias=False, kernel_initializer=identity)])
    model.compile("sgd", get_loss("weighted_rmse", tiny_layout))  # a UVLayout is accepted as the mask
    assert float(model.train_on_batch(y, y)) == pytest.approx(0.0, abs=1e-5)
    assert np.all(np.isfinite(model.weights[0].numpy()))


def test_weight_mask_png(tmp_path, tiny_layout, maps):
    png = tmp_path / "mask.png"
    Image.fromarray(np.rint(tiny_layout.weight_mask * 255).astype(np.uint8)).save(png)
    mask = load_weight_mask(png)
    np.testing.assert_allclose(mask, tiny_layout.weight_mask, atol=0.5 / 255)
    y_true, y_pred = maps
    from_png = float(get_loss("weighted_l1", str(png))(y_true, y_pred))
    assert from_png == pytest.approx(reference("weighted_l1", y_true, y_pred, mask), rel=1e-5)


@pytest.mark.parametrize("make,match", [
    (lambda p: p / "missing.png", "missing.png: cannot read weight-mask image"),
    (lambda p: (p / "small.png", Image.new("L", (128, 128), 255).save(p / "small.png"))[0],
     "small.png: expected a 256x256"),
    (lambda p: (p / "zero.png", Image.new("L", (256, 256), 0).save(p / "zero.png"))[0], "all weights are zero"),
    (lambda p: (p / "text.png", (p / "text.png").write_text("not an image"))[0], "cannot read weight-mask image"),
])
def test_weight_mask_png_errors(tmp_path, make, match):
    with pytest.raises(InputError, match=match):
        get_loss("weighted_mse", make(tmp_path))


def test_bad_loss_name_and_array_mask():
    with pytest.raises(InputError, match="--lossfunct: unknown loss 'huber'"):
        get_loss("huber")
    with pytest.raises(InputError, match=r"expected a 256x256.*\(256, 3\)"):
        get_loss("weighted_mse", np.ones((256, 3)))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        get_loss("weighted_mse", np.full((256, 256), 2.0))


def test_loss_serialises_with_its_mask(tiny_layout, maps):
    y_true, y_pred = maps
    loss = get_loss("weighted_rmse", tiny_layout.weight_mask)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(again, PositionMapLoss) and again.kind == "rmse" and again.name == "weighted_rmse"
    np.testing.assert_array_equal(again.weight_mask, tiny_layout.weight_mask)
    assert float(again(y_true, y_pred)) == pytest.approx(float(loss(y_true, y_pred)), rel=1e-6)


# ---- LandmarkNME -------------------------------------------------------------------------------
def nme_reference(kpt_ind, y_true, y_pred):
    gt = y_true[:, kpt_ind[1], kpt_ind[0], :2].astype(np.float64)
    pr = y_pred[:, kpt_ind[1], kpt_ind[0], :2]
    err = np.linalg.norm(pr - gt, axis=-1).mean(-1)
    wh = gt.max(1) - gt.min(1)
    return 100 * err / np.sqrt(wh[:, 0] * wh[:, 1])


def test_landmark_nme_matches_numpy_and_accumulates(tiny_layout, maps):
    y_true, y_pred = maps
    kpt = tiny_layout.uv_kpt_ind
    metric = LandmarkNME(kpt)
    metric.update_state(y_true[:2], y_pred[:2])
    metric.update_state(y_true[2:], y_pred[2:])
    want = nme_reference(kpt, y_true, y_pred)
    assert float(metric.result()) == pytest.approx(want.mean(), rel=1e-5)
    metric.reset_state()
    assert float(metric.result()) == 0.0
    metric.update_state(y_true, y_true)
    assert float(metric.result()) == pytest.approx(0.0, abs=1e-6)


def test_landmark_nme_scale_cancels_and_weights(tiny_layout, maps):
    y_true, y_pred = maps
    kpt = tiny_layout.uv_kpt_ind
    a, b = LandmarkNME(kpt), LandmarkNME(kpt)
    a.update_state(y_true, y_pred)
    b.update_state(y_true * 281.6, y_pred * 281.6)
    assert float(a.result()) == pytest.approx(float(b.result()), rel=1e-5)
    c = LandmarkNME(kpt)
    c.update_state(y_true, y_pred, sample_weight=np.array([1.0, 0.0, 0.0], np.float32))
    assert float(c.result()) == pytest.approx(nme_reference(kpt, y_true, y_pred)[0], rel=1e-5)


def test_landmark_nme_pixel_shift_is_readable():
    """A 1-pixel error on a 100x100-pixel GT box reads as 1 %."""
    kpt = np.stack([np.arange(68) * 3, np.arange(68) * 3])
    y_true = np.zeros((1, 256, 256, 3), np.float32)
    pts = np.linspace(0, 100, 68)
    y_true[0, kpt[1], kpt[0], 0] = pts
    y_true[0, kpt[1], kpt[0], 1] = pts[::-1]
    y_pred = y_true.copy()
    y_pred[..., 0] += 1.0
    m = LandmarkNME(kpt)
    m.update_state(y_true, y_pred)
    assert float(m.result()) == pytest.approx(1.0, rel=1e-5)


def test_landmark_nme_validation_and_config(tiny_layout):
    with pytest.raises(InputError, match=r"\(2, 68\)"):
        LandmarkNME(np.zeros((2, 5), int))
    m = LandmarkNME(tiny_layout.uv_kpt_ind, name="val_kpt_nme")
    again = LandmarkNME.from_config(m.get_config())
    np.testing.assert_array_equal(again.uv_kpt_ind, tiny_layout.uv_kpt_ind)
    assert again.name == "val_kpt_nme"


def test_compiled_model_logs_nme_and_reloads_from_keras_file(tmp_path, tiny_layout):
    model = build_model("light", width=0.25)
    model.compile("adam", get_loss("weighted_mse", tiny_layout.weight_mask),
                  metrics=[LandmarkNME(tiny_layout.uv_kpt_ind)])
    # Built now: the first step is then traced once, not twice (about half its start-up).
    model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(3)
    x, y = rng.random((2, 256, 256, 3), np.float32), rng.random((2, 256, 256, 3), np.float32)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert set(logs) == {"loss", "nme"} and np.isfinite(logs["nme"])
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_array_equal(again.loss.weight_mask, tiny_layout.weight_mask)
    want = model.evaluate(x, y, verbose=0, return_dict=True)
    assert again.evaluate(x, y, verbose=0, return_dict=True) == pytest.approx(want, rel=1e-5)
