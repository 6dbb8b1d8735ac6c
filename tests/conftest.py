"""Shared fixtures. Area-specific fixtures live in tests/<area>/conftest.py.

Reference data (``prnet_keras.utils.reference_data_dir()``) is optional:
tests that need it use the ``reference_data`` fixture and skip with a clear reason.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
# converted-model cache (model.engines): one fresh folder per test session, not ~/.cache
if "PRNET_CACHE_DIR" not in os.environ:
    os.environ["PRNET_CACHE_DIR"] = tempfile.mkdtemp(prefix="prnet-test-cache-")
    atexit.register(shutil.rmtree, os.environ["PRNET_CACHE_DIR"], True)

from prnet_keras.utils import reference_data_dir  # noqa: E402


@pytest.fixture(scope="session")
def reference_data() -> Path:
    path = reference_data_dir()
    if path is None:
        pytest.skip("reference data absent (set PRNET_REFERENCE_DATA to its folder)")
    return path


@pytest.fixture(scope="session")
def mean_bfm(reference_data):
    from prnet_keras.geometry import load_mean_bfm

    return load_mean_bfm(reference_data / "bfm-mean")


@pytest.fixture(scope="session")
def official_layout(reference_data):
    from prnet_keras.geometry import UVLayout

    return UVLayout.from_prnet_folder(reference_data / "prnet-uv-data")


@pytest.fixture(scope="session")
def synthetic_model():
    from prnet_keras.geometry.synthetic import build_synthetic_model

    return build_synthetic_model(seed=0)


@pytest.fixture(scope="session")
def synthetic_layout(synthetic_model):
    from prnet_keras.geometry import UVLayout

    return UVLayout.from_model(synthetic_model)


@pytest.fixture(scope="session")
def synthetic_aflw_dir(tmp_path_factory) -> Path:
    """12 synthetic AFLW2000-3D-layout samples (JPEG + .mat), seed 0."""
    from prnet_keras.data.synth import generate_dataset

    out = tmp_path_factory.mktemp("synth_aflw")
    generate_dataset(out, layout="aflw2000", count=12, seed=0, bfm="synthetic", workers=1)
    return out


@pytest.fixture(scope="session")
def synthetic_300wlp_dir(tmp_path_factory) -> Path:
    """16 synthetic 300W-LP-layout samples (8 originals + their _Flip twins), seed 1."""
    from prnet_keras.data.synth import generate_dataset

    out = tmp_path_factory.mktemp("synth_300wlp")
    generate_dataset(out, layout="300wlp", count=16, seed=1, bfm="synthetic", workers=1)
    return out


@pytest.fixture(scope="session")
def synthetic_val_hdf5(synthetic_aflw_dir, tmp_path_factory) -> Path:
    """val.hdf5 (crops store) built from ``synthetic_aflw_dir``."""
    from prnet_keras.data.build import build_hdf5

    out = tmp_path_factory.mktemp("h5") / "val.hdf5"
    build_hdf5(source=synthetic_aflw_dir, out=out, layout="auto", bfm="synthetic", buildmode="val", workers=1)
    return out


@pytest.fixture(scope="session")
def synthetic_train_hdf5(synthetic_300wlp_dir, tmp_path_factory) -> Path:
    """train.hdf5 (crops store) built from ``synthetic_300wlp_dir``."""
    from prnet_keras.data.build import build_hdf5

    out = tmp_path_factory.mktemp("h5") / "train.hdf5"
    build_hdf5(source=synthetic_300wlp_dir, out=out, layout="auto", bfm="synthetic", buildmode="train", workers=1)
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
