"""Tiny hand-made (crop, position map) data for the training tests.

A "face" is a disk of the 256² UV grid whose x, y values are a random similarity of the
UV coordinates (crop pixels) and whose z is a dome; the crop paints every face point with
a colour that encodes its UV position and bright white dots at the 68 landmark points, so
a test can check that augmented labels still land on the same image features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prnet_keras.geometry.uv import UVLayout, grid_triangles

R = 256


def toy_layout() -> UVLayout:
    rows, cols = np.mgrid[0:R, 0:R]
    mask = (rows - 128.0) ** 2 + (cols - 128.0) ** 2 < 90.0**2
    ang = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    rad = np.where(np.arange(68) % 2 == 0, 70.0, 35.0)
    kpt = np.stack([128 + rad * np.cos(ang), 128 + rad * np.sin(ang)]).round().astype(np.int64)
    weight = np.where(mask, 3 / 16, 0).astype(np.float32)
    weight[kpt[1], kpt[0]] = 1.0
    canon = np.stack([cols[mask] - 128.0, 128.0 - rows[mask], np.zeros(mask.sum())], 1).astype(np.float32)
    return UVLayout(R, mask, kpt, weight, grid_triangles(mask), canon, source="toy")


def toy_samples(n: int, seed: int = 0, layout: UVLayout | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(n, 256, 256, 3) uint8 crops and (n, 256, 256, 3) float32 position maps (crop px)."""
    layout = layout or toy_layout()
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:R, 0:R].astype(np.float32)
    mask = layout.face_mask
    images = np.zeros((n, R, R, 3), np.uint8)
    maps = np.zeros((n, R, R, 3), np.float32)
    for i in range(n):
        a = np.deg2rad(rng.uniform(-20, 20))
        s = rng.uniform(0.8, 1.0)
        c, d = s * np.cos(a), s * np.sin(a)
        u, v = cols - 128.0, rows - 128.0
        x = c * u - d * v + 128 + rng.uniform(-10, 10)
        y = d * u + c * v + 128 + rng.uniform(-10, 10)
        z = s * np.sqrt(np.maximum(0.0, 90.0**2 - u**2 - v**2))
        maps[i] = np.where(mask[..., None], np.stack([x, y, z], -1), 0)
        img = rng.integers(0, 40, (R, R, 3)).astype(np.uint8)
        # Texture: each face point gets a colour encoding its UV position (scatter, then close holes).
        px, py = np.rint(x[mask]).astype(int), np.rint(y[mask]).astype(int)
        ok = (px >= 0) & (px < R) & (py >= 0) & (py < R)
        tex = np.stack([cols[mask], rows[mask], np.full(mask.sum(), 60.0)], 1).astype(np.uint8)
        img[py[ok], px[ok]] = tex[ok]
        kx, ky = x[layout.uv_kpt_ind[1], layout.uv_kpt_ind[0]], y[layout.uv_kpt_ind[1], layout.uv_kpt_ind[0]]
        for dx in (-2, -1, 0, 1, 2):
            for dy in (-2, -1, 0, 1, 2):
                kpt_rows = np.clip(np.rint(ky).astype(int) + dy, 0, R - 1)
                img[kpt_rows, np.clip(np.rint(kx).astype(int) + dx, 0, R - 1)] = 255
        images[i] = img
    return images, maps


@pytest.fixture(scope="session")
def layout() -> UVLayout:
    return toy_layout()


@pytest.fixture(scope="session")
def toy_data(layout) -> tuple[np.ndarray, np.ndarray]:
    return toy_samples(12, seed=3, layout=layout)


@pytest.fixture(scope="session")
def make_toy():
    """The ``toy_samples(n, seed, layout)`` factory."""
    return toy_samples


def write_toy_hdf5(path, images: np.ndarray, maps: np.ndarray, layout: UVLayout, buildmode: str = "train") -> None:
    """A crops-store position-map file of the data package's schema, from arrays."""
    from prnet_keras.data.writer import append_rows, create_file, encode_chunk, encode_jpeg

    attrs = {"store": "crops", "crop_format": "jpeg", "buildmode": buildmode, "model_spec": "synthetic"}
    rows = []
    for i in range(len(images)):
        rows.append({
            "name": f"toy{i:04d}", "source_path": f"toy/{i}.jpg", "transform": np.eye(3),
            "pose_para": np.zeros(7, np.float32), "yaw": np.float32((i * 37) % 180 - 90),
            "kpt68": layout.keypoints_from_map(maps[i]), "image_size": np.array([256, 256], np.int32),
            "crop": encode_jpeg(images[i], 95), "position_map": encode_chunk(maps[i].astype(np.float16)),
        })
    f = create_file(path, attrs, layout)
    try:
        append_rows(f, rows)
    finally:
        f.close()


@pytest.fixture(scope="session")
def toy_hdf5_dir(tmp_path_factory, layout) -> Path:
    """train.hdf5 (16 toy samples) and val.hdf5 (6) in one folder."""
    out = tmp_path_factory.mktemp("toy_h5")
    write_toy_hdf5(out / "train.hdf5", *toy_samples(16, seed=1, layout=layout), layout)
    write_toy_hdf5(out / "val.hdf5", *toy_samples(6, seed=2, layout=layout), layout, buildmode="val")
    return out


def tiny_network(dropout: float = 0.0):
    """A 2-layer 256² -> 256² sigmoid network: training tests need cheap steps, not a real model."""
    import keras

    inp = keras.Input((256, 256, 3))
    x = keras.layers.Conv2D(4, 4, strides=4, activation="relu")(inp)
    if dropout:
        x = keras.layers.Dropout(dropout, seed=5)(x)
    out = keras.layers.Conv2DTranspose(3, 4, strides=4, activation="sigmoid")(x)
    return keras.Model(inp, out)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """:func:`tiny_network` saved as .keras (``--model`` continues from it)."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.keras"
    tiny_network().save(path)
    return path


@pytest.fixture(scope="session")
def write_toy():
    """The ``write_toy_hdf5(path, images, maps, layout)`` helper (test modules cannot import conftest)."""
    return write_toy_hdf5


@pytest.fixture(scope="session")
def tiny_dropout_model(tmp_path_factory) -> Path:
    """:func:`tiny_network` with a Dropout layer (random draws in every train step)."""
    path = tmp_path_factory.mktemp("tiny") / "tiny_dropout.keras"
    tiny_network(dropout=0.3).save(path)
    return path
