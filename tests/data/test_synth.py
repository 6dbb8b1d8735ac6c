"""Synthetic 300W-LP / AFLW2000-3D generator (issue 3 §1)."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from prnet_keras.data import synth_render as sr
from prnet_keras.data.synth import SUBSETS, generate_dataset, mat_bytes, model_fingerprint
from prnet_keras.errors import InputError
from prnet_keras.geometry import pose_vertices, rasterize
from prnet_keras.geometry.synthetic import build_synthetic_model

# Keys, shapes, dtypes and key order of the real files (checked against the reference samples).
SPEC_300WLP = {
    "pt2d": ((2, 68), np.float64), "roi": ((1, 4), np.int16), "Illum_Para": ((1, 10), np.float64),
    "Color_Para": ((1, 7), np.float32), "Tex_Para": ((199, 1), np.float64), "Shape_Para": ((199, 1), np.float64),
    "Exp_Para": ((29, 1), np.float64), "Pose_Para": ((1, 7), np.float32),
}
SPEC_AFLW = {
    "pt2d": ((2, 21), np.float64), "Illum_Para": ((1, 10), np.float64), "Color_Para": ((1, 7), np.float32),
    "Tex_Para": ((199, 1), np.float64), "Shape_Para": ((199, 1), np.float64), "Exp_Para": ((29, 1), np.float64),
    "Pose_Para": ((1, 7), np.float32), "roi": ((1, 4), np.int16), "pt3d_68": ((3, 68), np.float32),
}


def _load(path: Path) -> dict:
    return {k: v for k, v in scipy.io.loadmat(str(path)).items() if not k.startswith("__")}


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def model():
    return build_synthetic_model(0)


def _check_spec(mat: dict, spec: dict, name: str) -> None:
    assert list(mat) == list(spec), name
    for key, (shape, dtype) in spec.items():
        assert mat[key].shape == shape and mat[key].dtype == dtype, (name, key, mat[key].shape, mat[key].dtype)
        assert np.all(np.isfinite(mat[key])), (name, key)


def test_files_match_the_hard_coded_spec(synthetic_aflw_dir, synthetic_300wlp_dir):
    aflw = sorted(synthetic_aflw_dir.glob("*.mat"))
    assert [p.stem for p in aflw] == [f"image{i:05d}" for i in range(1, 13)]
    assert all(p.with_suffix(".jpg").exists() for p in aflw)
    for p in aflw:
        _check_spec(_load(p), SPEC_AFLW, p.name)
    lp = sorted(synthetic_300wlp_dir.rglob("*.mat"))
    assert len(lp) == 16
    assert {p.parent.name for p in lp} == set(SUBSETS) | {f"{s}_Flip" for s in SUBSETS}
    pattern = re.compile(r"^(AFW|HELEN)_\d+_1_\d$|^IBUG_image_\d{3}_1_\d$|^LFPW_image_train_\d{4}_\d$")
    for p in lp:
        assert pattern.match(p.stem), p.stem
        assert p.stem.split("_")[0] == p.parent.name.split("_")[0]
        assert p.with_suffix(".jpg").exists()
        _check_spec(_load(p), SPEC_300WLP, p.name)
    img = _rgb(lp[0].with_suffix(".jpg"))
    assert img.shape == (450, 450, 3) and img.dtype == np.uint8


def test_files_match_the_real_samples(reference_data, synthetic_aflw_dir, synthetic_300wlp_dir):
    pairs = [(reference_data / "aflw2000-3d" / "image00050.mat", synthetic_aflw_dir / "image00001.mat"),
             (reference_data / "300w-lp" / "IBUG_image_008_1_0.mat", next(synthetic_300wlp_dir.glob("IBUG/*.mat")))]
    for real_path, ours_path in pairs:
        real, ours = _load(real_path), _load(ours_path)
        assert list(ours) == list(real), ours_path
        for key in real:
            assert (ours[key].shape, ours[key].dtype) == (real[key].shape, real[key].dtype), (ours_path.name, key)
        assert _rgb(real_path.with_suffix(".jpg")).shape == _rgb(ours_path.with_suffix(".jpg")).shape
        # Real-like magnitudes: face scale s and identity coefficients of the same order.
        assert 0.5 < ours["Pose_Para"][0, 6] / real["Pose_Para"][0, 6] < 2.0
        assert 0.1 < np.abs(ours["Shape_Para"]).max() / np.abs(real["Shape_Para"]).max() < 10


def test_pt3d_68_is_the_posed_model_and_lies_on_the_face(model, synthetic_aflw_dir):
    inside = total = 0
    for p in sorted(synthetic_aflw_dir.glob("*.mat")):
        mat = _load(p)
        v = pose_vertices(model.vertices(mat["Shape_Para"], mat["Exp_Para"]), mat["Pose_Para"], 450)
        np.testing.assert_allclose(v[model.kpt_ind].T, mat["pt3d_68"], atol=1e-3)
        _, _, tri_index = rasterize(v, model.all_triangles, np.ones((len(v), 1)), 450, 450)
        xy = np.rint(mat["pt3d_68"][:2].T).astype(int)
        ok = (xy >= 0).all(1) & (xy < 450).all(1)
        assert ok.mean() > 0.9
        inside += int((tri_index[xy[ok, 1], xy[ok, 0]] >= 0).sum())
        total += int(ok.sum())
        # AFLW 21 points: visible ones are 68-point landmarks, invisible ones are (-1, h + 2).
        pt2d = mat["pt2d"]
        hidden = pt2d[0] == -1
        assert np.all(pt2d[1, hidden] == 452)
        assert np.all((pt2d[:, ~hidden] >= 0) & (pt2d[:, ~hidden] < 450))
    assert inside / total > 0.97


def test_image_shows_the_face_where_the_parameters_put_it(model, synthetic_aflw_dir):
    """The JPEG differs from a face-free background exactly where the model renders (no occluder case)."""
    mat_path = synthetic_aflw_dir / "image00001.mat"
    mat = _load(mat_path)
    v = pose_vertices(model.vertices(mat["Shape_Para"], mat["Exp_Para"]), mat["Pose_Para"], 450)
    face, coverage, _ = sr.shade_face(model, sr.FaceParams(mat["Shape_Para"].ravel(), mat["Exp_Para"].ravel(),
                                                           mat["Tex_Para"].ravel(), mat["Pose_Para"],
                                                           mat["Color_Para"], mat["Illum_Para"]), v, 450)
    img = _rgb(mat_path.with_suffix(".jpg")).astype(np.float32) / 255
    core = cv2.erode((coverage > 0).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    err = np.abs(img[core] - face[core]).mean(1)
    assert np.median(err) < 0.08  # mostly the rendered face (an occluder may cover part of it)


def test_flip_twin_is_the_mirror(model, synthetic_300wlp_dir):
    originals = sorted(p for s in SUBSETS for p in (synthetic_300wlp_dir / s).glob("*.mat"))
    assert len(originals) == 8
    for orig in originals:
        flip = orig.parent.with_name(orig.parent.name + "_Flip") / orig.name
        a, b = _load(orig), _load(flip)
        ia, ib = _rgb(orig.with_suffix(".jpg")).astype(float), _rgb(flip.with_suffix(".jpg")).astype(float)
        # Same pixels mirrored: equal up to JPEG noise (smoothed away), unlike the unmirrored pair.
        ia, ib = cv2.GaussianBlur(ia, (7, 7), 0), cv2.GaussianBlur(ib, (7, 7), 0)
        assert np.abs(ia[:, ::-1] - ib).mean() < 2.0 < np.abs(ia - ib).mean()
        for key in ("Shape_Para", "Exp_Para", "Tex_Para", "Color_Para"):
            np.testing.assert_array_equal(a[key], b[key])
        pa, pb = a["Pose_Para"][0], b["Pose_Para"][0]
        assert pb[0] == pa[0] and pb[1] == -pa[1] and pb[2] == -pa[2] and pb[6] == pa[6]
        assert pb[3] == pytest.approx(449 - pa[3], abs=1e-3)
        np.testing.assert_allclose(b["pt2d"][0], 449 - a["pt2d"][0, sr.FLIP68], atol=1e-6)
        np.testing.assert_allclose(b["pt2d"][1], a["pt2d"][1, sr.FLIP68], atol=1e-6)
        # The mirrored parameters put the (symmetric) model exactly on the mirrored landmarks.
        vb = pose_vertices(model.vertices(b["Shape_Para"], b["Exp_Para"]), b["Pose_Para"], 450)
        np.testing.assert_allclose(vb[model.kpt_ind, :2].T, b["pt2d"], atol=0.05)


def test_pose_ranges_and_framing(model):
    rng = np.random.default_rng(7)
    yaws = []
    for _ in range(60):
        sp, ep, _ = sr.sample_identity(model, rng)
        pose, posed = sr.sample_pose(model, sp, ep, rng, 450, 0.5)
        pitch, yaw, roll = np.degrees(pose[0, :3])
        assert abs(pitch) <= 30.001 and abs(roll) <= 30.001 and abs(yaw) <= 90.001
        yaws.append(yaw)
        k = posed[model.kpt_ind, :2]
        assert k.min() >= 0 and k.max() <= 449
        assert 0.9e-3 < pose[0, 6] < 2.2e-3  # real 300W-LP / AFLW scales
    yaws = np.abs(yaws)
    assert yaws.max() > 60 and 0.25 < np.mean(yaws <= 30) < 0.75
    for _ in range(20):
        sp, ep, _ = sr.sample_identity(model, rng)
        assert abs(np.degrees(sr.sample_pose(model, sp, ep, rng, 450, 1.0)[0][0, 1])) <= 30


def test_deterministic_bytes_for_any_worker_count(tmp_path):
    a = generate_dataset(tmp_path / "a", layout="300wlp", count=4, seed=5, workers=1)
    b = generate_dataset(tmp_path / "b", layout="300wlp", count=4, seed=5, workers=2)
    c = generate_dataset(tmp_path / "c", layout="300wlp", count=2, seed=6, workers=1)
    assert [p.relative_to(tmp_path / "a") for p in a] == [p.relative_to(tmp_path / "b") for p in b]
    for pa, pb in zip(a, b):
        assert pa.read_bytes() == pb.read_bytes(), pa.name
        assert pa.with_suffix(".mat").read_bytes() == pb.with_suffix(".mat").read_bytes()
    assert a[0].read_bytes() != c[0].read_bytes()


def test_info_file_records_settings_and_model(synthetic_300wlp_dir, model):
    import json

    info = json.loads((synthetic_300wlp_dir / "synth_info.json").read_text())
    assert (info["layout"], info["count"], info["seed"], info["bfm"]) == ("300wlp", 16, 1, "synthetic")
    assert info["model_fingerprint"] == model_fingerprint(model)
    assert model_fingerprint(build_synthetic_model(1)) != model_fingerprint(model)


def test_mat_header_has_no_timestamp():
    data = mat_bytes({"x": np.zeros((1, 2))})
    assert data[:116].startswith(b"MATLAB 5.0 MAT-file") and b"reproducible" in data[:116]


def test_occluders_can_be_switched_off(tmp_path, model):
    (path,) = generate_dataset(tmp_path, layout="aflw2000", count=1, seed=3, occluders=False)
    (with_occ,) = generate_dataset(tmp_path / "o", layout="aflw2000", count=1, seed=3, occluder_probability=1.0)
    diff = np.abs(_rgb(path).astype(float) - _rgb(with_occ).astype(float)).mean(2) > 40
    assert diff.sum() > 200  # the occluder changed a visible patch of the image
    pose = _load(path.with_suffix(".mat"))["Pose_Para"].tolist()
    assert pose == _load(with_occ.with_suffix(".mat"))["Pose_Para"].tolist()


@pytest.mark.parametrize("kwargs,match", [
    ({"layout": "lfw"}, "layout"), ({"count": 0}, "count"), ({"layout": "300wlp", "count": 3}, "even"),
    ({"workers": 0}, "workers"), ({"seed": -1}, "seed"), ({"near_frontal_fraction": 1.5}, "near_frontal"),
    ({"bfm": "nonexistent.txt"}, "bfm"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    args = {"layout": "aflw2000", "count": 2, **kwargs}
    with pytest.raises(InputError, match=match):
        generate_dataset(tmp_path / "out", **args)


def test_output_must_be_a_folder(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        generate_dataset(f, count=1)


def test_works_with_the_mean_bfm(reference_data, tmp_path):
    paths = generate_dataset(tmp_path, layout="aflw2000", count=1, seed=0, bfm=reference_data / "bfm-mean")
    mat = _load(paths[0].with_suffix(".mat"))
    _check_spec(mat, SPEC_AFLW, "mean-bfm")
    assert _rgb(paths[0]).std() > 10


def test_generator_does_not_import_tensorflow():
    """Pool workers import this module: it must stay free of TensorFlow (fast spawn, no TF threads)."""
    import subprocess
    import sys

    code = "import sys, prnet_keras.data.synth; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
