"""Fixtures of the data tests: tiny self-made datasets in both layouts, no external files.

Images are smooth random pictures (the GT code never looks at their content); the fits are
random but sane parameters of the synthetic morphable model, posed inside the image.
"""

from __future__ import annotations

import os
import signal
import subprocess
import zipfile
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import scipy.io

IMG = 200  # small images keep the tests fast


def make_fit(model, rng: np.random.Generator, size: int = IMG) -> dict[str, np.ndarray]:
    from prnet_keras.geometry import make_pose_para, pose_vertices

    angles = np.radians([rng.uniform(-15, 15), rng.uniform(-60, 60), rng.uniform(-10, 10)])
    extent = float(np.ptp(model.vertices()[:, 0]))
    s = 0.45 * size / extent
    pose = make_pose_para(angles, [size / 2 + rng.uniform(-8, 8), size / 2 + rng.uniform(-8, 8), 0.0], s)
    sp = (rng.normal(0, 0.05, model.n_shape) * model.shape_ev).astype(np.float64)[:, None]
    ep = (rng.normal(0, 0.3, model.n_exp) * model.exp_ev).astype(np.float64)[:, None]
    v = pose_vertices(model.vertices(sp, ep), pose, size)
    return {"Pose_Para": pose, "Shape_Para": sp, "Exp_Para": ep, "pt3d_68": v[model.kpt_ind].T.astype(np.float32),
            "pt2d": v[model.kpt_ind, :2].T.astype(np.float64), "roi": np.zeros((1, 4), np.int16)}


def make_image(rng: np.random.Generator, size: int = IMG) -> bytes:
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def write_dataset(root: Path, model, layout: str, count: int, seed: int = 0) -> list[str]:
    """``count`` samples in the AFLW2000-3D (flat) or 300W-LP (subset folders) layout; returns names."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        if layout == "aflw2000":
            rel = f"image{i + 1:05d}"
        else:
            subset = ["AFW", "HELEN", "IBUG", "LFPW"][i % 4] + ("_Flip" if (i // 4) % 2 else "")
            rel = f"{subset}/{subset.split('_')[0]}_{1000 + i // 8}_1_{i % 3}"
        fit = make_fit(model, rng)
        if layout == "300wlp":
            fit.pop("pt3d_68")
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".jpg").write_bytes(make_image(rng))
        scipy.io.savemat(str(path.with_suffix(".mat")), fit)
        names.append(rel)
    return sorted(names)


def zip_folder(folder: Path, zip_path: Path, top: str) -> Path:
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, f"{top}/{p.relative_to(folder).as_posix()}")
    return zip_path


@pytest.fixture(scope="session")
def tiny_model():
    """The synthetic morphable model (BFM-like parameter shapes, ~12k vertices)."""
    from prnet_keras.geometry.synthetic import build_synthetic_model

    return build_synthetic_model(seed=0)


@pytest.fixture(scope="session")
def tiny_bfm_file(tiny_model, tmp_path_factory) -> Path:
    """The synthetic model saved as a face3d BFM.mat (loads fast in subprocesses)."""
    from prnet_keras.geometry import save_face3d_bfm

    path = tmp_path_factory.mktemp("bfm") / "BFM.mat"
    save_face3d_bfm(tiny_model, path)
    return path


@pytest.fixture(scope="session")
def tiny_300wlp(tiny_model, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_300wlp") / "300W_LP"
    write_dataset(root, tiny_model, "300wlp", 16, seed=1)
    return root


@pytest.fixture(scope="session")
def tiny_aflw(tiny_model, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_aflw") / "AFLW2000"
    write_dataset(root, tiny_model, "aflw2000", 8, seed=2)
    return root


def assert_same_hdf5(a: Path, b: Path, ignore_attrs: tuple[str, ...] = ("shard",)) -> None:
    """Two position-map files hold the same rows, bit-identical values, filters and attributes.

    Compressed chunks are compared decoded: ISA-L's deflate can pick another match of equal
    content from one process to the next (seen in CI: 3 bits of a match distance differed,
    the decoded chunk did not), so equal data need not mean equal compressed bytes."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        keys_a, keys_b = set(fa.keys()), set(fb.keys())
        assert keys_a == keys_b
        for key in keys_a:
            if isinstance(fa[key], h5py.Group):
                for sub in fa[key]:
                    np.testing.assert_array_equal(fa[key][sub][:], fb[key][sub][:])
                continue
            da, db = fa[key], fb[key]
            assert da.shape == db.shape, key
            assert (da.compression, da.shuffle, da.chunks) == (db.compression, db.shuffle, db.chunks), key
            if da.chunks and da.compression and da.chunks[0] == 1:
                for i in range(da.shape[0]):
                    # bitwise: uint8 views, so NaNs and -0.0 count too
                    assert np.array_equal(da[i].view(np.uint8), db[i].view(np.uint8)), (key, i)
            elif h5py.check_vlen_dtype(da.dtype) is not None and h5py.check_string_dtype(da.dtype) is None:
                for x, y in zip(da[:], db[:]):
                    np.testing.assert_array_equal(x, y)
            else:
                np.testing.assert_array_equal(da[()], db[()])
        attrs_a = {k: v for k, v in fa.attrs.items() if k not in ignore_attrs}
        attrs_b = {k: v for k, v in fb.attrs.items() if k not in ignore_attrs}
        assert attrs_a.keys() == attrs_b.keys()
        for k in attrs_a:
            assert attrs_a[k] == attrs_b[k], k


def run_command(cmd: list[str], cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a command in its own process group; on timeout kill the group (workers too) and fail."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"hung (killed after {timeout} s): {' '.join(cmd)}\n{out}\n{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="session")
def datagen():
    """The helpers above for test modules (``--import-mode=importlib`` cannot import conftest)."""
    import types

    return types.SimpleNamespace(make_fit=make_fit, make_image=make_image, write_dataset=write_dataset,
                                 zip_folder=zip_folder, assert_same_hdf5=assert_same_hdf5, run_command=run_command)
