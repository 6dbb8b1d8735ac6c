"""Architecture tests: the exact official ResFCN256, the light model, tiny variants, registry."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from prnet_keras.errors import InputError
from prnet_keras.model import MODELS, build_model
from prnet_keras.model.resfcn import official_variable_map


def n_values(weights) -> int:
    return sum(int(np.prod(w.shape)) for w in weights)


@pytest.fixture(scope="module")
def resfcn():
    return build_model("resfcn256")


def test_resfcn256_parameter_counts(resfcn):
    assert n_values(resfcn.trainable_weights) == 13_353_618
    assert n_values(resfcn.weights) == 13_365_508  # + BN moving statistics, as the official checkpoint
    assert len(resfcn.weights) == 245


def test_resfcn256_no_biases_4x4_and_regularised(resfcn):
    convs = [l for l in resfcn.layers if isinstance(l, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))]
    assert len(convs) == 1 + 10 * 3 + 5 + 17  # stem, 3 per block, 5 projection shortcuts, 17 decoder
    assert all(not l.use_bias for l in convs)
    decoder = [l for l in convs if isinstance(l, keras.layers.Conv2DTranspose)]
    assert len(decoder) == 17 and all(l.kernel_size == (4, 4) for l in decoder)
    # 1x1 bottleneck ends and shortcuts, 4x4 elsewhere
    for l in convs:
        pointwise = l.name.endswith(("Conv", "Conv_2", "shortcut")) and "__" in l.name
        assert l.kernel_size == ((1, 1) if pointwise else (4, 4))
    bns = [l for l in resfcn.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert all(l.epsilon == 1e-3 for l in bns)
    # TF1 l2_regularizer(2e-4) is 1e-4 * sum(w^2): one regularisation loss per conv kernel
    assert len(resfcn.losses) == len(convs)
    k = resfcn.get_layer("Conv").kernel
    np.testing.assert_allclose(float(resfcn.losses[0]), 1e-4 * float(np.sum(np.square(k.numpy()))), rtol=1e-5)


def test_resfcn256_layer_shapes(resfcn):
    shape = lambda name: tuple(resfcn.get_layer(name).output.shape)  # noqa: E731
    assert shape("Conv__relu") == (None, 256, 256, 16)
    expected = {"resBlock": 128, "resBlock_1": 128, "resBlock_2": 64, "resBlock_3": 64, "resBlock_4": 32,
                "resBlock_5": 32, "resBlock_6": 16, "resBlock_7": 16, "resBlock_8": 8, "resBlock_9": 8}
    for i, (block, size) in enumerate(expected.items()):
        assert shape(f"{block}__relu") == (None, size, size, 32 * 2 ** (i // 2))
    decoder = [(8, 512), (16, 256), (16, 256), (16, 256), (32, 128), (32, 128), (32, 128), (64, 64), (64, 64),
               (64, 64), (128, 32), (128, 32), (256, 16), (256, 16), (256, 3), (256, 3)]
    for i, (size, ch) in enumerate(decoder):
        assert shape(f"Conv2d_transpose{'' if i == 0 else f'_{i}'}__relu") == (None, size, size, ch)
    assert shape("Conv2d_transpose_16__sigmoid") == (None, 256, 256, 3)
    assert resfcn.output.dtype == "float32"


def test_resfcn256_every_weight_has_one_official_name(resfcn):
    mapping = official_variable_map(resfcn)
    assert len(mapping) == 245 and len({id(v) for v in mapping.values()}) == 245
    assert tuple(mapping["resfcn256/Conv/weights"].shape) == (4, 4, 3, 16)
    assert tuple(mapping["resfcn256/resBlock_8/shortcut/weights"].shape) == (1, 1, 256, 512)
    assert tuple(mapping["resfcn256/Conv2d_transpose_1/weights"].shape) == (4, 4, 256, 512)  # (kh, kw, out, in)
    assert "resfcn256/resBlock_9/BatchNorm/moving_variance" in mapping
    assert not any(n.startswith("resfcn256/resBlock_1/shortcut") for n in mapping)  # identity shortcut


def test_resfcn256_forward_is_a_normalised_map(resfcn):
    x = np.random.default_rng(0).random((1, 256, 256, 3), np.float32)
    y = np.asarray(resfcn.predict_on_batch(x))
    assert y.shape == (1, 256, 256, 3) and y.dtype == np.float32
    assert 0.0 <= y.min() and y.max() <= 1.0


def test_light_model_size_and_shapes():
    full = build_model("light")
    assert n_values(full.weights) <= 3_000_000
    assert n_values(full.trainable_weights) > 1_000_000
    tiny = build_model("light", width=0.25)
    assert n_values(tiny.weights) < 250_000
    x = np.random.default_rng(1).random((2, 256, 256, 3), np.float32)
    y = np.asarray(tiny(x, training=False))
    assert y.shape == (2, 256, 256, 3) and 0.0 <= y.min() and y.max() <= 1.0


def test_mixed_precision_output_stays_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model("light", width=0.25)
        y = model(np.zeros((1, 256, 256, 3), np.float32), training=False)
        assert keras.backend.standardize_dtype(y.dtype) == "float32"
        assert model.get_layer("stem_conv").compute_dtype == "bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name,options,match", [
    ("resnet50", {}, "unknown name 'resnet50'"),
    ("resfcn256", {"base_filter": 4}, "bad options"),
    ("resfcn256", {"base_filters": 5}, "even"),
    ("light", {"width": 0.0}, "width"),
    ("light", {"resolution": 100}, "multiple of 32"),
])
def test_registry_rejects_bad_requests(name, options, match):
    with pytest.raises(InputError, match=match):
        build_model(name, **options)


def test_registry_names():
    assert set(MODELS) == {"resfcn256", "light"}
