"""Official TF1 checkpoint import: name/shape mapping against the real index, and a round trip
through a TF1-format checkpoint written with the official names and random values, checked
weight by weight and against an independent tf.nn implementation of the official graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from prnet_keras.errors import InputError, ModelFileError  # noqa: E402
from prnet_keras.model import build_model  # noqa: E402
from prnet_keras.model.checkpoint import (  # noqa: E402
    list_official_variables, load_official_checkpoint, match_official_variables,
)
from prnet_keras.model.io import load_network  # noqa: E402
from prnet_keras.model.resfcn import official_variable_map  # noqa: E402

PREFIX = "256_256_resfcn256_weight"
# Strides of the official graph (PRNet predictor.py), written out independently of our builder.
ENCODER_STRIDES = [2, 1, 2, 1, 2, 1, 2, 1, 2, 1]
DECODER_STRIDES = [1, 2, 1, 1, 2, 1, 1, 2, 1, 1, 2, 1, 2, 1, 1, 1, 1]


def scope(base: str, i: int) -> str:
    return f"resfcn256/{base}" if i == 0 else f"resfcn256/{base}_{i}"


def random_official_values(shapes: dict[str, tuple], seed: int) -> dict[str, np.ndarray]:
    """He-scaled kernels and tame BN statistics, so that activations stay O(1) through 30 layers."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in sorted(shapes.items()):
        leaf = name.rsplit("/", 1)[1]
        if leaf == "weights":
            fan_in = shape[0] * shape[1] * shape[-1] if "transpose" in name else np.prod(shape[:3])
            v = rng.normal(0, np.sqrt(2.0 / fan_in), shape)
        elif leaf == "gamma":
            v = rng.uniform(0.8, 1.2, shape)
        elif leaf in ("beta", "moving_mean"):
            v = rng.normal(0, 0.1, shape)
        else:  # moving_variance
            v = rng.uniform(0.5, 1.5, shape)
        out[name] = v.astype(np.float32)
    return out


def write_tf1_checkpoint(prefix: Path, values: dict[str, np.ndarray]) -> None:
    """A TF1 V2 checkpoint (.index + .data) with exactly these names, plus optimizer entries to ignore."""
    extra = {"beta1_power": np.float32(0.9),
             "resfcn256/Conv/weights/Adam": np.zeros_like(values["resfcn256/Conv/weights"])}
    names = list(values) + list(extra)
    tensors = [tf.constant(v) for v in list(values.values()) + list(extra.values())]
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors)


