"""Run in a subprocess by test_distributed.py with KERAS_BACKEND=jax and two host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=2``): train the same tiny model on the
same data twice, with ``keras.distribution.DataParallel`` over both devices and on one
device, and write both runs' per-step losses and final weights to the .npz named last."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def run(h5dir: str, model: str, out: Path, distribute: str) -> dict:
    import keras

    from prnet_keras.train.trainer import train

    # One step per epoch: the logged epoch loss is the loss of that step.
    run_dir = train({"train": {"train_files": [f"{h5dir}/train.hdf5"], "model": model, "batchsize": 4, "epochs": 3,
                               "steps_per_epoch": 1, "learningrate": 0.01, "distribute": distribute,
                               "output": str(out / distribute), "verbose": 0}})
    state = json.loads((run_dir / "run_state.json").read_text())
    weights = keras.saving.load_model(run_dir / "epoch_0003.keras").get_weights()
    return {"loss": [row["loss"] for row in state["history"] if "loss" in row],
            "kind": state["runs"][0]["distribution"]["kind"], "replicas": state["runs"][0]["distribution"]["replicas"],
            "weights": np.concatenate([w.ravel() for w in weights])}


def main(h5dir: str, model: str, out: str) -> None:
    import keras

    assert keras.backend.backend() == "jax"
    parallel = run(h5dir, model, Path(out).parent, "auto")
    single = run(h5dir, model, Path(out).parent, "off")
    np.savez(out, **{f"{name}_{k}": np.asarray(v) for name, res in (("parallel", parallel), ("single", single))
                     for k, v in res.items()})


if __name__ == "__main__":
    main(*sys.argv[1:4])
