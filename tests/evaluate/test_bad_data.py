"""Evaluation of damaged files: a sample with NaN values is a failed row (the others are scored);
a file without the datasets evaluation needs is one error line and writes nothing."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np

from prnet_keras.cli.evaluate_model import main


def _poisoned_copy(src, dst, row: int):
    """A copy of an HDF5 file whose ``row``-th position map is all NaN (written through h5py's filters)."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        pm = f["position_map"]
        pm[row] = np.full(pm.shape[1:], np.nan, pm.dtype)
    return dst


def test_nan_sample_is_a_failed_row_not_the_end(synthetic_val_hdf5, tmp_path, capsys):
    bad = _poisoned_copy(synthetic_val_hdf5, tmp_path / "nan.hdf5", row=3)
    out = tmp_path / "eval"
    rc = main(["--model", "oracle", "--hdf5", str(bad), "--outputdir", str(out), "--icp", "scipy",
               "--no-progress", "--gallery", "0", "--limit", "6", "--batchsize", "4"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scored"] == 5 and len(summary["failed"]) == 1
    assert "position_map holds NaN" in summary["failed"][0]["reason"]
    assert all(np.isfinite(m["mean_all"]) for m in summary["metrics"].values())


def test_file_without_position_map_is_one_error_line(synthetic_val_hdf5, tmp_path, capsys):
    bad = tmp_path / "nomap.hdf5"
    shutil.copy(synthetic_val_hdf5, bad)
    with h5py.File(bad, "r+") as f:
        del f["position_map"]
    out = tmp_path / "eval"
    assert main(["--model", "oracle", "--hdf5", str(bad), "--outputdir", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no dataset 'position_map'" in err[0], err
    assert not out.exists()
