"""Stand-ins for what users of the docs supply (a photo, the dataset zips, a BFM, PRNet's files,
a trained model), generated on first use by the README-commands test."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest


def _photo(dest: Path, index: int = 0) -> None:
    """A frontal synthetic face without occluders (what MTCNN finds, like a portrait photo)."""
    from prnet_keras.data.synth import generate_dataset

    tmp = dest.parent / f".{dest.name}.d"
    paths = generate_dataset(tmp, layout="aflw2000", count=index + 1, seed=7, occluders=False,
                             near_frontal_fraction=1.0)
    shutil.copy(paths[index], dest)
    shutil.rmtree(tmp)


def _photos_with_pts(dest: Path) -> None:
    """Two photos with iBUG ``.pts`` landmark files beside them (1-based pixels), as from 300-W."""
    import scipy.io

    from prnet_keras.data.synth import generate_dataset

    dest.mkdir()
    for jpg in generate_dataset(dest, layout="aflw2000", count=2, seed=7, occluders=False, near_frontal_fraction=1.0):
        pts = scipy.io.loadmat(str(jpg.with_suffix(".mat")))["pt3d_68"][:2].T + 1.0
        jpg.with_suffix(".pts").write_text("version: 1\nn_points: 68\n{\n"
                                           + "".join(f"{x:.2f} {y:.2f}\n" for x, y in pts) + "}\n")
        jpg.with_suffix(".mat").unlink()
    (dest / "synth_info.json").unlink(missing_ok=True)


def _group_photo(dest: Path) -> None:
    """Two portrait photos side by side: one picture with two faces."""
    import cv2

    first, second = dest.with_name(f".{dest.stem}.0.jpg"), dest.with_name(f".{dest.stem}.1.jpg")
    _photo(first)
    _photo(second, 1)
    cv2.imwrite(str(dest), np.concatenate([cv2.imread(str(first)), cv2.imread(str(second))], axis=1))
    first.unlink()
    second.unlink()


def _zip(folder: Path, dest: Path, inner: str, count: int) -> None:
    """The first ``count`` samples of a synthetic dataset, zipped like the real download."""
    with zipfile.ZipFile(dest, "w") as z:
        for jpg in sorted(folder.rglob("*.jpg"))[:count]:
            for f in (jpg, jpg.with_suffix(".mat")):
                z.write(f, f"{inner}/{f.relative_to(folder)}")


def _bfm(dest: Path) -> None:
    from prnet_keras.geometry import save_face3d_bfm
    from prnet_keras.geometry.synthetic import build_synthetic_model

    save_face3d_bfm(build_synthetic_model(seed=0), dest)  # the model the synthetic datasets use


def _uv_data(dest: Path) -> None:
    """A folder in PRNet's Data/uv-data format holding the synthetic model's layout."""
    import cv2

    from prnet_keras.geometry import UVLayout
    from prnet_keras.geometry.synthetic import build_synthetic_model

    layout = UVLayout.from_model(build_synthetic_model(seed=0))
    dest.mkdir(parents=True)
    np.savetxt(dest / "uv_kpt_ind.txt", layout.uv_kpt_ind, fmt="%d")
    np.savetxt(dest / "face_ind.txt", layout.face_ind, fmt="%d")
    cv2.imwrite(str(dest / "uv_weight_mask.png"), np.round(layout.weight_mask * 255).astype(np.uint8))
    cv2.imwrite(str(dest / "uv_face_mask.png"), layout.face_mask.astype(np.uint8) * 255)
    np.save(dest / "canonical_vertices.npy", layout.canonical_vertices * np.float32([1, -1, 1]))  # y down, as PRNet's


def _official_checkpoint(prefix: Path) -> None:
    """A TF1 checkpoint with the official variable names (random values) under PRNet's prefix."""
    import tensorflow as tf

    from prnet_keras.model import build_model
    from prnet_keras.model.resfcn import official_variable_map

    variables = official_variable_map(build_model("resfcn256"))
    prefix.parent.mkdir(parents=True, exist_ok=True)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=list(variables), shape_and_slices=[""] * len(variables),
                      tensors=[tf.constant(v.numpy()) for v in variables.values()])


def _small_model(dest: Path) -> None:
    """A small light network with its UV layout beside it, like a training run's folder."""
    from prnet_keras.geometry import UVLayout
    from prnet_keras.geometry.synthetic import build_synthetic_model
    from prnet_keras.model import build_model

    dest.parent.mkdir(parents=True, exist_ok=True)
    build_model("light", width=0.25).save(dest)
    UVLayout.from_model(build_synthetic_model(seed=0)).save(dest.parent / "uv_layout.npz")


def _talking_head(dest: Path) -> None:
    """A short synthetic video of a talking head (15 frames, 320x240, 15 fps)."""
    from prnet_keras.data.synth_video import talking_head_frames
    from prnet_keras.geometry.synthetic import build_synthetic_model
    from prnet_keras.inference.videoio import write_video

    frames = talking_head_frames(build_synthetic_model(seed=0), frames=15, width=320, height=240, fps=15.0)
    write_video(dest, (f.image for f in frames), 15.0)


def _build(source: Path, dest: Path, mode: str) -> None:
    from prnet_keras.data.build import build_hdf5

    build_hdf5(source, dest, buildmode=mode, workers=1)


def given(aflw: Path, wlp: Path) -> dict:
    """Path as written in the docs -> how to make it (called only when the path is missing)."""
    return {
        "photo.jpg": _photo,
        "ref.jpg": lambda d: _photo(d, 1),
        "group.jpg": _group_photo,
        "talk.mp4": _talking_head,
        "my_photos": _photos_with_pts,
        "photos": lambda d: (d.mkdir(), _photo(d / "a.jpg"), _photo(d / "b.jpg", 1)),
        "data/300W-LP.zip": lambda d: _zip(wlp, d, "300W_LP", 8),
        "data/AFLW2000-3D.zip": lambda d: _zip(aflw, d, "AFLW2000", 4),
        "BFM/BFM.mat": _bfm,
        "PRNet/Data/uv-data": _uv_data,
        "PRNet/Data/net-data/256_256_resfcn256_weight": _official_checkpoint,
        "quickstart/data/300W_LP": lambda d: shutil.copytree(wlp, d),
        "quickstart/data/AFLW2000": lambda d: shutil.copytree(aflw, d),
        "quickstart/data/train.hdf5": lambda d: _build(wlp, d, "train"),
        "quickstart/data/val.hdf5": lambda d: _build(aflw, d, "val"),
        "data/h5/train.hdf5": lambda d: _build(wlp, d, "train"),  # README builds them; a page run alone needs them
        "data/h5/val.hdf5": lambda d: _build(aflw, d, "val"),
        "quickstart/run/best_nme.keras": _small_model,
        "runs/prnet/best_nme.keras": _small_model,
    }



@pytest.fixture(scope="session")
def given_inputs(synthetic_aflw_dir, synthetic_300wlp_dir) -> dict:
    return given(synthetic_aflw_dir, synthetic_300wlp_dir)
