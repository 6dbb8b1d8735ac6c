"""The seed's jpg + npy list format: HDF5 -> export-list -> HDF5 round trip, and list lines that
point to missing files, maps of the wrong shape or crops that are not 256x256 are skipped."""

from __future__ import annotations

import csv

import cv2
import h5py
import numpy as np
import pytest

from prnet_keras.cli.build_dataset import main
from prnet_keras.data.hdf5 import PositionMapDataset
from prnet_keras.data.listfmt import read_list


@pytest.fixture(scope="module")
def layout_file(synthetic_val_hdf5, tmp_path_factory):
    path = tmp_path_factory.mktemp("layout") / "uv_layout.npz"
    ds = PositionMapDataset(synthetic_val_hdf5)
    ds.layout.save(path)
    ds.close()
    return path


@pytest.mark.parametrize("crop_format", ["jpeg", "raw"])
def test_round_trip_is_equal_in_values(synthetic_val_hdf5, layout_file, tmp_path, capsys, crop_format):
    source = synthetic_val_hdf5
    if crop_format == "raw":  # a raw-crop file exports lossless PNGs
        source = tmp_path / "raw.hdf5"
        assert main(["--source", str(tmp_path / "lst0"), "--out", str(source)]) == 2  # no list there yet
        capsys.readouterr()
        assert main(["export-list", "--hdf5", str(synthetic_val_hdf5), "--out", str(tmp_path / "lst0")]) == 0
        assert main(["--source", str(tmp_path / "lst0"), "--out", str(source), "--uv-data", str(layout_file),
                     "--crop-format", "raw", "--no-progress", "--workers", "1"]) == 0
    folder = tmp_path / "list"
    assert main(["export-list", "--hdf5", str(source), "--out", str(folder)]) == 0
    assert "wrote 12 samples" in capsys.readouterr().out
    lines = (folder / "trainDataLabel.txt").read_text().splitlines()
    ext = ".jpg" if crop_format == "jpeg" else ".png"
    assert lines[0] == f"image00001{ext} image00001.npy" and len(lines) == 12
    assert np.load(folder / "image00001.npy").shape == (256, 256, 3)

    back = tmp_path / "back.hdf5"
    assert (folder / "uv_layout.npz").read_bytes() == layout_file.read_bytes()  # the file's layout, for --uv-data
    assert main(["--source", str(folder / "trainDataLabel.txt"), "--out", str(back), "--uv-data",
                 str(folder / "uv_layout.npz"),
                 "--crop-format", crop_format, "--workers", "2", "--no-progress"]) == 0, capsys.readouterr().err
    with h5py.File(source, "r") as fa, h5py.File(back, "r") as fb:
        assert list(fa["name"].asstr()[:]) == list(fb["name"].asstr()[:])
        for i in range(len(fa["name"])):
            np.testing.assert_array_equal(fa["position_map"][i], fb["position_map"][i])
            if crop_format == "jpeg":  # the JPEG bytes travel unchanged
                assert fa["crop"][i].tobytes() == fb["crop"][i].tobytes()
            else:
                np.testing.assert_array_equal(fa["crop"][i], fb["crop"][i])
        assert fb.attrs["source_layout"] == "list" and fb.attrs["layout_hash"] == fa.attrs["layout_hash"]
    # what the list cannot carry is derived from the map: landmarks and a pose
    ds_a, ds_b = PositionMapDataset(source), PositionMapDataset(back)
    a, b = ds_a[3], ds_b[3]
    np.testing.assert_array_equal(b["kpt68"], ds_a.layout.keypoints_from_map(a["position_map"]))  # crop frame
    np.testing.assert_array_equal(b["transform"], np.eye(3))
    assert abs(b["yaw"] - a["yaw"]) < 3.0  # the map's pose vs the fit's Pose_Para
    ds_a.close()
    ds_b.close()


def test_bad_list_lines_are_skipped_with_reasons(synthetic_val_hdf5, layout_file, tmp_path, capsys):
    folder = tmp_path / "list"
    assert main(["export-list", "--hdf5", str(synthetic_val_hdf5), "--out", str(folder)]) == 0
    np.save(folder / "image00002.npy", np.zeros((128, 128, 3), np.float32))  # wrong map shape
    big = cv2.imread(str(folder / "image00003.jpg"))
    cv2.imwrite(str(folder / "image00003.jpg"), cv2.resize(big, (300, 300)))  # not a 256 crop
    (folder / "image00004.npy").unlink()  # missing map
    (folder / "image00005.jpg").unlink()  # missing crop
    text = (folder / "trainDataLabel.txt").read_text()
    (folder / "trainDataLabel.txt").write_text(text + "only_one_field.jpg\n" + "image00001.jpg image00001.npy\n")
    entries = read_list(folder / "trainDataLabel.txt")
    assert entries[0].image_path == str((folder / "image00001.jpg").resolve())
    out = tmp_path / "bad.hdf5"
    assert main(["--source", str(folder), "--out", str(out), "--uv-data", str(layout_file), "--workers", "1",
                 "--no-progress"]) == 3
    assert "wrote 8 samples" in capsys.readouterr().out
    with open(tmp_path / "bad.skipped.csv", newline="") as f:
        reasons = {r["name"]: r["reason"] for r in csv.DictReader(f)}
    assert "position map is float32 (128, 128, 3), expected a numeric (256, 256, 3) array" in reasons["image00002"]
    assert "crop is 300x300, expected 256x256" in reasons["image00003"]
    assert "position map not found" in reasons["image00004"]
    assert "crop image not found" in reasons["image00005"]
    assert "expected 'IMAGE MAP', got 1 fields" in reasons["line 13"]
    assert "duplicate sample name 'image00001'" in reasons["image00001"]

    assert main(["--source", str(folder), "--out", str(tmp_path / "x.hdf5")]) == 2
    assert "a list carries no UV layout; pass --uv-data" in capsys.readouterr().err
    assert main(["--source", str(folder), "--out", str(tmp_path / "x.hdf5"), "--uv-data", str(layout_file),
                 "--store", "raw"]) == 2
    assert "a list holds crops and maps only" in capsys.readouterr().err
