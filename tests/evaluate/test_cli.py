"""evaluate_model.py: flags, outputs, one-line errors with exit status 2, compare-only mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from prnet_keras.cli.evaluate_model import main

ROOT = Path(__file__).resolve().parents[2]


def test_cli_oracle_then_compare(synthetic_val_hdf5, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["--model", "oracle", "--hdf5", str(synthetic_val_hdf5), "--outputdir", str(a), "--evalidxs", "0", "2",
                 "--shiftZ", "mean", "--normalizer", "diagonal", "--no-progress", "--gallery", "0"]) == 0
    out = capsys.readouterr().out
    assert "sparse_2d" in out and "dense_2d" in out
    summary = json.loads((a / "summary.json").read_text())
    assert summary["settings"]["normalizer"] == "diagonal" and summary["settings"]["shiftZ"] == "mean"
    assert list(summary["metrics"]) == ["sparse_2d", "dense_2d"]
    assert main(["--modeldir", "oracle", "--hdf5", str(synthetic_val_hdf5), "--outputdir", str(b), "--evalidxs", "0",
                 "--limit", "4", "--no-progress", "--gallery", "0"]) == 0
    assert main(["--compare", str(a), str(b), "--outputdir", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "ced_sparse_2d.png").exists()
    assert "b mean" in (tmp_path / "cmp" / "results.md").read_text()


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    cases = [
        ["--model", "oracle", "--hdf5", str(tmp_path / "missing.hdf5"), "--outputdir", str(tmp_path / "o")],
        ["--model", str(tmp_path / "nope.keras"), "--datadir", str(tmp_path), "--outputdir", str(tmp_path / "o")],
        ["--model", "oracle", "--outputdir", str(tmp_path / "o")],
        ["--compare", str(tmp_path), "--outputdir", str(tmp_path / "o")],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err


def test_wrapper_script_help():
    r = subprocess.run([sys.executable, str(ROOT / "evaluate_model.py"), "--help"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0 and "--evalidxs" in r.stdout and "--shiftZ" in r.stdout
