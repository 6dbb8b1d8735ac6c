"""Readers: listing, pairing, layout detection, folder == zip, and bad-input errors."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
import scipy.io

from prnet_keras.data.sources import (
    decode_image, detect_layout, list_samples, load_mat_bytes, parse_fit, read_sample, read_sample_bytes,
)
from prnet_keras.errors import InputError


def test_folder_listing_pairs_and_names(tiny_300wlp, tiny_aflw):
    refs = list_samples(tiny_300wlp)
    names = [r.name for r in refs]
    assert names == sorted(names) and len(refs) == 16
    assert {n.split("/")[0] for n in names} == {"AFW", "AFW_Flip", "HELEN", "HELEN_Flip", "IBUG", "IBUG_Flip",
                                                 "LFPW", "LFPW_Flip"}
    assert all(r.mat_path and r.mat_path.endswith(".mat") for r in refs)
    assert detect_layout(tiny_300wlp) == "300wlp"
    assert detect_layout(tiny_aflw) == "aflw2000"
    assert [r.name for r in list_samples(tiny_aflw)] == [f"image{i:05d}" for i in range(1, 9)]


def test_zip_equals_folder_and_strays_ignored(tiny_300wlp, tmp_path, datagen):
    make_image, zip_folder = datagen.make_image, datagen.zip_folder
    folder = tmp_path / "300W_LP"
    shutil.copytree(tiny_300wlp, folder)
    # Noise a real download has: landmarks/, a stray readme, a .mat without image,
    # hidden files, and one image without its .mat (reported, not dropped silently).
    (folder / "landmarks" / "AFW").mkdir(parents=True)
    scipy.io.savemat(str(folder / "landmarks" / "AFW" / "AFW_1000_1_0_pts.mat"), {"pts_2d": np.zeros((68, 2))})
    (folder / "landmarks" / "AFW" / "x.jpg").write_bytes(make_image(np.random.default_rng(0)))
    (folder / "readme.txt").write_text("hello")
    (folder / "AFW" / "._AFW_1000_1_0.jpg").write_bytes(b"junk")
    scipy.io.savemat(str(folder / "AFW" / "orphan.mat"), {"a": 1})
    (folder / "HELEN" / "HELEN_9999_1_0.jpg").write_bytes(make_image(np.random.default_rng(1)))
    z = zip_folder(folder, tmp_path / "300W-LP.zip", "300W_LP")
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr("__MACOSX/300W_LP/._x.jpg", b"junk")
    from_dir, from_zip = list_samples(folder), list_samples(z)
    assert [r.name for r in from_dir] == [r.name for r in from_zip]
    assert [r.relpath for r in from_dir] == [r.relpath for r in from_zip]
    assert len(from_dir) == 17
    orphan = [r for r in from_zip if r.mat_path is None]
    assert [r.name for r in orphan] == ["HELEN/HELEN_9999_1_0"]
    assert detect_layout(z) == "300wlp"
    a, b = read_sample_bytes(from_dir[0]), read_sample_bytes(from_zip[0])
    assert a == b
    with pytest.raises(InputError, match="without .mat"):
        read_sample(orphan[0])


def test_single_subset_keeps_its_folder_in_names(tiny_300wlp):
    refs = list_samples(tiny_300wlp / "AFW_Flip", layout="300wlp")
    assert refs and all(r.name.startswith("AFW_Flip/") for r in refs)


def test_read_sample_rgb_and_fit(tiny_aflw):
    ref = list_samples(tiny_aflw)[0]
    image, mat = read_sample(ref)
    assert image.dtype == np.uint8 and image.shape == (200, 200, 3)
    fit = parse_fit(mat, ref.name, 199, 29)
    assert fit.pose_para.shape == (7,) and fit.shape_para.shape == (199,) and fit.exp_para.shape == (29,)
    assert fit.pt3d_68.shape == (68, 3) and fit.pt2d.shape == (68, 2)
    np.testing.assert_allclose(fit.pt3d_68, mat["pt3d_68"].T)


def test_decode_image_rejects_truncated_and_non_images(datagen):
    data = datagen.make_image(np.random.default_rng(3))
    assert decode_image(data).shape == (200, 200, 3)
    with pytest.raises(InputError, match="truncated JPEG"):
        decode_image(data[: len(data) // 2], "cut")
    with pytest.raises(InputError, match="cannot decode image"):
        decode_image(b"this is not an image at all", "text")
    with pytest.raises(InputError, match="cannot decode image"):
        decode_image(b"\xff\xd8" + b"\x00" * 100 + b"\xff\xd9", "fake")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("Pose_Para"), "missing key 'Pose_Para'"),
        (lambda m: m.pop("Shape_Para"), "missing key 'Shape_Para'"),
        (lambda m: m.__setitem__("Pose_Para", np.full((1, 7), np.nan, np.float32)), "Pose_Para contains NaN"),
        (lambda m: m.__setitem__("Exp_Para", np.full((29, 1), np.inf)), "Exp_Para contains NaN or inf"),
        (lambda m: m.__setitem__("Pose_Para", np.zeros((1, 6))), "Pose_Para has shape"),
        (lambda m: m.__setitem__("Shape_Para", np.zeros((40, 1))), "Shape_Para has shape"),
        (lambda m: m.__setitem__("pt3d_68", np.zeros((2, 68))), "pt3d_68 has shape"),
        (lambda m: m.__setitem__("Pose_Para", np.array(["abcdefg"])), "Pose_Para"),
    ],
)
def test_parse_fit_names_the_bad_field(tiny_aflw, change, message):
    _, mat = read_sample(list_samples(tiny_aflw)[0])
    change(mat)
    with pytest.raises(InputError, match=message):
        parse_fit(mat, "image00001", 199, 29)


def test_corrupt_mat_and_missing_source(tmp_path):
    with pytest.raises(InputError, match="x.mat: not a MATLAB .mat file"):
        load_mat_bytes(b"MATLAB 5.0 garbage", "x")
    with pytest.raises(InputError, match="no such folder or zip"):
        list_samples(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        list_samples(tmp_path / "empty")
    (tmp_path / "bad.zip").write_bytes(b"PK not really")
    with pytest.raises(InputError, match="not a folder or a readable zip"):
        list_samples(tmp_path / "bad.zip")


def test_reference_samples_layouts(reference_data):
    assert detect_layout(reference_data / "aflw2000-3d") == "aflw2000"
    assert detect_layout(reference_data / "300w-lp") == "300wlp"
    refs = list_samples(reference_data / "300w-lp")
    assert [r.name for r in refs] == ["IBUG_image_008_1_0"]
    image, mat = read_sample(refs[0])
    assert image.shape == (450, 450, 3)
    fit = parse_fit(mat, refs[0].name, 199, 29)
    assert fit.pt3d_68 is None and fit.pt2d.shape == (68, 2)
