"""Builder + reader round trips, both store modes, bad samples, CLI behaviour."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import scipy.io

from prnet_keras.cli.build_dataset import main
from prnet_keras.data.build import build_hdf5
from prnet_keras.data.gt import make_ground_truth, sample_rng
from prnet_keras.data.hdf5 import PositionMapDataset, skipped_entries
from prnet_keras.data.sources import list_samples, read_sample
from prnet_keras.errors import InputError
from prnet_keras.geometry import UVLayout


@pytest.fixture(scope="module")
def built(tiny_300wlp, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("built")
    crops = build_hdf5(tiny_300wlp, out / "crops.hdf5", model=tiny_model, seed=7)
    raw = build_hdf5(tiny_300wlp, out / "raw.hdf5", model=tiny_model, seed=7, store="raw")
    return crops, raw


def test_crops_round_trip(built, tiny_300wlp, tiny_model):
    summary, _ = built
    assert summary.written == 16 and summary.skipped == 0 and summary.exit_code == 0
    ds = PositionMapDataset(summary.out)
    refs = list_samples(tiny_300wlp)
    assert len(ds) == 16 and ds.names == [r.name for r in refs] and ds.store == "crops"
    assert ds.layout == UVLayout.from_model(tiny_model)
    attrs = ds.attrs
    assert attrs["label_scale"] == pytest.approx(281.6) and attrs["buildmode"] == "train"
    assert attrs["model_name"] == tiny_model.name and attrs["layout_hash"] == ds.layout.hash()
    batch = ds.read_batch([5, 2, 5])
    assert batch["image"].shape == (3, 256, 256, 3) and batch["image"].dtype == np.uint8
    assert batch["position_map"].dtype == np.float32 and batch["transform"].shape == (3, 3, 3)
    assert batch["kpt68"].shape == (3, 68, 3) and batch["pose_para"].shape == (3, 7)
    assert batch["yaw"].shape == (3,) and batch["image_size"].tolist() == [[200, 200]] * 3
    assert batch["name"] == [refs[5].name, refs[2].name, refs[5].name]
    np.testing.assert_array_equal(batch["position_map"][0], batch["position_map"][2])
    # Stored values equal a direct GT computation with the per-sample seed (float16 / JPEG).
    image, mat = read_sample(refs[2])
    gt = make_ground_truth(tiny_model, ds.layout, image, mat, rng=sample_rng(7, refs[2].name))
    np.testing.assert_allclose(batch["transform"][1], gt["transform"])
    np.testing.assert_allclose(batch["position_map"][1], gt["position_map"], atol=0.13)
    assert np.abs(batch["image"][1].astype(int) - gt["crop"]).mean() < 3.0
    one = ds[2]
    assert one["name"] == refs[2].name and one["position_map"].shape == (256, 256, 3)
    with pytest.raises(IndexError):
        ds[16]


def test_raw_store_renders_on_the_fly(built, tiny_model):
    crops, raw = built
    dc, dr = PositionMapDataset(crops.out), PositionMapDataset(raw.out, model=tiny_model)
    assert dr.store == "raw" and dr.names == dc.names
    a, b = dc.read_batch([0, 7]), dr.read_batch([0, 7])
    np.testing.assert_allclose(b["position_map"], a["position_map"], atol=0.13)  # stored transform
    np.testing.assert_array_equal(b["transform"], a["transform"])
    assert np.abs(b["image"].astype(int) - a["image"]).mean() < 3.0
    # A fresh perturbation per call with an rng; reproducible from the rng's seed.
    e1 = dr.read_batch([0, 7], rng=np.random.default_rng(1))
    e2 = dr.read_batch([0, 7], rng=np.random.default_rng(2))
    e1b = dr.read_batch([0, 7], rng=np.random.default_rng(1))
    assert not np.allclose(e1["transform"], e2["transform"])
    np.testing.assert_array_equal(e1["position_map"], e1b["position_map"])


def test_raw_store_loads_model_from_its_spec(built):
    _, raw = built
    ds = PositionMapDataset(raw.out)  # model_spec "synthetic" rebuilds the same model
    assert ds.read_batch([1])["position_map"].any()


def test_dataset_survives_fork_and_pickle(built):
    import multiprocessing as mp
    import pickle

    ds = PositionMapDataset(built[0].out)
    first = ds.read_batch([3])["position_map"]
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone.read_batch([3])["position_map"], first)
    with mp.get_context("fork").Pool(2) as pool:
        sums = pool.map_async(_sum_map, [(ds, i) for i in (3, 4)]).get(timeout=300)
    assert sums[0] == pytest.approx(float(first.sum()))


def _sum_map(args):
    ds, i = args
    return float(ds.read_batch([i])["position_map"].sum())


def test_multiple_files_and_mismatch(built, tiny_aflw, tiny_model, tmp_path):
    crops, raw = built
    val = build_hdf5(tiny_aflw, tmp_path / "val.hdf5", model=tiny_model, buildmode="val")
    ds = PositionMapDataset([crops.out, val.out])
    assert len(ds) == 24 and ds.names[16] == "image00001"
    b = ds.read_batch([17, 1])
    assert b["name"] == ["image00002", ds.names[1]]
    with pytest.raises(InputError, match="store"):
        PositionMapDataset([crops.out, raw.out])
    (tmp_path / "junk.hdf5").write_bytes(b"nope")
    with pytest.raises(InputError, match="not a readable HDF5"):
        PositionMapDataset(tmp_path / "junk.hdf5")


def test_zip_build_equals_folder_build(tiny_aflw, tiny_model, tmp_path, datagen):
    z = datagen.zip_folder(tiny_aflw, tmp_path / "AFLW2000-3D.zip", "AFLW2000")
    a = build_hdf5(tiny_aflw, tmp_path / "a.hdf5", model=tiny_model, buildmode="val")
    b = build_hdf5(z, tmp_path / "b.hdf5", model=tiny_model, buildmode="val")
    datagen.assert_same_hdf5(a.out, b.out, ignore_attrs=("shard", "args"))


def _loadmat(path):
    return {k: v for k, v in scipy.io.loadmat(str(path)).items() if not k.startswith("__")}


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels, with (almost) no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _bad_dataset(root, tiny_model, datagen):
    datagen.write_dataset(root, tiny_model, "aflw2000", 14, seed=5)
    jpg = (root / "image00001.jpg").read_bytes()
    (root / "image00001.jpg").write_bytes(jpg[: len(jpg) // 2])  # truncated JPEG
    (root / "image00002.jpg").write_bytes(b"<html>not an image</html>")  # non-image
    mat = _loadmat((root / "image00003.mat"))
    mat.pop("Shape_Para")
    scipy.io.savemat(str(root / "image00003.mat"), mat)  # missing key
    mat = _loadmat((root / "image00004.mat"))
    mat["Pose_Para"][0, 1] = np.nan
    scipy.io.savemat(str(root / "image00004.mat"), mat)  # NaN parameter
    mat = _loadmat((root / "image00005.mat"))
    mat["Exp_Para"] = np.zeros((10, 1))
    scipy.io.savemat(str(root / "image00005.mat"), mat)  # wrong shape
    (root / "image00006.mat").unlink()  # image without .mat
    (root / "image00007.mat").write_bytes(b"garbage")  # unreadable .mat
    mat = _loadmat((root / "image00008.mat"))
    mat["Pose_Para"][0, 6] = 1e30
    mat.pop("pt3d_68")
    scipy.io.savemat(str(root / "image00008.mat"), mat)  # scale 1e30: the face would be everywhere
    (root / "image00009.jpg").write_bytes(b"")  # zero-byte image
    (root / "image00010.jpg").unlink()
    (root / "image00010.png").write_bytes(png_header_only(30_000, 30_000))  # 900 MP declared in 100 bytes
    import cv2

    ok, buf = cv2.imencode(".jpg", np.zeros((200, 200, 3), np.uint8))
    (root / "image00011.jpg").write_bytes(buf.tobytes())  # black photo under a face label
    mat = _loadmat((root / "image00012.mat"))
    mat["Pose_Para"][0, 3] = 1e4
    mat.pop("pt3d_68")
    scipy.io.savemat(str(root / "image00012.mat"), mat)  # translated far outside the image
    return {
        "image00001": "truncated JPEG", "image00002": "cannot decode image", "image00003": "missing key 'Shape_Para'",
        "image00004": "Pose_Para contains NaN", "image00005": "Exp_Para has shape", "image00006": "image without .mat",
        "image00007": "not a MATLAB .mat file", "image00008": "outside the 200x200 image",
        "image00009": "empty image data", "image00010": "more than the limit", "image00011": "crop: blank",
        "image00012": "outside the 200x200 image",
    }


def test_bad_samples_are_skipped_with_reasons(tiny_model, tmp_path, datagen, capsys):
    root = tmp_path / "bad"
    expected = _bad_dataset(root, tiny_model, datagen)
    bfm = tmp_path / "BFM.mat"
    from prnet_keras.geometry import save_face3d_bfm

    save_face3d_bfm(tiny_model, bfm)
    out = tmp_path / "bad.hdf5"
    code = main(["--source", str(root), "--out", str(out), "--bfm", str(bfm), "--workers", "2",
                 "--commit-every", "2", "--no-progress"])
    assert code == 3
    assert "skipped 12" in capsys.readouterr().out
    ds = PositionMapDataset(out)
    assert ds.names == ["image00013", "image00014"]  # never a partial row
    assert np.all(np.isfinite(ds.read_batch([0, 1])["position_map"]))
    rows = list(csv.DictReader(open(out.with_name("bad.skipped.csv"))))
    assert [r["name"] for r in rows] == sorted(expected)
    for r in rows:
        assert expected[r["name"]] in r["reason"], r
        assert r["source_path"] == r["name"] + (".png" if r["name"] == "image00010" else ".jpg")
    assert [s[0] for s in skipped_entries(out)] == sorted(expected)


def test_cli_user_errors_exit_2(tmp_path, capsys, tiny_aflw):
    assert main(["--source", str(tmp_path / "missing"), "--out", str(tmp_path / "x.hdf5")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    out = tmp_path / "y.hdf5"
    out.write_bytes(b"")
    assert main(["--source", str(tiny_aflw), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["--source", str(tiny_aflw), "--out", str(tmp_path / "z.hdf5"), "--shard", "3/2"]) == 2
    assert main(["merge", "--out", str(tmp_path / "m.hdf5"), str(tmp_path / "none.hdf5")]) == 2
    assert "not found" in capsys.readouterr().err


def test_wrapper_script_runs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, str(root / "build_dataset.py"), "--source", str(tmp_path / "nothing"),
                        "--out", str(tmp_path / "o.hdf5")], capture_output=True, text=True, cwd=root, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr


def test_raw_crop_format_is_lossless(tiny_aflw, tiny_model, tmp_path):
    from prnet_keras.data.gt import GroundTruthMaker
    from prnet_keras.data.sources import read_sample

    s = build_hdf5(tiny_aflw, tmp_path / "rawcrop.hdf5", model=tiny_model, buildmode="val", crop_format="raw")
    ds = PositionMapDataset(s.out)
    assert ds.attrs["crop_format"] == "raw"
    ref = list_samples(tiny_aflw)[3]
    image, mat = read_sample(ref)
    maker = GroundTruthMaker(tiny_model, ds.layout)
    gt = maker.make(image, maker.parse(mat))
    np.testing.assert_array_equal(ds[3]["image"], gt["crop"])
