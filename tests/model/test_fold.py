"""Batch norm folded into the preceding convolution (model.fold): same predictions, fewer layers."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from prnet_keras.model import build_model
from prnet_keras.model.fold import fold_batch_norm


def _random_bn_statistics(model: keras.Model, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.normal(0, 0.2, n),
                               rng.uniform(0.3, 2.0, n)])


def _bn_count(model: keras.Model) -> int:
    return sum(isinstance(layer, layers.BatchNormalization) for layer in model.layers)


@pytest.mark.parametrize("name,options,kept_bn",
                         [("resfcn256", {"base_filters": 4}, 10), ("light", {"width": 0.25}, 0)])
def test_folded_network_predicts_the_same(name, options, kept_bn):
    model = build_model(name, resolution=64, **options)
    _random_bn_statistics(model)
    folded = fold_batch_norm(model)
    # resfcn256 keeps only the BN after each residual Add (10 blocks); the light model has none left
    assert _bn_count(folded) == kept_bn and _bn_count(model) > kept_bn
    assert len(folded.layers) == len(model.layers) - (_bn_count(model) - kept_bn)
    x = np.random.default_rng(1).random((2, 64, 64, 3), np.float32)
    ref = keras.ops.convert_to_numpy(model(x, training=False))
    out = keras.ops.convert_to_numpy(folded(x, training=False))
    np.testing.assert_allclose(out, ref, atol=2e-5)
    assert folded.input_shape == model.input_shape and folded.output_shape == model.output_shape
    # the original model is untouched
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x, training=False)), ref)


def test_only_sole_linear_conv_inputs_are_folded():
    inp = keras.Input((8, 8, 3))
    shared = layers.Conv2D(4, 3, padding="same", use_bias=False, name="shared")(inp)
    a = layers.BatchNormalization(name="bn_shared")(shared)          # conv also feeds the Add: kept
    act = layers.Conv2D(4, 3, padding="same", activation="relu", name="act")(inp)
    b = layers.BatchNormalization(name="bn_act")(act)                 # conv has an activation: kept
    t = layers.Conv2DTranspose(4, 4, strides=2, padding="same", name="deconv")(inp)
    c = layers.BatchNormalization(name="bn_deconv")(t)                # folded (kernel axis 2)
    d = layers.BatchNormalization(name="bn_dw")(layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2,
                                                                        name="dw")(inp))  # folded
    out = layers.Add()([a, shared, b])
    model = keras.Model(inp, [out, c, d])
    _random_bn_statistics(model, 3)
    folded = fold_batch_norm(model)
    names = {layer.name for layer in folded.layers}
    assert {"bn_shared", "bn_act"} <= names and not {"bn_deconv", "bn_dw"} & names
    x = np.random.default_rng(2).random((3, 8, 8, 3), np.float32)
    for ref, got in zip(model(x, training=False), folded(x, training=False)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(ref), atol=1e-5)


def test_nothing_to_fold_returns_the_model():
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, layers.Conv2D(2, 3)(inp))
    assert fold_batch_norm(model) is model
