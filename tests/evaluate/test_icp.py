"""ICP known answers: rotations up to 30° plus translation recovered within 0.1°, partial overlap."""

from __future__ import annotations

import numpy as np
import pytest

from prnet_keras.errors import InputError
from prnet_keras.evaluate.icp import available_backends, estimate_normals, grid_normals, icp, mesh_normals
from prnet_keras.geometry import angles_to_rotation
from prnet_keras.geometry.uv import grid_triangles


def _surface(n: int = 50, seed: int = 0) -> np.ndarray:
    """An asymmetric face-sized bumpy patch, n*n points ~100 px across, sampled at random
    (x, y): a regular grid would make point-to-point ICP lock onto the grid spacing."""
    x, y = np.random.default_rng(seed).uniform(-1, 1, (2, n * n))
    z = (0.6 * np.exp(-((x - 0.1) ** 2 + (y + 0.2) ** 2) / 0.08)
         + 0.3 * np.exp(-((x + 0.5) ** 2 + (y - 0.4) ** 2) / 0.05)
         - 0.4 * (x**2 + 0.5 * y**2) + 0.2 * x * y)
    return np.stack([x.ravel(), y.ravel(), z.ravel()], 1) * 50.0


def _angle_deg(r: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))))


def _backend(name: str) -> str:
    if name not in available_backends():
        pytest.skip(f"ICP backend {name} not importable here (optional: pip install simpleicp 'pandas<3')")
    return name


ANGLES = [(0, 0, 30), (20, -18, 5), (-10, 25, -12)]  # each a rotation of 25-31°


CASES = [(b, m, a) for b in ("open3d", "scipy") for m in ("point_to_plane", "point_to_point") for a in ANGLES]
CASES.append(("simpleicp", "point_to_plane", ANGLES[0]))  # slow (pure Python/pandas): one case


@pytest.mark.parametrize(("backend", "method", "angles"), CASES)
def test_recovers_rotation_up_to_30deg_and_translation(backend, method, angles):
    backend = _backend(backend)
    dst = _surface(25 if backend == "simpleicp" else 50)
    rot = angles_to_rotation(np.radians(angles))
    assert 25.0 <= _angle_deg(rot) <= 31.0
    src = (dst - dst.mean(0)) @ rot.T + dst.mean(0) + [30.0, -20.0, 10.0]
    res = icp(src, dst, backend=backend, method=method, max_distance=40.0, max_iter=200)
    assert _angle_deg(res.rotation @ rot) < 0.1
    np.testing.assert_allclose(res.apply(src), dst, atol=0.1)


@pytest.mark.parametrize("backend", ["open3d", "scipy"])
def test_partial_overlap_and_outliers(backend, rng):
    backend = _backend(backend)
    dst = _surface(60, seed=1)
    rot = angles_to_rotation(np.radians([10, 15, -8]))
    # the source sees only the left 60 % of the surface, plus 5 % gross outliers
    part = dst[dst[:, 0] < 0.2 * 50]
    outliers = rng.uniform(-300, 300, (len(part) // 20, 3))
    src_clean = part @ rot.T + [8.0, -5.0, 4.0]
    src = np.concatenate([src_clean, outliers @ rot.T])
    res = icp(src, dst, backend=backend, method="point_to_plane", max_distance=15.0, init_centroids=False)
    assert _angle_deg(res.rotation @ rot) < 0.1
    np.testing.assert_allclose(res.apply(src_clean), part, atol=0.1)


def test_normals_agree_and_bad_input(rng):
    u = np.linspace(-1, 1, 30)
    x, y = np.meshgrid(u, u)
    pts = np.stack([x.ravel(), y.ravel(), (0.5 * np.exp(-(x**2 + y**2) / 0.2) + 0.2 * x * y).ravel()], 1) * 50
    mask = np.ones((30, 30), bool)
    n_mesh = mesh_normals(pts, grid_triangles(mask))
    n_knn = estimate_normals(pts)
    grid = pts.reshape(1, 30, 30, 3)
    valid = np.ones((1, 30, 30), bool)
    valid[0, :3] = False  # invalid rows: one-sided differences next to them, nothing across
    n_grid = grid_normals(np.where(valid[..., None], grid, 0.0), valid)[0].reshape(-1, 3)
    for other in (n_knn, n_grid):
        cos = np.abs(np.sum(n_mesh * other, 1))
        assert np.median(cos[valid.ravel()]) > 0.99 and cos[valid.ravel()].min() > 0.9
    with pytest.raises(InputError):
        icp(pts[:, :2], pts)
    with pytest.raises(InputError):
        icp(pts, pts, backend="cuda")
