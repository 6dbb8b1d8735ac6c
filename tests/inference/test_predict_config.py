"""prnet-predict --config: the inference and crop values reach the predictor and the outputs; flags win."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from prnet_keras.cli.load_model import main
from prnet_keras.inference import Predictor


@pytest.fixture(scope="module")
def sample(synthetic_aflw_dir, synthetic_model, synthetic_layout):
    from prnet_keras.data.gt import make_ground_truth
    from prnet_keras.data.sources import list_samples, read_sample

    image, mat = read_sample(list_samples(synthetic_aflw_dir)[0])
    return synthetic_aflw_dir / "image00001.jpg", make_ground_truth(synthetic_model, synthetic_layout, image, mat)


def test_config_file_then_flags(sample, synthetic_layout, tmp_path, monkeypatch, capsys):
    path, gt = sample
    made = []

    def from_path(model_path, uv_data=None, **kwargs):  # no network file needed: the ground truth map is the output
        made.append(kwargs)
        return Predictor(lambda x: np.repeat(gt["position_map"][None], len(x), 0), synthetic_layout, **kwargs)

    monkeypatch.setattr(Predictor, "from_path", from_path)
    (tmp_path / "m.keras").write_bytes(b"never read")
    cfg = tmp_path / "predict.json"
    cfg.write_text(json.dumps({"inference": {"detector": "none", "min_confidence": 0.7, "min_face_size": 60,
                                             "engine": "keras", "texture_size": 64},
                               "crop": {"detector_box_scale": 1.8}}))
    out = tmp_path / "out"
    argv = ["--image", str(path), "--model", str(tmp_path / "m.keras"), "--outputs", "texture,pose",
            "--config", str(cfg), "--output", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    kw = made[-1]
    assert (kw["min_confidence"], kw["min_face_size"], kw["engine"]) == (0.7, 60, "keras")
    assert cv2.imread(str(out / "image00001_0_textured_texture.png")).shape == (64, 64, 3)
    crop = json.loads((out / "image00001_0_pose.json").read_text())["crop_box"]
    assert crop["size"] == pytest.approx(1.8 * 449)  # detector "none": the whole 450x450 image is the box
    assert main(argv + ["--texture-size", "32", "--min-face-size", "80"]) == 0
    assert cv2.imread(str(out / "image00001_0_textured_texture.png")).shape == (32, 32, 3)
    assert made[-1]["min_face_size"] == 80
