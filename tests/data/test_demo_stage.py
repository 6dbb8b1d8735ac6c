"""The quickstart's data stage (cli.demo.stage_data) reuses finished datasets and recovers from
an interrupted run: a synthetic folder without its closing synth_info.json is generated again
(and its HDF5 rebuilt), an unfinished HDF5 build is resumed."""

from __future__ import annotations

import json

from prnet_keras.cli import build_dataset, demo


def test_stage_data_reuses_recovers_and_resumes(tmp_path, monkeypatch, capsys):
    data = demo.stage_data(tmp_path, seed=0, n_train=4, n_val=2, workers=1)
    train, val = data / "train.hdf5", data / "val.hdf5"
    assert train.is_file() and val.is_file()
    info = json.loads((data / "300W_LP" / "synth_info.json").read_text())
    assert (info["layout"], info["count"], info["seed"]) == ("300wlp", 4, 0)
    capsys.readouterr()

    calls: list[list[str]] = []
    real_main = build_dataset.main
    monkeypatch.setattr(build_dataset, "main", lambda argv: calls.append(list(argv)) or real_main(argv))

    demo.stage_data(tmp_path, seed=0, n_train=4, n_val=2, workers=1)  # everything finished: nothing to do
    assert calls == []

    # interrupted while generating: the folder is there, its synth_info.json is not
    (data / "300W_LP" / "synth_info.json").unlink()
    stamp = train.stat().st_mtime_ns
    demo.stage_data(tmp_path, seed=0, n_train=4, n_val=2, workers=1)
    assert "incomplete or was made with other settings: generating it again" in capsys.readouterr().out
    assert [c[0] for c in calls] == ["synth", "--source"] and calls[1][calls[1].index("--out") + 1] == str(train)
    assert train.is_file() and train.stat().st_mtime_ns != stamp and (data / "300W_LP" / "synth_info.json").is_file()
    assert len(list((data / "300W_LP").rglob("*.jpg"))) == 4

    # other settings (--val-images 3) -> the val set is made again
    calls.clear()
    demo.stage_data(tmp_path, seed=0, n_train=4, n_val=3, workers=1)
    assert [c[0] for c in calls] == ["synth", "--source"] and len(list((data / "AFLW2000").rglob("*.jpg"))) == 3

    # interrupted while building the HDF5: the unfinished build is resumed, not refused
    calls.clear()
    val.unlink()
    monkeypatch.setattr(build_dataset, "main", lambda argv: calls.append(list(argv)) or 0)
    (data / "val.hdf5.partial").mkdir()
    demo.stage_data(tmp_path, seed=0, n_train=4, n_val=3, workers=1)
    assert len(calls) == 1 and calls[0][0] == "--source" and "--resume" in calls[0]
