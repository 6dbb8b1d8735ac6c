"""The quickstart's own-data stage (cli.demo.stage_fit): fit the synthetic AFLW2000-3D images'
landmarks, build HDF5 from the fitted folder, report the agreement with the true maps; a
finished stage is reused, and redone when the val set was made again."""

from __future__ import annotations

import os

from prnet_keras.cli import build_dataset, demo
from prnet_keras.data import fit_folder


def test_stage_fit_reports_and_reuses(synthetic_aflw_dir, synthetic_val_hdf5, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "AFLW2000").symlink_to(synthetic_aflw_dir, target_is_directory=True)
    (data / "val.hdf5").symlink_to(synthetic_val_hdf5)
    report = demo.stage_fit(data, workers=1)
    out = capsys.readouterr().out
    assert "maps from the fitted parameters vs the true ones (12 samples" in out
    assert report["nme_2d"] < 0.01 and (data / "fitted.hdf5").is_file()
    assert (data / "AFLW2000_fitted" / "skipped.csv").is_file()

    calls = []
    monkeypatch.setattr(build_dataset, "main", lambda argv: calls.append(argv) or 0)
    demo.stage_fit(data, workers=1)  # finished: only the comparison runs
    assert calls == []
    stamp = (synthetic_aflw_dir / "synth_info.json").stat().st_mtime
    os.utime(data / "fitted.hdf5", (stamp - 10, stamp - 10))  # older than the val set: fit again
    monkeypatch.setattr(fit_folder, "compare_maps", lambda a, b: report)  # the fake build wrote nothing
    demo.stage_fit(data, workers=1)
    assert not (data / "AFLW2000_fitted").exists()  # the stale fits were removed first
    assert [c[0] for c in calls] == ["fit", "--source"]
