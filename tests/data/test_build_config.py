"""prnet-build-dataset --config: the data section and every crop rule of a training build take effect."""

from __future__ import annotations

import json

import numpy as np

from prnet_keras.cli.build_dataset import main
from prnet_keras.data.gt import GroundTruthMaker, sample_rng
from prnet_keras.data.hdf5 import PositionMapDataset
from prnet_keras.data.sources import list_samples, parse_fit, read_sample
from prnet_keras.geometry import CropConfig, load_morphable_model


def test_config_file_sets_crop_rules_and_storage(synthetic_300wlp_dir, tmp_path):
    crop = {"train_scale": 1.35, "center_jitter": 0.2, "size_jitter": [0.8, 1.25]}
    cfg = tmp_path / "build.json"
    cfg.write_text(json.dumps({"crop": crop, "data": {"jpeg_quality": 80, "commit_every": 3, "compression": "none"}}))
    out = tmp_path / "train.hdf5"
    assert main(["--source", str(synthetic_300wlp_dir), "--out", str(out), "--config", str(cfg), "--limit", "4",
                 "--seed", "5", "--workers", "1", "--no-progress", "--jpeg-quality", "85"]) == 0
    ds = PositionMapDataset(out)
    attrs = ds.attrs
    want = CropConfig.from_dict(crop)
    assert attrs["crop_config"] == want.to_dict()
    assert attrs["compression"] == "none" and attrs["args"]["jpeg_quality"] == 85  # the flag wins over the file
    # every stored crop is the one the configured rules give (seeded per sample), not the default rules'
    model = load_morphable_model("synthetic")
    maker, default = GroundTruthMaker(model, ds.layout, want), GroundTruthMaker(model, ds.layout)
    refs = {r.name: r for r in list_samples(synthetic_300wlp_dir)}
    batch = ds.read_batch(range(len(ds)))
    for name, stored in zip(batch["name"], batch["transform"]):
        image, mat = read_sample(refs[name])
        fit = parse_fit(mat, name)
        kpts = maker.keypoints(maker.model_vertices([fit])[0], fit, image.shape[0])
        np.testing.assert_allclose(stored, maker.crop_of(kpts, sample_rng(5, name)), atol=1e-9)
        assert not np.allclose(stored, default.crop_of(kpts, sample_rng(5, name)))
