"""prnet-evaluate: --config values reach the scoring; a training-mode HDF5 gets one warning line."""

from __future__ import annotations

import json

from prnet_keras.cli.evaluate_model import main


def test_config_file_then_flags(synthetic_val_hdf5, tmp_path, capsys):
    cfg = tmp_path / "eval.json"
    cfg.write_text(json.dumps({"evaluate": {"evalidxs": [0, 1], "normalizer": "interocular", "shiftZ": "mean",
                                            "yaw_bins": [0, 45, 90], "ced_max": 7.5}}))
    out = tmp_path / "a"
    assert main(["--model", "oracle", "--hdf5", str(synthetic_val_hdf5), "--outputdir", str(out), "--config", str(cfg),
                 "--shiftZ", "none", "--limit", "3", "--no-progress", "--gallery", "0"]) == 0
    s = json.loads((out / "summary.json").read_text())["settings"]
    assert s["metrics"] == ["sparse_2d", "sparse_3d"] and s["normalizer"] == "interocular"
    assert s["yaw_bins"] == [0, 45, 90] and s["ced_max"] == 7.5
    assert s["shiftZ"] == "none"  # the flag wins over the file
    assert capsys.readouterr().err == ""  # a validation file: no warning


def test_training_mode_file_warns_on_one_line(synthetic_train_hdf5, tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["--model", "oracle", "--hdf5", str(synthetic_train_hdf5), "--outputdir", str(out), "--evalidxs", "0",
                 "--limit", "2", "--no-progress", "--gallery", "0"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and "--buildmode train" in err[0], err
    assert str(synthetic_train_hdf5) in err[0]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["warnings"]) == 1 and "--buildmode train" in summary["warnings"][0]
    assert "Warning: " in (out / "results.md").read_text()
