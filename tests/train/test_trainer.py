"""train(): outputs, schedules, configuration checks, resume after kill -9, --force."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from prnet_keras.errors import InputError
from prnet_keras.train.trainer import config_differences, learning_rate_at, resolve_config

ROOT = Path(__file__).resolve().parents[2]


def test_learning_rate_schedules():
    t = {"learningrate": 1e-4, "lr_schedule": "step", "dropevery": 5, "dropfactor": 0.5, "epochs": 100}
    assert [learning_rate_at(e, t) for e in (0, 4, 5, 9, 10)] == pytest.approx([1e-4, 1e-4, 5e-5, 5e-5, 2.5e-5])
    t["lr_schedule"] = "cosine"
    assert learning_rate_at(0, t) == pytest.approx(1e-4)
    assert learning_rate_at(50, t) == pytest.approx(5e-5)
    assert learning_rate_at(100, t) == pytest.approx(0.0, abs=1e-12)


def test_resolve_config_validates(toy_hdf5_dir, tmp_path):
    cfg = resolve_config({"train": {"hdf5dir": str(toy_hdf5_dir), "output": str(tmp_path / "r")}})
    assert cfg["train"]["train_files"] == [str(toy_hdf5_dir / "train.hdf5")]
    assert cfg["train"]["val_files"] == [str(toy_hdf5_dir / "val.hdf5")]
    assert cfg["augment"]["rotation_range_deg"] == [-45.0, 45.0]
    bad = [({"lr_schedule": "linear"}, "lr_schedule"), ({"epochs": 0}, "epochs"),
           ({"learningrate": "x"}, "learningrate"),
           ({"hdf5dir": str(tmp_path / "nope")}, "hdf5dir"), ({"hdf5dir": None}, "training data"),
           ({"mixed_precision": "fp8"}, "mixed_precision"), ({"bn_momentum": 1.5}, "bn_momentum"),
           ({"bn_momentum": "fast"}, "bn_momentum")]
    for override, match in bad:
        t = {"hdf5dir": str(toy_hdf5_dir), **override}
        with pytest.raises(InputError, match=match):
            resolve_config({"train": t})
    with pytest.raises(InputError, match="augment"):
        resolve_config({"train": {"hdf5dir": str(toy_hdf5_dir)}, "augment": {"rotate": False}})


def test_config_differences_ignore_runtime_only_keys():
    a = {"train": {"epochs": 3, "workers": 1, "learningrate": 1e-4}, "augment": {"rotation": True}}
    b = {"train": {"epochs": 3, "workers": 4, "learningrate": 1e-3}, "augment": {"rotation": False}}
    assert config_differences(a, b) == ["train.learningrate: 0.0001 -> 0.001", "augment.rotation: True -> False"]


def test_train_end_to_end_writes_all_outputs(toy_hdf5_dir, tmp_path, layout):
    import keras

    from prnet_keras.geometry.uv import UVLayout
    from prnet_keras.train.trainer import train

    out = train({"train": {"hdf5dir": str(toy_hdf5_dir), "model": "light", "model_options": {"width": 0.25},
                           "epochs": 2, "batchsize": 4, "steps_per_epoch": 2, "dropevery": 1, "keep_checkpoints": 1,
                           "output": str(tmp_path / "run"), "verbose": 0}})
    names = {p.name for p in out.iterdir()}
    assert {"epoch_0002.keras", "best_eval_loss.keras", "best_nme.keras", "run_state.json", "training_log.csv",
            "loss.png", "nme.png", "config.json", "uv_layout.npz"} <= names
    assert "epoch_0001.keras" not in names, "keep_checkpoints=1 keeps only the last epoch"
    assert not [n for n in names if n.startswith(".")], "no temporaries left behind"
    assert UVLayout.load(out / "uv_layout.npz") == layout
    rows = list(csv.DictReader((out / "training_log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2], "epoch 0 = validation of the initial weights"
    assert float(rows[2]["learning_rate"]) == pytest.approx(float(rows[1]["learning_rate"]) / 2, rel=1e-5)
    assert all(np.isfinite(float(r[k])) for r in rows[1:] for k in ("loss", "val_loss", "nme", "val_nme"))
    assert float(rows[0]["val_nme"]) > 0 and rows[0]["loss"] == ""
    state = json.loads((out / "run_state.json").read_text())
    assert state["completed_epochs"] == 2 and state["optimizer_iterations"] == 4
    assert json.loads((out / "config.json").read_text())["train"]["model_options"] == {"width": 0.25}
    model = keras.saving.load_model(out / "epoch_0002.keras")
    assert int(model.optimizer.iterations) == 4, "checkpoints carry the optimizer state"
    assert model.output_shape == (None, 256, 256, 3)
    with open(out / "nme.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def _wait_for_epochs(proc: subprocess.Popen, state_path: Path, more_than: int, timeout: float = 400) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"training exited early (rc {proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
        if state_path.exists():
            try:
                done = json.loads(state_path.read_text())["completed_epochs"]
            except (json.JSONDecodeError, KeyError):
                done = 0
            if done > more_than:
                return done
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("training made no progress in time")


def _kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_resume_after_kill9_continues_from_the_right_epoch(toy_hdf5_dir, tiny_model, tmp_path, capsys):
    from prnet_keras.cli.train_model import main

    run = tmp_path / "run"
    args = ["--hdf5dir", str(toy_hdf5_dir), "--model", str(tiny_model), "--epochs", "1000", "--batchsize", "4",
            "--steps-per-epoch", "1", "--validation-steps", "1", "--keep-checkpoints", "2", "--output", str(run),
            "--quiet"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(ROOT / "train_model.py"), *args]
    state_path = run / "run_state.json"

    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_epochs(first, state_path, 0)
    _kill9(first)
    k = json.loads(state_path.read_text())["completed_epochs"]
    config_before = (run / "config.json").read_text()

    second = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_epochs(second, state_path, k + 1)
    _kill9(second)
    assert f"resuming after epoch {k}" in second.stderr.read().decode()
    state = json.loads(state_path.read_text())
    k2 = state["completed_epochs"]
    assert [h["epoch"] for h in state["history"]] == list(range(0, k2 + 1)), "no epoch lost or repeated"
    assert [r["start_epoch"] for r in state["runs"]] == [0, k]
    assert state["optimizer_iterations"] == k2, "optimizer state continued (1 step per epoch)"
    assert (run / "config.json").read_text() == config_before, "identical configuration recorded"
    rows = list(csv.DictReader((run / "training_log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(0, k2 + 1))
    # keep=2, plus at most one not yet pruned when the kill came right after the state write
    assert len(list(run.glob("epoch_*.keras"))) <= 3

    # Different arguments are refused without --force ...
    capsys.readouterr()
    assert main(args[:-1] + ["--learningrate", "0.01", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "train.learningrate" in err and "--force" in err and err.count("\n") == 1
    # ... and continue from the recorded epoch with --force.
    assert main([a if a != "1000" else str(k2 + 1) for a in args] + ["--force"]) == 0
    state = json.loads(state_path.read_text())
    assert state["completed_epochs"] == k2 + 1 and [r["start_epoch"] for r in state["runs"]] == [0, k, k2]
    assert len(list(run.glob("epoch_*.keras"))) == 2
    assert main(["--resume", "--hdf5dir", str(toy_hdf5_dir), "--output", str(tmp_path / "empty")]) == 2
    assert "holds no completed epoch" in capsys.readouterr().err


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    from prnet_keras.cli.train_model import main

    assert main(["--hdf5dir", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --hdf5dir") and err.count("\n") == 1
    assert main(["--train", str(tmp_path / "x.hdf5"), "--output", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err


def test_precision_policy_is_restored_and_distribution_plan_on_cpu():
    import keras

    from prnet_keras.train.distribute import plan_distribution
    from prnet_keras.train.trainer import precision_policy

    before = keras.config.dtype_policy().name
    with precision_policy("bf16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == before
    with pytest.raises(RuntimeError):
        with precision_policy("fp16"):
            raise RuntimeError("boom")
    assert keras.config.dtype_policy().name == before
    assert plan_distribution("off").kind == "single"
    plan = plan_distribution("auto")
    assert plan.replicas >= 1 and plan.kind in ("single", "mirrored", "multi_worker", "jax_data_parallel")
    with plan.scope():
        pass


def test_make_datasets_with_yaw_balanced_weights(toy_hdf5_dir, tmp_path):
    from prnet_keras.train.trainer import make_datasets

    cfg = resolve_config({"train": {"hdf5dir": str(toy_hdf5_dir), "batchsize": 4, "sample_weights": "yaw_balanced",
                                    "output": str(tmp_path / "r")}, "augment": {"rotation": False}})
    train_ds, val_ds = make_datasets(cfg, epoch=3)
    assert train_ds.epoch == 3 and not train_ds.augment.rotation and train_ds.augment.scale
    assert train_ds.sample_weight.shape == (16,) and train_ds.sample_weight.mean() == pytest.approx(1.0)
    assert len(train_ds[0]) == 3
    assert val_ds.mode == "val" and val_ds.n_samples == 6


def test_set_bn_momentum_reaches_nested_layers():
    import keras

    from prnet_keras.train.trainer import set_bn_momentum

    inner = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), keras.layers.BatchNormalization()])
    inp = keras.Input((8,))
    model = keras.Model(inp, keras.layers.BatchNormalization()(inner(inp)))
    assert set_bn_momentum(model, None) == 0
    assert set_bn_momentum(model, 0.9) == 2
    assert inner.layers[-1].momentum == 0.9


def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(toy_hdf5_dir, tiny_dropout_model, tmp_path):
    """Data order, augmentation, dropout draws and optimizer state all continue exactly."""
    import keras

    from prnet_keras.train.trainer import train

    def run(out, epochs, **extra):
        return train({"train": {"train_files": [str(toy_hdf5_dir / "train.hdf5")], "model": str(tiny_dropout_model),
                                "batchsize": 4, "epochs": epochs, "steps_per_epoch": 2, "learningrate": 0.01,
                                "output": str(out), "verbose": 0, **extra}})

    whole = run(tmp_path / "whole", 2)
    run(tmp_path / "parts", 1)
    parts = run(tmp_path / "parts", 2, force=True)  # only --epochs differs
    a, b = (json.loads((r / "run_state.json").read_text()) for r in (whole, parts))
    assert [r["start_epoch"] for r in b["runs"]] == [0, 1]
    assert b["rng_state"], "the dropout layer's seed generator is recorded"
    assert [s for _, s in b["rng_state"]] == [s for _, s in a["rng_state"]], "dropout draws continued"

    def logged(row: dict) -> dict:
        return {k: v for k, v in row.items() if k != "epoch_time_s"}

    assert [logged(r) for r in a["history"]] == [logged(r) for r in b["history"]]
    wa, wb = (keras.saving.load_model(r / "epoch_0002.keras").get_weights() for r in (whole, parts))
    for x, y in zip(wa, wb):
        np.testing.assert_array_equal(x, y)


def test_augmentation_on_the_accelerator_trains_and_saves_the_plain_network(toy_hdf5_dir, tiny_model, tmp_path):
    import keras

    from prnet_keras.train.trainer import train

    out = train({"train": {"hdf5dir": str(toy_hdf5_dir), "model": str(tiny_model), "batchsize": 4, "epochs": 2,
                           "steps_per_epoch": 2, "augment_on_device": True, "sample_weights": "yaw_balanced",
                           "output": str(tmp_path / "run"), "verbose": 0}})
    state = json.loads((out / "run_state.json").read_text())
    assert state["completed_epochs"] == 2 and state["optimizer_iterations"] == 4
    assert all(np.isfinite(row[k]) for row in state["history"][1:] for k in ("loss", "nme", "val_loss"))
    model = keras.saving.load_model(out / "best_nme.keras")
    assert model.input_shape == (None, 256, 256, 3) and model.output_shape == (None, 256, 256, 3)
    assert int(model.optimizer.iterations) > 0
