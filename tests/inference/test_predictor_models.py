"""The Predictor drives real Keras models (sigmoid output × LABEL_SCALE) and Network-like objects."""

from __future__ import annotations

import numpy as np
import pytest

from prnet_keras import LABEL_SCALE
from prnet_keras.errors import InputError
from prnet_keras.inference import Predictor


class FakeNetwork:
    """Duck-typed model.io.Network: .predict returns crop pixels, .layout is the UV layout."""

    def __init__(self, layout, value):
        self.layout, self.value, self.batches = layout, value, []

    def predict(self, x):
        self.batches.append(x.shape)
        return np.full(x.shape, self.value, np.float32)


def test_network_like_object_supplies_layout(official_layout):
    net = FakeNetwork(official_layout, 100.0)
    pred = Predictor(net, batch_size=2)
    assert pred.layout is official_layout
    images = [np.zeros((60, 80, 3), np.uint8)] * 3
    faces = pred.predict_batch(images, boxes=[[[10, 10, 50, 50]], [[5, 5, 40, 40], [30, 10, 70, 50]], None],
                               detector=lambda im: [])
    assert [len(f) for f in faces] == [1, 2, 0]
    assert net.batches == [(2, 256, 256, 3), (1, 256, 256, 3)]  # 3 crops in chunks of batch_size
    f = faces[0][0]
    # crop pixel 100 maps back through T^-1: centre 30, size 1.6*40 = 64, k = 255/64
    k = 255 / 64
    np.testing.assert_allclose(f.vertices[:, :2], 30 - 32 + 100 / k, atol=1e-4)
    np.testing.assert_allclose(f.vertices[:, 2], 100 / k, atol=1e-4)


def test_keras_model_output_is_scaled(official_layout):
    from prnet_keras.model import build_model

    model = build_model("light", width=0.25)
    pred = Predictor(model, official_layout)
    img = np.random.default_rng(0).integers(0, 256, (120, 100, 3), dtype=np.uint8)
    (face,) = pred.predict(img, boxes=[20, 20, 80, 90])
    want = np.asarray(model(face_crop(pred, img, face)[None] / np.float32(255), training=False))[0] * LABEL_SCALE
    np.testing.assert_allclose(face.crop_map, want, rtol=1e-4, atol=1e-3)
    assert 0 <= face.crop_map.min() and face.crop_map.max() <= LABEL_SCALE
    assert np.isfinite(face.vertices).all()


def face_crop(pred, img, face):
    crop, t = pred.crop(img, face.detection)
    np.testing.assert_allclose(t, face.transform)
    return crop.astype(np.float32)


def test_bad_network_and_layout(official_layout):
    with pytest.raises(InputError, match="UV layout"):
        Predictor(lambda x: x)
    with pytest.raises(InputError, match="network must be"):
        Predictor(42, official_layout)
    pred = Predictor(lambda x: x[:, :10], official_layout)
    with pytest.raises(InputError, match="network output"):
        pred.predict(np.zeros((50, 50, 3), np.uint8), boxes=[0, 0, 40, 40])
    with pytest.raises(InputError, match="boxes: expected one entry per image"):
        pred.predict_batch([np.zeros((5, 5, 3), np.uint8)], boxes=[None, None])
