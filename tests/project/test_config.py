"""One configuration, one default per value.

The packaged defaults file is what users read and override; the library spells the same
defaults in its signatures and option classes so a Python caller needs no file. Every
value must be equal in both places, and only entry points read the configuration.
"""

from __future__ import annotations

import inspect
import json

import pytest

from prnet_keras.config import load_config, packaged_names
from prnet_keras.errors import InputError


@pytest.fixture(scope="module")
def packaged() -> dict:
    return load_config()


def _defaults(fn) -> dict:
    params = inspect.signature(fn).parameters.items()
    return {k: p.default for k, p in params if p.default is not inspect.Parameter.empty}


def test_sections_are_exactly_what_the_library_reads(packaged):
    assert sorted(packaged) == ["augment", "crop", "data", "evaluate", "inference", "server", "train"]


def test_crop_augment_train_defaults(packaged):
    from prnet_keras.geometry import CropConfig, detector_crop, training_crop
    from prnet_keras.train.augment import AugmentConfig
    from prnet_keras.train.trainer import TRAIN_DEFAULTS

    assert CropConfig().to_dict() == packaged["crop"]
    assert AugmentConfig().to_dict() == packaged["augment"]
    assert TRAIN_DEFAULTS == packaged["train"]
    crop = packaged["crop"]
    assert _defaults(training_crop)["scale"] == crop["train_scale"]
    assert _defaults(training_crop)["center_jitter"] == crop["center_jitter"]
    assert list(_defaults(training_crop)["size_jitter"]) == crop["size_jitter"]
    assert _defaults(detector_crop)["scale"] == crop["detector_box_scale"]


def test_data_defaults(packaged):
    from prnet_keras.data.build import build_hdf5
    from prnet_keras.data.listfmt import build_list_hdf5

    d = _defaults(build_hdf5)
    assert {k: d[k] for k in packaged["data"]} == packaged["data"]
    d = _defaults(build_list_hdf5)
    assert {k: d[k] for k in packaged["data"] if k in d} == {k: v for k, v in packaged["data"].items() if k in d}
    assert "max_image_pixels" in d


def test_one_image_pixel_limit(packaged):
    """data.max_image_pixels is the one limit of every image reader: datasets, prnet-predict, the server."""
    from prnet_keras.cli.load_model import process_images
    from prnet_keras.data import images
    from prnet_keras.data.sources import read_sample
    from prnet_keras.inference.images import load_image
    from prnet_keras.server.settings import CONFIG_KEYS, ServerSettings

    limit = packaged["data"]["max_image_pixels"]
    assert images.MAX_IMAGE_PIXELS == limit
    assert _defaults(images.decode_image)["max_pixels"] == _defaults(images.read_image_file)["max_pixels"] == limit
    assert _defaults(load_image)["max_pixels"] == _defaults(read_sample)["max_image_pixels"] == limit
    assert _defaults(process_images)["max_image_pixels"] == limit
    assert ServerSettings().max_image_pixels == limit
    assert "max_image_pixels" not in CONFIG_KEYS and "max_image_pixels" not in packaged["server"]


def test_inference_defaults(packaged):
    from prnet_keras import RESOLUTION
    from prnet_keras.inference import Predictor, get_detector
    from prnet_keras.inference.detect import MTCNNDetector, OpenCVDetector
    from prnet_keras.model.engines import keras_forward

    inf = packaged["inference"]
    p = _defaults(Predictor.__init__)
    assert (p["detector"], p["min_confidence"], p["min_face_size"], p["engine"]) == (
        inf["detector"], inf["min_confidence"], inf["min_face_size"], inf["engine"])
    assert _defaults(get_detector) == {"min_confidence": inf["min_confidence"], "min_face_size": inf["min_face_size"],
                                       "engine": inf["engine"]}
    assert _defaults(MTCNNDetector.__init__)["engine"] == inf["engine"]
    assert _defaults(MTCNNDetector.__init__)["min_confidence"] == inf["min_confidence"]
    assert _defaults(MTCNNDetector.__init__)["min_face_size"] == inf["min_face_size"]
    assert _defaults(OpenCVDetector.__init__)["min_face_size"] == inf["min_face_size"]
    assert _defaults(keras_forward)["engine"] == inf["engine"]
    assert inf["texture_size"] == RESOLUTION  # Face.texture(size=None): the layout resolution (256)


def test_model_io_engine_default(packaged):
    pytest.importorskip("keras")
    from prnet_keras.model.io import load_network

    assert _defaults(load_network)["engine"] == packaged["inference"]["engine"]


def test_evaluate_defaults(packaged):
    from prnet_keras.evaluate import report
    from prnet_keras.evaluate.runner import Settings, evaluate

    ev = packaged["evaluate"]
    s = Settings()
    assert [report.METRICS.index(m) for m in s.metrics] == ev["evalidxs"]
    assert {k: getattr(s, k) for k in ("normalizer", "recon_normalizer", "shiftZ", "icp", "icp_method", "ced_max")} == {
        k: ev[k] for k in ("normalizer", "recon_normalizer", "shiftZ", "icp", "icp_method", "ced_max")}
    assert list(s.yaw_bins) == ev["yaw_bins"]
    assert _defaults(evaluate)["engine"] == packaged["inference"]["engine"]


def test_server_defaults(packaged):
    from prnet_keras.client import PRNetClient
    from prnet_keras.server.app import create_app
    from prnet_keras.server.service import FaceService
    from prnet_keras.server.settings import CONFIG_KEYS, ServerSettings

    server = packaged["server"]
    assert sorted(CONFIG_KEYS) == sorted(server)
    s = ServerSettings()
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(s, k)) for k in CONFIG_KEYS)} == server
    assert _defaults(PRNetClient.__init__)["base_url"] == f"http://{server['host']}:{server['port']}"
    ev = packaged["evaluate"]
    for fn in (create_app, FaceService.__init__):
        assert (_defaults(fn)["icp_backend"], _defaults(fn)["icp_method"]) == (ev["icp"], ev["icp_method"])


def test_named_configurations_load(packaged):
    names = [n for n in packaged_names() if n != "defaults"]
    assert names, "no named configuration"
    for name in names:
        cfg = load_config(name)
        assert sorted(cfg) == sorted(packaged)


def test_unknown_section_or_key_is_an_error_naming_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"inference": {"min_confidance": 0.5}}))
    with pytest.raises(InputError, match=r"bad\.json: unknown key\(s\) inference\.min_confidance"):
        load_config(str(bad))
    bad.write_text(json.dumps({"geometry": {"resolution": 128}}))  # fixed constants, not settings
    with pytest.raises(InputError, match=r"bad\.json: unknown section 'geometry'"):
        load_config(str(bad))
    with pytest.raises(InputError, match="command-line options: unknown key"):
        load_config(None, {"train": {"epocs": 3}})


def test_flags_override_the_file_which_overrides_the_defaults(tmp_path):
    f = tmp_path / "mine.json"
    f.write_text(json.dumps({"train": {"epochs": 7, "batchsize": 4}}))
    cfg = load_config(str(f), {"train": {"batchsize": 2}})
    assert (cfg["train"]["epochs"], cfg["train"]["batchsize"], cfg["train"]["seed"]) == (7, 2, 0)
