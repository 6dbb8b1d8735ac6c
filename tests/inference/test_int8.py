"""INT8 engine (model.engines "openvino-int8", model.quantize): on a small *trained* network the
quantised maps agree with fp32 within the bound, the report says so, the result is cached,
and ``auto`` uses int8 only on an int8-capable CPU when the bound holds, fp32 otherwise."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("openvino")
pytest.importorskip("nncf")

import keras  # noqa: E402

from prnet_keras import LABEL_SCALE  # noqa: E402
from prnet_keras.geometry import UVLayout  # noqa: E402
from prnet_keras.inference.calibration import CalibrationData  # noqa: E402
from prnet_keras.model import build_model, engines, quantize  # noqa: E402
from prnet_keras.model.fold import fold_batch_norm  # noqa: E402

R = 64  # a small network: light, width 0.25, 64 px


@pytest.fixture(scope="module")
def layout64(synthetic_model):
    return UVLayout.from_model(synthetic_model, resolution=R)


@pytest.fixture(scope="module")
def data(layout64):
    """40 synthetic crops with labels (the layout is the synthetic model's): 28 calibrate, 12 validate."""
    calibration = CalibrationData(count=40, validation=12, seed=5)
    return calibration, calibration.load(layout64)


@pytest.fixture(scope="module")
def trained(data):
    """The light network trained briefly (12 steps, the CI budget) on the calibration crops: its
    weights and activation ranges are a trained network's, not an initialiser's (its landmarks
    are far from good yet: the bound is about int8 vs fp32, not about the network)."""
    keras.utils.set_random_seed(0)
    model = build_model("light", width=0.25, resolution=R)
    cal = data[1]
    x = cal.calibration_crops
    y = cal.labels[:len(x)] / np.float32(LABEL_SCALE * R / 256)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    # Built now: the first step is then traced once, not twice (about half its start-up).
    model.optimizer.build(model.trainable_variables)
    first = model.evaluate(x, y, verbose=0)
    history = model.fit(x, y, batch_size=7, epochs=3, verbose=0)
    assert history.history["loss"][-1] < 0.7 * first  # it did learn
    return fold_batch_norm(model)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRNET_CACHE_DIR", str(folder))
        yield folder / "openvino-int8"


@pytest.fixture(scope="module")
def quantized(trained, data, layout64, cache):
    logs: list[str] = []
    forward, used = engines.keras_forward(trained, "openvino-int8", cache=True, calibration=data[0],
                                          layout=layout64, log=logs.append)
    return forward, used, logs


def test_int8_maps_agree_with_fp32_within_the_bound(trained, data, layout64, cache, quantized):
    calibration, cal = data
    forward, used, logs = quantized
    assert used == "openvino-int8"
    report = forward.report
    assert (report["validation_crops"], report["calibration_crops"], report["nme_reference"]) == (12, 28, "labels")
    assert report["map_p99_px"] <= 1.0 and report["nme_change_pp"] <= 0.1, report
    assert quantize.within_bound(report) and "within the bound" in logs[-1]
    # the report is measured, not asserted: recompute the map error on the held-out crops
    fp32 = engines.openvino_forward(trained)
    val = cal.crops[cal.validation_slice]
    scale = LABEL_SCALE * R / 256
    d = np.linalg.norm((forward(val) - fp32(val)).reshape(len(val), -1, 3)[:, layout64.face_ind] * scale, axis=-1)
    assert abs(float(np.percentile(d, 99)) - report["map_p99_px"]) < 1e-3
    assert 0 < d.mean() and np.abs(forward(val) - fp32(val)).max() > 1e-4  # really quantised, not fp32
    # cached with its report: a second load does not quantise again
    assert sorted(p.suffix for p in cache.iterdir()) == [".bin", ".json", ".xml"]
    before = len(logs)
    again, _ = engines.keras_forward(trained, "openvino-int8", cache=True, calibration=calibration, layout=layout64,
                                     log=logs.append)
    assert len(logs) == before and again.report == report
    # int8 kernels are not bit-reproducible across compilations
    np.testing.assert_allclose(again(val), forward(val), atol=1e-3)


def test_auto_uses_int8_only_when_capable_and_within_the_bound(trained, quantized, monkeypatch):
    monkeypatch.setattr(quantize, "int8_capable_cpu", lambda: True)
    assert engines.keras_forward(trained, "auto", cache=True)[1] == "openvino-int8"
    assert engines.keras_forward(trained, "auto", cache=False)[1] == "openvino"  # no cache: never int8
    monkeypatch.setattr(quantize, "INT8_BOUND", {"nme_change_pp": 0.1, "map_p99_px": 1e-6})  # the bound fails
    assert engines.keras_forward(trained, "auto", cache=True)[1] == "openvino"
    monkeypatch.setattr(quantize, "INT8_BOUND", {"nme_change_pp": 0.1, "map_p99_px": 1.0})
    monkeypatch.setattr(quantize, "int8_capable_cpu", lambda: False)  # no int8 units: fp32 is faster
    assert engines.keras_forward(trained, "auto", cache=True)[1] == "openvino"


def test_nothing_quantised_means_fp32_or_an_error(trained, tmp_path, monkeypatch):
    from prnet_keras.errors import InputError

    monkeypatch.setenv("PRNET_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(quantize, "int8_capable_cpu", lambda: True)
    assert engines.keras_forward(trained, "auto", cache=True)[1] == "openvino"  # auto never quantises
    with pytest.raises(InputError, match="no int8 model of these weights is cached"):
        engines.keras_forward(trained, "openvino-int8", cache=True)
