"""Export formats reproduce the Keras outputs; load_network finds models and layouts, rejects junk."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from prnet_keras import LABEL_SCALE  # noqa: E402
from prnet_keras.errors import InputError, ModelFileError  # noqa: E402
from prnet_keras.model import build_model  # noqa: E402
from prnet_keras.model.export import ExportError, export_model, layout_sidecar  # noqa: E402
from prnet_keras.model.io import load_network  # noqa: E402
from tests.model.conftest import with_bn_statistics  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    """A tiny ResFCN256 with non-trivial BN statistics (so BN folding in converters is exercised)."""
    return with_bn_statistics(build_model("resfcn256", base_filters=4))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).random((3, 256, 256, 3), np.float32)


@pytest.fixture(scope="module")
def reference(tiny, images):
    return np.asarray(tiny.predict_on_batch(images)) * LABEL_SCALE


# Max abs error in crop pixels (of 281.6): float16 weights ~1e-3 relative, int8 weights ~1e-2.
@pytest.mark.parametrize("fmt,atol", [("keras", 1e-4), ("saved_model", 1e-3), ("onnx", 1e-3),
                                      ("tflite_float16", 1.0), ("tflite_int8", 6.0)])
def test_export_reproduces_keras(fmt, atol, tiny, images, reference, tmp_path, tiny_layout):
    if fmt == "onnx":
        pytest.importorskip("tf2onnx", reason="ONNX export needs tf2onnx")
        pytest.importorskip("onnxruntime", reason="running the ONNX model needs onnxruntime")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export_model(tiny, tmp_path / "net", fmt, layout=tiny_layout)
    assert path.exists() and layout_sidecar(path).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left
    net = load_network(path)  # layout found beside it
    assert net.layout == tiny_layout
    got = net.predict(images)
    assert got.shape == reference.shape and got.dtype == np.float32
    err = np.abs(got - reference)
    assert err.max() <= atol, f"{fmt}: max error {err.max():.4f} px"
    assert err.mean() <= atol / 4


def test_export_rejects_unknown_format(tiny, tmp_path):
    with pytest.raises(InputError, match="unknown 'pb'"):
        export_model(tiny, tmp_path / "x", "pb")


def test_onnx_missing_converter_is_a_clear_error(tiny, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import fails as if not installed
    with pytest.raises(ExportError, match="pip install tf2onnx"):
        export_model(tiny, tmp_path / "x", "onnx")


@pytest.fixture(scope="module")
def keras_file(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    return export_model(tiny, folder / "best.keras", "keras")


def test_load_network_layout_sources(keras_file, tiny_layout, images, reference):
    folder = keras_file.parent
    with pytest.raises(InputError, match="no UV layout found.*pass uv_data"):
        load_network(keras_file)
    tiny_layout.save(folder / "uv_layout.npz")  # what a training run writes
    net = load_network(keras_file)
    assert net.layout == tiny_layout and net.kind == "keras" and net.name == "best.keras"
    np.testing.assert_allclose(net.predict(images), reference, atol=1e-4)
    # an explicit uv_data wins over the file beside the model (with a warning when they differ)
    other = type(tiny_layout)(**{**tiny_layout.__dict__, "source": "other",
                                 "weight_mask": tiny_layout.weight_mask * 0.5})
    with pytest.warns(UserWarning, match="differs"):
        assert load_network(keras_file, uv_data=other).layout == other
    (folder / "uv_layout.npz").unlink()


def test_predict_chunks_and_validates(keras_file, tiny_layout, images, reference):
    net = load_network(keras_file, uv_data=tiny_layout)
    net.batch_size = 2  # 3 images -> chunks of 2 and 1
    calls = []
    forward = net.forward
    net.forward = lambda x: calls.append(len(x)) or forward(x)
    np.testing.assert_allclose(net.predict(images), reference, atol=1e-4)
    assert calls == [2, 1]
    with pytest.raises(InputError, match=r"images must be \(B, 256, 256, 3\).*\(256, 256, 3\)"):
        net.predict(images[0])


def test_load_network_rejects_missing_and_wrong_files(tmp_path, tiny_layout):
    with pytest.raises(ModelFileError, match="no such model"):
        load_network(tmp_path / "nope", uv_data=tiny_layout)
    with pytest.raises(ModelFileError, match="model file not found"):
        load_network(tmp_path / "nope.keras", uv_data=tiny_layout)
    (tmp_path / "text.keras").write_text("hello")
    with pytest.raises(ModelFileError, match="not a .keras file"):
        load_network(tmp_path / "text.keras", uv_data=tiny_layout)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ModelFileError, match="not a SavedModel"):
        load_network(tmp_path / "folder", uv_data=tiny_layout)
    (tmp_path / "weights.h5").write_bytes(b"\x89HDF")
    with pytest.raises(ModelFileError, match="unsupported model file"):
        load_network(tmp_path / "weights.h5", uv_data=tiny_layout)
    (tmp_path / "bad.tflite").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="not a TFLite model"):
        load_network(tmp_path / "bad.tflite", uv_data=tiny_layout)


def test_load_network_rejects_non_position_map_keras_model(tmp_path, tiny_layout):
    import keras

    model = keras.Sequential([keras.Input((256, 256, 3)), keras.layers.Conv2D(1, 1)])
    model.save(tmp_path / "seg.keras")
    with pytest.raises(ModelFileError, match="not a position-map network"):
        load_network(tmp_path / "seg.keras", uv_data=tiny_layout)


def test_export_cli(keras_file, tiny_layout, tmp_path, capsys):
    """prnet-export (cli/export.py): the console script's code path, and its format list is the library's."""
    from prnet_keras.cli.export import FORMATS as CLI_FORMATS
    from prnet_keras.cli.export import main
    from prnet_keras.model.export import FORMATS

    assert CLI_FORMATS == FORMATS

    layout_path = tmp_path / "layout.npz"
    tiny_layout.save(layout_path)
    assert main([str(keras_file), str(tmp_path / "copy"), "--format", "keras", "--uv-data", str(layout_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "copy.keras")
    assert load_network(tmp_path / "copy.keras").layout == tiny_layout  # sidecar copy.uv.npz written
    assert main([str(tmp_path / "missing.keras"), str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.keras: model file not found" in err and err.count("\n") == 1
