"""The numba kernels are compiled with cache=True and honour NUMBA_CACHE_DIR."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SNIPPET = """
import numpy as np
from prnet_keras.geometry import raster
img, _, _ = raster.rasterize(np.array([[0, 0, 0], [5, 0, 0], [0, 5, 0]], np.float32), [[0, 1, 2]], np.ones(3), 6, 6)
assert img.sum() > 0
print(sum(raster._raster_kernel.stats.cache_hits.values()), sum(raster._raster_kernel.stats.cache_misses.values()))
"""


def _run(env):
    out = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    hits, misses = (int(x) for x in out.stdout.split())
    return hits, misses


def test_kernels_cache_into_numba_cache_dir(tmp_path):
    # A read-only install dir is handled by pointing NUMBA_CACHE_DIR somewhere writable.
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    assert _run(env) == (0, 1)  # compiled once ...
    assert list(tmp_path.rglob("raster._raster_kernel-*.nbi")), list(tmp_path.rglob("*"))
    assert _run(env) == (1, 0)  # ... and loaded from the cache by the next process
