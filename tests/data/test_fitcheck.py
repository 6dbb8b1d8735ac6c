"""Fits that do not belong to the chosen morphable model stop the build / evaluation with one
``error:`` line naming --bfm; the right model passes (real data: AFLW2000-3D + mean-only BFM)."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import scipy.io

from prnet_keras.cli import build_dataset, evaluate_model
from prnet_keras.data.fitcheck import check_fits_match_model
from prnet_keras.data.sources import list_samples
from prnet_keras.errors import InputError
from prnet_keras.geometry import load_morphable_model


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_real_fits_without_bfm_stop_build_and_evaluation(reference_data, tmp_path, capsys):
    """The classic slip: AFLW2000-3D / 300W-LP with the default (synthetic) model."""
    aflw = reference_data / "aflw2000-3d"
    assert evaluate_model.main(["--model", "oracle", "--datadir", str(aflw), "--outputdir", str(tmp_path / "e"),
                                "--no-progress", "--gallery", "0"]) == 2
    line = _one_error_line(capsys)
    assert "--bfm" in line and "synthetic" in line and "real data" in line
    assert not (tmp_path / "e" / "summary.json").exists()  # stopped before any number was written
    for source in (aflw, reference_data / "300w-lp"):
        assert build_dataset.main(["--source", str(source), "--out", str(tmp_path / "x.hdf5"), "--workers", "1",
                                   "--no-progress"]) == 2
        assert "--bfm" in _one_error_line(capsys)
    assert not (tmp_path / "x.hdf5").exists()


def test_real_fits_with_their_model_pass(reference_data):
    model = load_morphable_model(reference_data / "bfm-mean")
    for name in ("aflw2000-3d", "300w-lp"):
        source = reference_data / name
        check_fits_match_model(source, list_samples(source), model, "bfm-mean")


def test_synthetic_data_with_another_model(synthetic_aflw_dir, tmp_path, capsys):
    """synth_info.json records the generating model: any other --bfm is refused, naming the right one."""
    from prnet_keras.geometry import save_face3d_bfm
    from prnet_keras.geometry.synthetic import build_synthetic_model

    other = tmp_path / "other_BFM.mat"
    save_face3d_bfm(build_synthetic_model(seed=1), other)
    assert build_dataset.main(["--source", str(synthetic_aflw_dir), "--out", str(tmp_path / "x.hdf5"), "--bfm",
                               str(other),
                               "--buildmode", "val", "--workers", "1", "--no-progress"]) == 2
    line = _one_error_line(capsys)
    assert "synth_info.json" in line and line.endswith("pass --bfm synthetic")
    check_fits_match_model(synthetic_aflw_dir, list_samples(synthetic_aflw_dir), load_morphable_model("synthetic"),
                           "synthetic")  # its own model passes


def _copy_without_info(src, dst, edit) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("synth_info.json"))
    for path in sorted(dst.glob("*.mat")):
        mat = {k: v for k, v in scipy.io.loadmat(str(path)).items() if not k.startswith("__")}
        edit(mat)
        scipy.io.savemat(str(path), mat)


def test_wrong_coefficient_counts_and_far_keypoints(synthetic_aflw_dir, tmp_path):
    model = load_morphable_model("synthetic")
    short = tmp_path / "short"
    _copy_without_info(synthetic_aflw_dir, short, lambda m: m.update(Exp_Para=m["Exp_Para"][:10]))
    with pytest.raises(InputError, match=r"Shape_Para/Exp_Para do not have the 199/29 coefficients.*--bfm"):
        check_fits_match_model(short, list_samples(short), model, "synthetic")

    def rescale(mat):  # the fits of some other parameterisation: the posed model lands elsewhere
        pose = np.array(mat["Pose_Para"], np.float64)
        pose[0, 6] *= 1.6
        mat["Pose_Para"] = pose.astype(np.float32)

    far = tmp_path / "far"
    _copy_without_info(synthetic_aflw_dir, far, rescale)
    with pytest.raises(InputError, match=r"% \(NME\) from the synthetic model's.*--bfm"):
        check_fits_match_model(far, list_samples(far), model, "synthetic")
    custom = dataclasses.replace(model, name="custom")  # any other model: the 20 % rule
    with pytest.raises(InputError, match=r"--bfm custom\.mat \('custom'\) puts the fits' 68 keypoints"):
        check_fits_match_model(far, list_samples(far), custom, "custom.mat")
    check_fits_match_model(synthetic_aflw_dir, list_samples(synthetic_aflw_dir), custom, "custom.mat")
