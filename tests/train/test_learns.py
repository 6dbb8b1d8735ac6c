"""Proof that training learns (issue 4 §6), lean enough for CI: marked slow.

Synthetic data made by the project (300W-LP layout for training, AFLW2000-3D layout for
validation, different seeds so no face is shared), the light model at width 0.25, no
augmentation, BatchNorm momentum 0.9 (Keras' 0.99 leaves the inference-mode statistics
far behind after ~100 steps), constant learning rate 3e-3, 448 steps on CPU. The validation landmark NME of the trained
weights must be at most a third of that of the untrained ones (recorded as epoch 0).
The README example does the same at full size (2,000 / 200 images); numbers in
docs/readme-parts/train.md.
"""

from __future__ import annotations

import json

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


@pytest.mark.slow
def test_light_model_cuts_validation_nme_by_3x(synthetic_hdf5_dir, tmp_path):
    from prnet_keras.train.trainer import train

    run = train({"train": {"hdf5dir": str(synthetic_hdf5_dir), "model": "light", "model_options": {"width": 0.25},
                           "epochs": 28, "batchsize": 8, "learningrate": 3e-3, "dropevery": 100, "augment": False,
                           "bn_momentum": 0.9,
                           "output": str(tmp_path / "run"), "verbose": 0, "seed": 0}})
    history = json.loads((run / "run_state.json").read_text())["history"]
    initial = history[0]["val_nme"]
    best = min(row["val_nme"] for row in history[1:])
    print(f"val NME untrained {initial:.2f} % -> best {best:.2f} % after {history[-1]['epoch']} epochs")
    assert history[0]["epoch"] == 0 and initial > 10.0
    assert best <= initial / 3.0
