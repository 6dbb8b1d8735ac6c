"""Fixtures of the model tests: a small hand-made UV layout (no other package needed)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from prnet_keras.geometry.uv import UVLayout, grid_triangles


def make_layout(resolution: int = 256, seed: int = 0) -> UVLayout:
    """A square face region with 68 landmark pixels scattered in it and 16:4:3:0 weights."""
    rng = np.random.default_rng(seed)
    r = resolution
    mask = np.zeros((r, r), bool)
    mask[r // 8: 7 * r // 8, r // 8: 7 * r // 8] = True
    flat = rng.choice(np.flatnonzero(mask), 68, replace=False)
    kpt = np.stack([flat % r, flat // r])
    weight = np.where(mask, 3 / 16, 0).astype(np.float32)
    weight[r // 3: r // 2, r // 3: 2 * r // 3] = 4 / 16
    weight[kpt[1], kpt[0]] = 1.0
    n = int(mask.sum())
    canonical = rng.normal(size=(n, 3)).astype(np.float32)
    return UVLayout(r, mask, kpt, weight, grid_triangles(mask), canonical, source="test")


def with_bn_statistics(model, seed: int = 0):
    """``model`` with non-trivial BN statistics (gamma, variance ~U(0.5, 1.5); beta, mean ~N(0, 0.1)),
    so that folding and converters are exercised; returns the model."""
    rng = np.random.default_rng(seed)
    for var in model.weights:
        if var.path.endswith(("moving_variance", "gamma")):
            var.assign(rng.uniform(0.5, 1.5, var.shape).astype(np.float32))
        elif var.path.endswith(("moving_mean", "beta")):
            var.assign(rng.normal(0, 0.1, var.shape).astype(np.float32))
    return model


@pytest.fixture(scope="session")
def tiny_layout() -> UVLayout:
    return make_layout()
