"""End-to-end evaluation: oracle, untrained vs trained tiny model, prediction folders,
unreadable samples, --resume, real AFLW2000-3D samples."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import scipy.io

from prnet_keras.errors import InputError
from prnet_keras.evaluate.metrics import nme, normalizer
from prnet_keras.evaluate.report import METRICS, read_csv
from prnet_keras.evaluate.runner import evaluate
from prnet_keras.evaluate.sources import HDF5Source, _from_maps


def _means(summary):
    return {m: s["mean_all"] for m, s in summary["metrics"].items()}


def test_oracle_on_synthetic_hdf5_is_zero_on_dense(synthetic_val_hdf5, tmp_path):
    s = evaluate("oracle", hdf5=synthetic_val_hdf5, outputdir=tmp_path, evalidxs=[0, 2, 3, 5], progress=False,
                 icp="scipy", gallery=3)
    m = _means(s)
    assert m["dense_2d"] == 0.0 and m["dense_3d"] == 0.0
    assert m["reconstruction_3d"] < 1e-6
    # pt3d_68 vs the map's keypoints: the synthetic data store exact model keypoints -> tiny error
    assert m["sparse_2d"] < 1.0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"per_image.csv", "summary.json", "results.md", "ced_all.png", "ced_sparse_2d.png",
            "worst_sparse_2d.png"} <= names
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["settings"]["metrics"] == ["sparse_2d", "dense_2d", "dense_3d", "reconstruction_3d"]
    assert saved["settings"]["shiftZ"] == "min" and "minimum z" in saved["settings"]["shiftZ_description"]
    assert saved["images"] == saved["scored"] == 12 and saved["failed"] == []


@pytest.mark.slow
def test_trained_tiny_model_beats_untrained(synthetic_val_hdf5, tmp_path, tiny_network_factory):
    src = HDF5Source(synthetic_val_hdf5)
    net = tiny_network_factory(src.layout)
    kw = dict(hdf5=synthetic_val_hdf5, progress=False, gallery=2, limit=6, icp="open3d")
    before = _means(evaluate(net, outputdir=tmp_path / "untrained", **kw))
    batch = src.dataset.read_batch(range(len(src)))
    net.fit(batch["image"], batch["position_map"])
    after = evaluate(net, outputdir=tmp_path / "trained", compare=[tmp_path / "untrained"], **kw)
    for m in METRICS:
        assert after["metrics"][m]["count"] == 6
        assert _means(after)[m] < before[m], m
    md = (tmp_path / "trained" / "results.md").read_text()
    assert "untrained mean" in md and "3.62" in md


def test_prediction_folder_conventions(synthetic_val_hdf5, tmp_path):
    src = HDF5Source(synthetic_val_hdf5)
    gt, _ = src.read(range(6))
    kpt, dense = _from_maps(gt.maps, gt, src.layout)
    preds = tmp_path / "preds"
    preds.mkdir()
    n = gt.names
    np.save(preds / f"{n[0]}.npy", gt.maps[0])                # crop-frame map
    np.save(preds / f"{n[1]}.npy", dense[1])                  # image-frame dense points
    np.save(preds / f"{n[2]}.npy", kpt[2])                    # image-frame landmarks only
    v = dense[3].copy()
    v[:, 1] = gt.image_size[3, 0] - 1 - v[:, 1]               # PRNet-keras mesh: y up
    scipy.io.savemat(preds / f"{n[3]}.mat", {"vertices": v.T})  # dotnet (3, N) layout
    (preds / f"{n[4]}.npy").write_bytes(b"not numpy")
    s = evaluate(str(preds), hdf5=synthetic_val_hdf5, outputdir=tmp_path / "out", evalidxs=[0, 1, 2, 3],
                 limit=6, progress=False, gallery=0)
    _, rows = read_csv(tmp_path / "out" / "per_image.csv")
    by = {r["name"]: r for r in rows}
    expected_sparse = nme(kpt, gt.kpt68, normalizer("bbox", gt.kpt68), 2)  # the oracle's landmark error
    for i in (0, 1, 2, 3):
        assert by[n[i]]["sparse_2d"] == pytest.approx(expected_sparse[i], rel=1e-4)
    for i in (0, 1, 3):
        assert by[n[i]]["dense_2d"] == pytest.approx(0, abs=1e-4) and by[n[i]]["dense_3d"] == pytest.approx(0, abs=1e-4)
    assert math.isnan(by[n[2]]["dense_2d"]) and math.isfinite(by[n[2]]["sparse_2d"])
    assert "cannot read .npy" in by[n[4]]["error"] and "no prediction" in by[n[5]]["error"]
    assert {f["name"] for f in s["failed"]} == {n[4], n[5]}
    assert s["metrics"]["sparse_2d"]["count"] == 4 and s["metrics"]["dense_2d"]["count"] == 3


def test_prediction_folder_matches_oracle(synthetic_val_hdf5, tmp_path):
    src = HDF5Source(synthetic_val_hdf5)
    gt, _ = src.read(range(3))
    preds = tmp_path / "preds"
    preds.mkdir()
    for i, name in enumerate(gt.names):
        np.save(preds / f"{name}.npy", gt.maps[i])
    kw = dict(hdf5=synthetic_val_hdf5, evalidxs=[0, 1], limit=3, progress=False, gallery=0)
    a = evaluate(str(preds), outputdir=tmp_path / "a", **kw)
    b = evaluate("oracle", outputdir=tmp_path / "b", **kw)
    for m in ("sparse_2d", "sparse_3d"):
        assert a["metrics"][m]["mean_all"] == pytest.approx(b["metrics"][m]["mean_all"], rel=1e-6)


def test_unreadable_sample_reported_and_excluded(synthetic_aflw_dir, tmp_path):
    data = tmp_path / "aflw"
    shutil.copytree(synthetic_aflw_dir, data)
    jpgs = sorted(data.rglob("*.jpg"))
    jpgs[1].write_bytes(jpgs[1].read_bytes()[:200])           # truncated JPEG
    (jpgs[2].with_suffix(".mat")).unlink()                     # image without its .mat
    s = evaluate("oracle", datadir=data, outputdir=tmp_path / "out", evalidxs=[0, 2], progress=False, gallery=0)
    failed = {f["name"] for f in s["failed"]}
    assert failed == {jpgs[1].stem, jpgs[2].stem}
    assert s["metrics"]["sparse_2d"]["count"] == len(jpgs) - 2
    assert s["metrics"]["dense_2d"]["mean_all"] == 0.0        # failures are not scored as 0 ...
    assert s["metrics"]["sparse_2d"]["excluded"] == 2         # ... they are excluded


def test_resume_skips_done_images(synthetic_val_hdf5, tmp_path, tiny_network_factory):
    src = HDF5Source(synthetic_val_hdf5)
    net = tiny_network_factory(src.layout)
    kw = dict(hdf5=synthetic_val_hdf5, outputdir=tmp_path, evalidxs=[0], progress=False, gallery=0, batchsize=4)
    evaluate(net, limit=5, **kw)
    csv_path = tmp_path / "per_image.csv"
    with open(csv_path, "a") as f:
        f.write("torn,1.0")                                    # interrupted mid-append
    first = {r["name"]: r["sparse_2d"] for r in read_csv(csv_path)[1]}
    net.calls = 0
    s = evaluate(net, resume=True, **kw)
    assert net.calls == len(src) - 5
    rows = read_csv(csv_path)[1]
    assert [r["name"] for r in rows] == src.names and s["metrics"]["sparse_2d"]["count"] == len(src)
    assert all(r["sparse_2d"] == first[r["name"]] for r in rows if r["name"] in first)
    with pytest.raises(InputError, match="different settings"):
        evaluate(net, resume=True, **{**kw, "evalidxs": [0, 1]})


def test_bad_arguments(synthetic_val_hdf5, tmp_path):
    with pytest.raises(InputError, match="exactly one"):
        evaluate("oracle", outputdir=tmp_path)
    with pytest.raises(InputError, match="evalidxs"):
        evaluate("oracle", hdf5=synthetic_val_hdf5, outputdir=tmp_path, evalidxs=[6])
    with pytest.raises(InputError, match="no such file"):
        evaluate(str(tmp_path / "missing.keras"), hdf5=synthetic_val_hdf5, outputdir=tmp_path)


@pytest.mark.reference
def test_oracle_on_real_aflw2000_with_mean_bfm(reference_data, tmp_path):
    """The mean-only BFM posed by each real fit vs pt3d_68: how far the mean face is from the fits."""
    s = evaluate("oracle", datadir=reference_data / "aflw2000-3d", bfm=str(reference_data / "bfm-mean"),
                 uv_data=reference_data / "prnet-uv-data", outputdir=tmp_path, progress=False, gallery=0,
                 evalidxs=[0, 1, 2, 3])
    assert s["failed"] == [] and s["metrics"]["sparse_2d"]["count"] == 5
    assert s["metrics"]["sparse_2d"]["mean_all"] <= 3.5
    assert 0.5 < s["metrics"]["sparse_2d"]["mean_all"]        # mean face != real identity
    assert s["metrics"]["dense_2d"]["mean_all"] == 0.0


def test_keras_file_through_load_network(synthetic_val_hdf5, tmp_path):
    """A saved .keras model with its uv_layout.npz beside it, loaded by model.io.load_network."""
    pytest.importorskip("prnet_keras.model.io")
    from prnet_keras.model import build_model

    src = HDF5Source(synthetic_val_hdf5)
    path = tmp_path / "run" / "tiny.keras"
    path.parent.mkdir()
    build_model("light", width=0.25).save(path)
    src.layout.save(path.parent / "uv_layout.npz")
    s = evaluate(str(path), hdf5=synthetic_val_hdf5, outputdir=tmp_path / "out", evalidxs=[0, 2], limit=2,
                 progress=False, gallery=1)
    assert s["model"] == str(path) and s["metrics"]["sparse_2d"]["count"] == 2
    assert math.isfinite(s["metrics"]["dense_2d"]["mean_all"])


def test_normaliser_depends_on_ground_truth_only(synthetic_val_hdf5):
    """Landmark-only predictions (no dense points) still get a diagonal normaliser from the GT mesh."""
    from prnet_keras.evaluate.runner import Settings, score_batch
    from prnet_keras.evaluate.sources import Predictions

    src = HDF5Source(synthetic_val_hdf5)
    gt, _ = src.read(range(3))
    kpt, dense = _from_maps(gt.maps, gt, src.layout)
    full = score_batch(gt, Predictions(kpt + 2.0, dense, [None] * 3), src.layout,
                       Settings(metrics=("sparse_2d", "dense_2d"), normalizer="diagonal"))
    sparse_only = score_batch(gt, Predictions(kpt + 2.0, np.full_like(dense, np.nan), [None] * 3), src.layout,
                              Settings(metrics=("sparse_2d", "dense_2d"), normalizer="diagonal"))
    np.testing.assert_allclose(sparse_only["sparse_2d"], full["sparse_2d"])
    assert np.isnan(sparse_only["dense_2d"]).all() and np.all(full["dense_2d"] == 0)
    bbox = score_batch(gt, Predictions(kpt + 2.0, dense, [None] * 3), src.layout, Settings(metrics=("sparse_2d",)))
    ratio = bbox["sparse_2d"] / full["sparse_2d"]
    assert np.all((ratio > 1.2) & (ratio < 2.0))  # the mesh diagonal is the larger normaliser
