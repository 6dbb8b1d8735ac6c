"""Inference engines (model.engines): OpenVINO reproduces Keras, is chosen by "auto", caches its
conversion safely, and every way it cannot run is a clear error or a fallback to Keras."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("openvino")

import keras  # noqa: E402

from prnet_keras.errors import InputError  # noqa: E402
from prnet_keras.model import build_model, engines  # noqa: E402
from prnet_keras.model.fold import fold_batch_norm  # noqa: E402
from prnet_keras.model.io import load_network  # noqa: E402
from tests.model.conftest import make_layout, with_bn_statistics  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    """A tiny ResFCN256 (64 px) with non-trivial BN statistics, folded as prediction runs it."""
    return fold_batch_norm(with_bn_statistics(build_model("resfcn256", base_filters=4, resolution=64)))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).random((3, 64, 64, 3), np.float32)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("PRNET_CACHE_DIR", str(folder))
    return folder / "openvino"


def _keras(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def test_openvino_reproduces_keras_at_any_batch_size(tiny, images):
    forward, used = engines.keras_forward(tiny, "auto")
    assert used == "openvino"  # TensorFlow backend, no GPU, openvino installed
    for batch in (1, 3):  # one conversion with a dynamic batch dimension
        out = forward(images[:batch])
        assert out.dtype == np.float32 and out.shape == (batch, 64, 64, 3)
        np.testing.assert_allclose(out, _keras(tiny, images[:batch]), atol=1e-5)
    keras_forward, used = engines.keras_forward(tiny, "keras")
    assert used == "keras"
    np.testing.assert_allclose(keras_forward(images), _keras(tiny, images), atol=1e-6)


def test_openvino_output_is_not_overwritten_by_the_next_call(tiny, images):
    forward = engines.openvino_forward(tiny)
    first = forward(images[:1])
    forward(images[1:2])  # reuses the request's output memory
    np.testing.assert_allclose(first, _keras(tiny, images[:1]), atol=1e-5)


def test_openvino_forward_from_many_threads(tiny, images):
    forward = engines.openvino_forward(tiny)
    expected = [_keras(tiny, images[i:i + 1]) for i in range(3)]
    results: dict[tuple[int, int], np.ndarray] = {}

    def work(t: int) -> None:
        for k in range(6):
            i = (t + k) % 3
            results[(t, k)] = (i, forward(images[i:i + 1]))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 24
    for i, out in results.values():
        np.testing.assert_allclose(out, expected[i], atol=1e-5)


def test_engine_name_is_checked(tiny):
    with pytest.raises(InputError, match="engine: expected one of auto, keras, openvino, openvino-int8, got .onnx."):
        engines.keras_forward(tiny, "onnx")


def test_unavailable_openvino_is_an_error_or_a_quiet_fallback(tiny, images, monkeypatch, recwarn):
    monkeypatch.setattr(engines, "openvino_unavailable_reason",
                        lambda: "openvino is not installed (pip install openvino)")
    with pytest.raises(InputError, match=r"engine 'openvino': openvino is not installed \(pip install openvino\)"):
        engines.keras_forward(tiny, "openvino")
    forward, used = engines.keras_forward(tiny, "auto")
    assert used == "keras" and not recwarn.list  # the normal case without openvino: no noise
    np.testing.assert_allclose(forward(images), _keras(tiny, images), atol=1e-6)


def test_failed_conversion_is_an_error_or_a_warned_fallback(tiny, images, monkeypatch):
    def broken(model, ov):
        raise RuntimeError("unsupported operation Foo")

    monkeypatch.setattr(engines, "_convert", broken)
    with pytest.raises(InputError,
                       match=r"engine 'openvino': cannot convert .*RuntimeError: unsupported operation Foo"):
        engines.keras_forward(tiny, "openvino")
    with pytest.warns(UserWarning, match="cannot convert.*predicting with Keras instead"):
        forward, used = engines.keras_forward(tiny, "auto")
    assert used == "keras"
    np.testing.assert_allclose(forward(images), _keras(tiny, images), atol=1e-6)


def test_ctrl_c_during_conversion_stops_instead_of_falling_back(tiny, monkeypatch):
    def interrupted(model, ov):  # what OpenVINO's converter does with a KeyboardInterrupt (seen with 2026.4)
        raise RuntimeError("Check 'false' failed ... Traceback ... KeyboardInterrupt: ")

    monkeypatch.setattr(engines, "_convert", interrupted)
    for engine in ("auto", "openvino"):
        with pytest.raises(KeyboardInterrupt):
            engines.keras_forward(tiny, engine)


def test_auto_prefers_keras_when_tensorflow_has_a_gpu(tiny, monkeypatch):
    monkeypatch.setattr(engines, "_tf_sees_gpu", lambda: True)
    assert engines.keras_forward(tiny, "auto")[1] == "keras"
    assert engines.keras_forward(tiny, "openvino")[1] == "openvino"  # asked for: still honoured


def test_conversion_cache_is_reused_repaired_and_pruned(tiny, images, cache, monkeypatch):
    ref = _keras(tiny, images)
    engines.keras_forward(tiny, "openvino", cache=True)
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 2 and entries[0].endswith(".bin") and entries[1].endswith(".xml")

    real_convert = engines._convert
    converted = []
    monkeypatch.setattr(engines, "_convert", lambda m, ov, *a: converted.append(1) or real_convert(m, ov, *a))
    forward, _ = engines.keras_forward(tiny, "openvino", cache=True)
    assert converted == []  # read back, not converted again
    np.testing.assert_allclose(forward(images), ref, atol=1e-5)

    xml = next(cache.glob("*.xml"))
    xml.write_text("<not an openvino model")  # damaged entry: converted again and replaced
    forward, _ = engines.keras_forward(tiny, "openvino", cache=True)
    assert converted == [1]
    np.testing.assert_allclose(forward(images), ref, atol=1e-5)
    engines.keras_forward(tiny, "openvino", cache=True)
    assert converted == [1]

    # other weights -> another entry; only CACHE_KEEP entries stay, the most recently used
    monkeypatch.setattr(engines, "CACHE_KEEP", 1)
    other = keras.models.clone_model(tiny)
    other.set_weights([w * 0.5 for w in tiny.get_weights()])
    engines.keras_forward(other, "openvino", cache=True)
    left = list(cache.glob("*.xml"))
    assert len(left) == 1 and left[0] != xml and len(list(cache.iterdir())) == 2


def test_cache_can_be_switched_off_and_an_unwritable_cache_is_harmless(tiny, images, tmp_path, monkeypatch):
    monkeypatch.setenv("PRNET_CACHE_DIR", "off")
    assert engines.cache_dir() is None
    engines.keras_forward(tiny, "openvino", cache=True)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("PRNET_CACHE_DIR", str(blocker))
    forward, used = engines.keras_forward(tiny, "openvino", cache=True)
    assert used == "openvino"
    np.testing.assert_allclose(forward(images), _keras(tiny, images), atol=1e-5)


def test_load_network_and_predictor_report_their_engine(tmp_path, cache):
    from prnet_keras.inference import Predictor

    layout = make_layout(64)
    model = build_model("resfcn256", base_filters=4, resolution=64)
    model.save(tmp_path / "m.keras")
    x = np.random.default_rng(2).random((2, 64, 64, 3), np.float32)
    by_engine = {}
    for engine in ("openvino", "keras"):
        net = load_network(tmp_path / "m.keras", uv_data=layout, engine=engine)
        assert net.engine == engine
        by_engine[engine] = net.predict(x)
    np.testing.assert_allclose(by_engine["openvino"], by_engine["keras"], atol=1e-3)  # crop pixels
    assert len(list(cache.glob("*.xml"))) == 1  # models loaded from files are cached
    assert Predictor(model, layout, engine="keras").engine == "keras"
    assert Predictor(model, layout).engine == "openvino"  # config inference.engine: auto
    with pytest.raises(InputError, match=r"takes input \(None, 64, 64, 3\).*needs \(None, 256, 256, 3\)"):
        Predictor(model, make_layout(256))
