"""Synthetic 300W-LP and AFLW2000-3D: generate -> build -> read, both store modes."""

from __future__ import annotations

import numpy as np
import pytest

from prnet_keras.cli.build_dataset import main
from prnet_keras.data.build import build_hdf5
from prnet_keras.data.hdf5 import PositionMapDataset
from prnet_keras.data.sources import detect_layout, list_samples
from prnet_keras.geometry import crop_to_image


def _nme(pred_xy, gt_xy) -> np.ndarray:
    lo, hi = gt_xy.min(1), gt_xy.max(1)
    norm = np.sqrt(np.prod(hi - lo, axis=-1))
    return np.linalg.norm(pred_xy - gt_xy, axis=-1).mean(-1) / norm


def test_synthetic_aflw_val_round_trip(synthetic_aflw_dir, synthetic_model, tmp_path):
    assert detect_layout(synthetic_aflw_dir) == "aflw2000"
    s = build_hdf5(synthetic_aflw_dir, tmp_path / "val.hdf5", model=synthetic_model, buildmode="val")
    assert s.written == 12 and s.skipped == 0
    ds = PositionMapDataset(s.out)
    assert ds.names == [f"image{i:05d}" for i in range(1, 13)]
    b = ds.read_batch(np.arange(len(ds)))
    # The fit is exact (same model): the map's landmarks land on pt3d_68.
    kpts = ds.layout.keypoints_from_map(b["position_map"])
    back = np.stack([crop_to_image(k, t) for k, t in zip(kpts, b["transform"])])
    assert np.all(_nme(back[..., :2], b["kpt68"][..., :2]) < 0.01)
    assert np.all(b["image"].reshape(len(ds), -1).std(1) > 5)  # real pictures, not empty crops


@pytest.mark.parametrize("store", ["crops", "raw"])
def test_synthetic_300wlp_train_round_trip(store, synthetic_300wlp_dir, synthetic_model, tmp_path):
    assert detect_layout(synthetic_300wlp_dir) == "300wlp"
    refs = list_samples(synthetic_300wlp_dir)
    assert len(refs) == 16 and sum("_Flip/" in r.name for r in refs) == 8
    s = build_hdf5(synthetic_300wlp_dir, tmp_path / f"{store}.hdf5", model=synthetic_model, store=store,
                   workers=2, commit_every=4)
    assert s.written == 16 and s.exit_code == 0
    ds = PositionMapDataset(s.out, model=synthetic_model)
    assert ds.store == store and ds.names == [r.name for r in refs]
    b = ds.read_batch([0, 9, 15], rng=np.random.default_rng(0))
    assert b["position_map"].shape == (3, 256, 256, 3) and b["image"].dtype == np.uint8
    kpts = ds.layout.keypoints_from_map(b["position_map"])
    back = np.stack([crop_to_image(k, t) for k, t in zip(kpts, b["transform"])])
    assert np.all(_nme(back[..., :2], b["kpt68"][..., :2]) < 0.01)  # 300W-LP: kpt68 = model keypoints
    # Crops sit inside the 256² frame: landmarks within the crop.
    assert kpts[..., :2].min() > 0 and kpts[..., :2].max() < 256


def test_synth_subcommand_then_build(tmp_path, capsys):
    out = tmp_path / "AFLW2000"
    assert main(["synth", "--layout", "aflw2000", "--count", "2", "--out", str(out), "--seed", "4"]) == 0
    assert "wrote 2" in capsys.readouterr().out
    assert [r.name for r in list_samples(out)] == ["image00001", "image00002"]
    assert main(["synth", "--layout", "aflw2000", "--count", "0", "--out", str(out)]) == 2
