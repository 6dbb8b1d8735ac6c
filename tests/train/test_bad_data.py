"""Training on damaged files: an unreadable or non-finite sample is skipped with a row in the run's
skipped_samples.csv (batches keep their size, labels stay finite); a file without position maps
is one error line, exit 2, and leaves no run folder."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import toy_samples, write_toy_hdf5  # noqa: E402


def test_bad_samples_are_skipped_with_a_row(layout, tmp_path):
    from prnet_keras.train.augment import AugmentConfig
    from prnet_keras.train.dataset import AugmentedDataset

    images, maps = toy_samples(8, seed=5, layout=layout)
    maps[2] = np.nan
    path = tmp_path / "train.hdf5"
    write_toy_hdf5(path, images, maps, layout)
    with h5py.File(path, "r+") as f:
        f["crop"][5] = np.frombuffer(b"\xff\xd8 not a jpeg", np.uint8)  # an undecodable crop
    log = tmp_path / "skipped_samples.csv"
    for mode in ("train", "val"):
        ds = AugmentedDataset(path, batch_size=4, mode=mode, seed=0, skip_log=log, augment=AugmentConfig.disabled())
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape[0] == 4 and np.isfinite(y).all() and np.isfinite(x).all()
        assert set(ds.skipped) == {2, 5}
    rows = list(csv.reader(log.open()))
    assert sorted(r[0] for r in rows) == ["toy0002", "toy0002", "toy0005", "toy0005"]  # once per dataset object
    reasons = {r[0]: r[1] for r in rows}
    assert "NaN" in reasons["toy0002"] and "unreadable" in reasons["toy0005"]


def test_file_without_position_maps_is_one_error_line_and_writes_nothing(toy_hdf5_dir, tmp_path, capsys):
    from prnet_keras.cli.train_model import main

    bad = tmp_path / "data"
    bad.mkdir()
    shutil.copy(toy_hdf5_dir / "train.hdf5", bad / "train.hdf5")
    with h5py.File(bad / "train.hdf5", "r+") as f:
        del f["position_map"]
    run = tmp_path / "run"
    assert main(["--hdf5dir", str(bad), "--model", "light", "--epochs", "1", "--output", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no dataset 'position_map'" in err[0], err
    assert not run.exists()
