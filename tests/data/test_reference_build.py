"""The real reference samples: built from their folder and from a zip, checked against pt3d_68."""

from __future__ import annotations

import numpy as np

from prnet_keras.data.build import build_hdf5
from prnet_keras.data.hdf5 import PositionMapDataset
from prnet_keras.geometry import crop_to_image


def test_real_aflw_folder_and_zip_builds_within_3_5_percent(reference_data, mean_bfm, tmp_path, datagen):
    src = reference_data / "aflw2000-3d"
    uv = reference_data / "prnet-uv-data"
    z = datagen.zip_folder(src, tmp_path / "AFLW2000-3D.zip", "AFLW2000")
    kw = dict(bfm=reference_data / "bfm-mean", uv_data=uv, buildmode="val", model=mean_bfm)
    a = build_hdf5(src, tmp_path / "folder.hdf5", **kw)
    b = build_hdf5(z, tmp_path / "zip.hdf5", **kw)
    assert a.written == b.written == 5 and a.skipped == 0
    datagen.assert_same_hdf5(a.out, b.out, ignore_attrs=("shard", "args"))
    ds = PositionMapDataset(a.out)
    assert ds.layout.source == "prnet-official" and ds.layout.n_vertices == 43867
    batch = ds.read_batch(np.arange(len(ds)))
    for pm, t, gt in zip(batch["position_map"], batch["transform"], batch["kpt68"]):
        back = crop_to_image(ds.layout.keypoints_from_map(pm), t)[:, :2]
        lo, hi = gt[:, :2].min(0), gt[:, :2].max(0)
        nme = np.linalg.norm(back - gt[:, :2], axis=1).mean() / np.sqrt(np.prod(hi - lo))
        assert nme < 0.035
    # Every face pixel of the official mask is covered (face + mouth triangles).
    face = ds.layout.vertices_from_map(batch["position_map"])
    assert np.all(np.any(face != 0, axis=-1))


def test_real_300wlp_sample_builds(reference_data, mean_bfm, tmp_path):
    s = build_hdf5(reference_data / "300w-lp", tmp_path / "train.hdf5", bfm=reference_data / "bfm-mean",
                   model=mean_bfm, seed=1)
    assert s.written == 1 and s.exit_code == 0
    ds = PositionMapDataset(tmp_path / "train.hdf5")
    b = ds[0]
    assert b["name"] == "IBUG_image_008_1_0" and tuple(b["image_size"]) == (450, 450)
    # No pt3d_68 in 300W-LP: kpt68 are the model's projected keypoints, which the map reproduces.
    back = crop_to_image(ds.layout.keypoints_from_map(b["position_map"]), b["transform"])
    assert np.abs(back[:, :2] - b["kpt68"][:, :2]).max() < 1.5
