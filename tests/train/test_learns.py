"""Proof that training learns from the photos, lean enough for CI: marked slow.

Synthetic data made by the project (300W-LP layout for training, AFLW2000-3D layout for
validation, different seeds so no face is shared), the light model at width 0.25, no
augmentation, BatchNorm momentum 0.9 (Keras' 0.99 leaves the inference-mode statistics
far behind after ~100 steps), constant learning rate 3e-3, 256 steps of 8 on CPU.

Two bars, each with a margin of several NME points on the seeds measured:
- the best validation landmark NME is at most half the untrained one (epoch 0);
- it is below that of the *average training face* (the mean training position map for every
  photo: a predictor that ignores the image, ~17.9 % here), so the network reads the photo.

The 3x cut of issue 4 is the README example's claim at full size (2,000 / 200 images; numbers
in docs/training.md). At this size it is not a safe CI bar: this recipe at 448 steps ended at
0.333 and 0.341 of the untrained NME for two seeds (33 % -> 13 %), i.e. on the line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

TRAIN_IMAGES, VAL_IMAGES = 128, 32


@pytest.fixture(scope="module")
def synthetic_hdf5_dir(tmp_path_factory):
    from prnet_keras.data.build import build_hdf5
    from prnet_keras.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("learn")
    generate_dataset(root / "w300", layout="300wlp", count=TRAIN_IMAGES, seed=21, bfm="synthetic", workers=2)
    generate_dataset(root / "aflw", layout="aflw2000", count=VAL_IMAGES, seed=22, bfm="synthetic", workers=2)
    build_hdf5(source=root / "w300", out=root / "h5" / "train.hdf5", bfm="synthetic", buildmode="train", workers=2)
    build_hdf5(source=root / "aflw", out=root / "h5" / "val.hdf5", bfm="synthetic", buildmode="val", workers=2)
    return root / "h5"


def average_face_nme(hdf5_dir) -> float:
    """Validation NME (%) of predicting the mean training position map for every photo."""
    from prnet_keras.data.hdf5 import PositionMapDataset
    from prnet_keras.model.metrics import LandmarkNME

    train, val = PositionMapDataset(hdf5_dir / "train.hdf5"), PositionMapDataset(hdf5_dir / "val.hdf5")
    mean_map = train.read_batch(range(len(train)), meta=False)["position_map"].mean(0)
    truth = val.read_batch(range(len(val)), meta=False)["position_map"]
    metric = LandmarkNME(val.layout.uv_kpt_ind, resolution=val.layout.resolution)
    metric.update_state(truth, np.broadcast_to(mean_map, truth.shape))
    return float(metric.result())


@pytest.mark.slow
def test_light_model_learns_from_the_photos(synthetic_hdf5_dir, tmp_path):
    from prnet_keras.train.trainer import train

    run = train({"train": {"hdf5dir": str(synthetic_hdf5_dir), "model": "light", "model_options": {"width": 0.25},
                           "epochs": 16, "batchsize": 8, "learningrate": 3e-3, "dropevery": 100, "augment": False,
                           "bn_momentum": 0.9,
                           "output": str(tmp_path / "run"), "verbose": 0, "seed": 0}})
    history = json.loads((run / "run_state.json").read_text())["history"]
    initial = history[0]["val_nme"]
    best = min(row["val_nme"] for row in history[1:])
    baseline = average_face_nme(synthetic_hdf5_dir)
    print(f"val NME untrained {initial:.2f} % -> best {best:.2f} % after {history[-1]['epoch']} epochs; "
          f"average face {baseline:.2f} %")
    assert history[0]["epoch"] == 0 and initial > 30.0 and 10.0 < baseline < initial
    assert best <= initial / 2.0
    assert best < baseline