def reference_logits(w: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The official graph with tf.nn ops (TF1 'SAME' padding, inference BN), pre-sigmoid output."""
    def bn(y, s):
        return tf.nn.batch_normalization(y, w[f"{s}/BatchNorm/moving_mean"], w[f"{s}/BatchNorm/moving_variance"],
                                         w[f"{s}/BatchNorm/beta"], w[f"{s}/BatchNorm/gamma"], 1e-3)

    def conv(y, s, stride, norm=True, act=True):
        y = tf.nn.conv2d(y, w[f"{s}/weights"], stride, "SAME")
        y = bn(y, s) if norm else y
        return tf.nn.relu(y) if act else y

    y = conv(tf.constant(x), "resfcn256/Conv", 1)
    for i, stride in enumerate(ENCODER_STRIDES):
        s = scope("resBlock", i)
        c = w[f"{s}/Conv_2/weights"].shape[-1]
        short = conv(y, f"{s}/shortcut", stride, False, False) if (stride != 1 or y.shape[-1] != c) else y
        h = conv(conv(y, f"{s}/Conv", 1), f"{s}/Conv_1", stride)
        h = conv(h, f"{s}/Conv_2", 1, False, False)
        y = tf.nn.relu(bn(h + short, s))
    for i, stride in enumerate(DECODER_STRIDES):
        s = scope("Conv2d_transpose", i)
        k = w[f"{s}/weights"]
        shape = [y.shape[0], y.shape[1] * stride, y.shape[2] * stride, k.shape[2]]
        y = bn(tf.nn.conv2d_transpose(y, k, shape, stride, "SAME"), s)
        y = y if i == len(DECODER_STRIDES) - 1 else tf.nn.relu(y)
    return y.numpy()


def keras_logits(model, x):
    import keras

    sub = keras.Model(model.input, model.get_layer("Conv2d_transpose_16__BatchNorm").output)
    return np.asarray(sub.predict_on_batch(x))


def check_loaded(model, values, x):
    mapping = official_variable_map(model)
    assert set(mapping) == set(values)
    for name, var in mapping.items():
        np.testing.assert_array_equal(var.numpy(), values[name], err_msg=name)
    want = reference_logits(values, x)
    got = keras_logits(model, x)
    assert np.std(want) > 0.1  # not a degenerate (saturated or constant) output
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=1e-4)
    probs = np.asarray(model.predict_on_batch(x))
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-want)), atol=1e-5)


# ---- against the real official index ---------------------------------------------------------
@pytest.fixture(scope="module")
def official_shapes(reference_data):
    return list_official_variables(reference_data / "prnet-checkpoint" / PREFIX)


@pytest.fixture(scope="module")
def full_model():
    return build_model("resfcn256")


def test_official_index_maps_one_to_one(official_shapes, full_model):
    assert len(official_shapes) == 245
    assert sum(int(np.prod(s)) for s in official_shapes.values()) == 13_365_508
    mapping = match_official_variables(full_model, official_shapes)
    assert len(mapping) == 245 and len({id(v) for v in mapping.values()}) == len(full_model.weights)


def test_official_index_without_data_file_is_a_clear_error(reference_data, full_model):
    with pytest.raises(ModelFileError, match=r"no 256_256_resfcn256_weight.data-\* file"):
        load_official_checkpoint(full_model, reference_data / "prnet-checkpoint" / PREFIX)


@pytest.fixture(scope="module")
def full_checkpoint(tmp_path_factory, official_shapes):
    values = random_official_values(official_shapes, seed=7)
    prefix = tmp_path_factory.mktemp("ckpt") / PREFIX
    write_tf1_checkpoint(prefix, values)
    return prefix, values


def test_full_random_checkpoint_round_trip(full_checkpoint, full_model):
    prefix, values = full_checkpoint
    loaded = load_official_checkpoint(full_model, str(prefix) + ".index")  # the .index path works too
    assert len(loaded) == 245
    x = np.random.default_rng(0).random((1, 256, 256, 3), np.float32)
    check_loaded(full_model, values, x)


def test_load_network_checkpoint(full_checkpoint, tiny_layout):
    prefix, values = full_checkpoint
    from prnet_keras.geometry.uv import UVLayout

    layout_path = prefix.parent / "layout_for_test.npz"
    tiny_layout.save(layout_path)
    with pytest.raises(InputError, match="no UV layout found"):
        load_network(prefix)
    net = load_network(prefix, uv_data=layout_path, fold_bn=False)
    assert net.kind == "checkpoint" and isinstance(net.layout, UVLayout)
    x = np.random.default_rng(1).random((2, 256, 256, 3), np.float32)
    want = 1 / (1 + np.exp(-reference_logits(values, x)))
    np.testing.assert_allclose(net.predict(x), want * 281.6, atol=3e-3)
    # the default predicts through the BN-folded copy: same map within float32 rounding
    # (random official-size weights: ~1e-5 of the 281.6 px range at worst)
    folded = load_network(prefix, uv_data=layout_path)
    np.testing.assert_allclose(folded.predict(x), want * 281.6, atol=2e-2)


# ---- tiny variant (no reference data needed) -------------------------------------------------
def test_tiny_checkpoint_round_trip_and_errors(tmp_path):
    model = build_model("resfcn256", base_filters=4, resolution=64)
    shapes = {n: tuple(v.shape) for n, v in official_variable_map(model).items()}
    values = random_official_values(shapes, seed=3)
    prefix = tmp_path / "tiny"
    write_tf1_checkpoint(prefix, values)
    assert list_official_variables(prefix) == shapes  # optimizer entries are ignored
    load_official_checkpoint(model, prefix)
    check_loaded(model, values, np.random.default_rng(2).random((2, 64, 64, 3), np.float32))

    other = build_model("resfcn256", base_filters=2, resolution=64)
    with pytest.raises(ModelFileError, match="shape mismatch"):
        load_official_checkpoint(other, prefix)
    with pytest.raises(ModelFileError, match="not in model|no official ResFCN256 counterpart"):
        load_official_checkpoint(build_model("light", width=0.25), prefix)
    partial = dict(values)
    partial.pop("resfcn256/resBlock_3/Conv_1/weights")
    write_tf1_checkpoint(tmp_path / "partial", partial)
    with pytest.raises(ModelFileError, match="1 missing from checkpoint.*resBlock_3/Conv_1/weights"):
        load_official_checkpoint(model, tmp_path / "partial")
    with pytest.raises(ModelFileError, match="no TF1 checkpoint here"):
        load_official_checkpoint(model, tmp_path / "nothing")
    (tmp_path / "junk.index").write_bytes(b"not an index")
    with pytest.raises(ModelFileError, match="not a readable TF checkpoint index"):
        load_official_checkpoint(model, tmp_path / "junk")

