"""Geometry fixtures: a tiny hand-made morphable model (no external data, no synthetic.py)."""

from __future__ import annotations

import numpy as np
import pytest

from prnet_keras.geometry.morphable import MorphableModel


def grid_mesh(nx: int, ny: int) -> np.ndarray:
    """(2·(nx-1)·(ny-1), 3) triangles of an nx × ny vertex grid (row-major vertex order)."""
    idx = np.arange(nx * ny).reshape(ny, nx)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    return np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)]).astype(np.int32)


def make_tiny_model(nx: int = 12, ny: int = 14, seed: int = 0) -> MorphableModel:
    """A 12 × 14 vertex bump surface with UV = its grid position, small random bases.

    Keypoints are 68 distinct interior vertices; regions mark a 'nose' patch in the
    middle and 'eye' / 'mouth' rows so the weight mask has every level.
    """
    rng = np.random.default_rng(seed)
    n = nx * ny
    u, v = np.meshgrid(np.linspace(0.1, 0.9, nx), np.linspace(0.1, 0.9, ny))
    x, y = (u - 0.5) * 160.0, (v - 0.5) * 180.0
    z = 60.0 * np.exp(-(x**2 + y**2) / 6000.0)
    mean = np.stack([x, y, z], -1).reshape(-1)

    def basis(k: int) -> np.ndarray:
        q, _ = np.linalg.qr(rng.normal(size=(3 * n, k)))
        return q.astype(np.float32)

    uv = np.stack([u.ravel(), v.ravel()], 1)
    rows = np.repeat(np.arange(ny), nx)
    cols = np.tile(np.arange(nx), ny)
    interior = np.flatnonzero((rows > 0) & (rows < ny - 1) & (cols > 0) & (cols < nx - 1))
    kpt = rng.choice(interior, 68, replace=False)
    regions = {
        "nose": (np.abs(rows - ny // 2) <= 1) & (np.abs(cols - nx // 2) <= 1),
        "eye": rows == ny - 3,
        "mouth": rows == 2,
    }
    return MorphableModel(
        name="tiny",
        shape_mu=mean.astype(np.float32), shape_pc=basis(3), shape_ev=np.array([3.0, 2.0, 1.0]),
        exp_mu=np.zeros(3 * n, np.float32), exp_pc=basis(2), exp_ev=np.array([1.0, 0.5]),
        tex_mu=np.full(3 * n, 128.0, np.float32), tex_pc=basis(3) * 50.0, tex_ev=np.ones(3),
        triangles=grid_mesh(nx, ny), mouth_triangles=np.zeros((0, 3), np.int32),
        kpt_ind=kpt, uv_coords=uv, regions=regions,
    )


@pytest.fixture(scope="session")
def tiny_model() -> MorphableModel:
    return make_tiny_model()
