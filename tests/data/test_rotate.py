"""In-plane rotation of samples (300W-LP-Rotate): the rotated fit lands on the rotated image, the
GT map of a rotated pair is the rotated GT map, file names, and the build's --rotate equals
building the rotated files."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from prnet_keras.cli.build_dataset import main
from prnet_keras.data import rotate as rot
from prnet_keras.data.gt import make_ground_truth
from prnet_keras.data.sources import parse_fit
from prnet_keras.errors import InputError
from prnet_keras.geometry import crop_to_image, pose_vertices

ANGLES = [15.0, -30.0, 45.0, -60.0, 90.0]


@pytest.fixture(scope="module")
def sample(synthetic_300wlp_dir):
    from prnet_keras.data.sources import decode_image

    path = sorted((synthetic_300wlp_dir / "IBUG_Flip").glob("*.mat"))[0]
    image = decode_image(path.with_suffix(".jpg").read_bytes())
    return image, scipy.io.loadmat(str(path))


@pytest.mark.parametrize("angle", ANGLES)
def test_rotated_mat_matches_rotated_keypoints_and_maps(synthetic_model, synthetic_layout, sample, angle):
    image, mat = sample
    h, w = image.shape[:2]
    m = rot.rotation_matrix(angle, w, h)
    new = rot.rotate_mat(mat, angle, w, h)
    assert list(new) == list(mat) and all(new[k].dtype == mat[k].dtype for k in new if not k.startswith("__"))
    fit, fit_r = parse_fit(mat), parse_fit(new)
    v = synthetic_model.vertices(fit.shape_para, fit.exp_para)
    kpts = pose_vertices(v[synthetic_model.kpt_ind], fit.pose_para, h)
    kpts_r = pose_vertices(v[synthetic_model.kpt_ind], fit_r.pose_para, h)
    # the model's keypoints under the rotated Pose_Para = the original keypoints rotated
    np.testing.assert_allclose(kpts_r[:, :2], rot.rotate_points(kpts, m)[:, :2], atol=0.01)
    np.testing.assert_allclose(kpts_r[:, 2], kpts[:, 2], atol=0.01)
    np.testing.assert_allclose(new["pt2d"].T, rot.rotate_points(mat["pt2d"].T, m), atol=0.01)
    assert fit_r.pose_para[6] == fit.pose_para[6]  # same scale

    # GT of the rotated pair = the original GT rotated (compared in the image frame)
    gt = make_ground_truth(synthetic_model, synthetic_layout, image, mat)
    gt_r = make_ground_truth(synthetic_model, synthetic_layout, rot.rotate_image(image, angle), new)
    face = synthetic_layout.face_mask
    orig = crop_to_image(gt["position_map"][face], gt["transform"])
    back = crop_to_image(gt_r["position_map"][face], gt_r["transform"])
    np.testing.assert_allclose(back[:, :2], rot.rotate_points(orig, m)[:, :2], atol=0.02)
    z, zr = orig[:, 2], back[:, 2]
    np.testing.assert_allclose(zr - zr.min(), z - z.min(), atol=0.02)
    # the crops show the same face: the rotated crop vs the original image sampled where the
    # rotated crop's pixels come from (two bilinear resamplings apart)
    import cv2

    to_orig = np.vstack([m, [0, 0, 1]])
    full = gt_r["transform"] @ to_orig  # original image -> rotated crop
    direct = cv2.warpAffine(image, full[:2], (256, 256), flags=cv2.INTER_LINEAR)
    inner = np.zeros((256, 256), bool)
    inner[64:192, 64:192] = True
    diff = np.abs(direct.astype(int) - gt_r["crop"].astype(int))[inner]
    assert diff.mean() < 6.0, diff.mean()


def test_angle_names_and_validation():
    assert [rot.angle_suffix(a) for a in (15, -15, 7.5, 0)] == ["_angle_15", "_angle_-15", "_angle_7.5", ""]
    assert rot.parse_angles("15, 30,-15") == [15.0, 30.0, -15.0]
    for bad, match in (("15,x", "comma-separated"), ("15,15", "repeated"), ("200", r"\[-180, 180\]"), ("", "no angle")):
        with pytest.raises(InputError, match=match):
            rot.parse_angles(bad)


def test_rotate_command_and_build_option_agree(synthetic_300wlp_dir, tmp_path, capsys, datagen):
    out = tmp_path / "rotated"
    script = Path(sys.executable).parent / "prnet-build-dataset"  # the console script, two spawn workers
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "prnet_keras.cli.build_dataset"]
    r = datagen.run_command([*cmd, "rotate", "--source", str(synthetic_300wlp_dir), "--out", str(out), "--angles",
                             "0,15,-30", "--limit", "4", "--workers", "2"])
    assert r.returncode == 0, r.stderr
    assert "wrote 12 rotated images" in r.stdout
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert "AFW_Flip/AFW_1000_1_0_angle_15.jpg" in names and "AFW_Flip/AFW_1000_1_0_angle_-30.jpg" in names
    assert "AFW_Flip/AFW_1000_1_0.jpg" in names and len(names) == 12
    orig = synthetic_300wlp_dir / "AFW_Flip" / "AFW_1000_1_0"
    # angle 0: a copy
    assert (out / "AFW_Flip" / "AFW_1000_1_0.mat").read_bytes() == orig.with_suffix(".mat").read_bytes()

    a, b = tmp_path / "from_files.hdf5", tmp_path / "on_the_fly.hdf5"
    assert main(["--source", str(out), "--out", str(a), "--buildmode", "val", "--workers", "1", "--no-progress"]) == 0
    assert main(["--source", str(synthetic_300wlp_dir), "--out", str(b), "--buildmode", "val", "--rotate", "0,15,-30",
                 "--limit", "4", "--workers", "2", "--no-progress"]) == 0
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert sorted(fa["name"].asstr()[:]) == sorted(fb["name"].asstr()[:])
        order_a = np.argsort(fa["name"].asstr()[:])
        order_b = np.argsort(fb["name"].asstr()[:])
        np.testing.assert_allclose(fa["pose_para"][:][order_a], fb["pose_para"][:][order_b], atol=1e-6)
        np.testing.assert_allclose(fa["transform"][:][order_a], fb["transform"][:][order_b], atol=1e-6)
        for i, j in zip(order_a, order_b):
            np.testing.assert_array_equal(fa["position_map"][i], fb["position_map"][j])  # the same fit, same maps
        assert "rotate" in fb.attrs["args"] and "[0.0, 15.0, -30.0]" in fb.attrs["args"]

    assert main(["rotate", "--source", str(synthetic_300wlp_dir), "--out", str(tmp_path / "x"), "--angles",
                 "15,15"]) == 2
    assert "repeated" in capsys.readouterr().err
