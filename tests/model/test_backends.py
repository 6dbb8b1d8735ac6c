"""The networks, loss and metric run on every installed Keras backend (each in a subprocess,
since the backend is fixed at import) and agree with the TensorFlow backend numerically."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).with_name("backend_script.py")
ROOT = Path(__file__).resolve().parents[2]
BACKEND_MODULE = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def run_backend(backend: str, out: Path) -> dict:
    if importlib.util.find_spec(BACKEND_MODULE[backend]) is None:
        pytest.skip(f"Keras backend {backend!r} not testable: python package {BACKEND_MODULE[backend]!r} "
                    f"is not installed (pip install {'jax' if backend == 'jax' else 'torch==2.13.0'})")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{backend} backend failed:\n{proc.stderr[-3000:]}"
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def tf_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("tf") / "tf.npz"
    import keras

    if keras.backend.backend() != "tensorflow":
        return run_backend("tensorflow", out)
    # The suite already runs on TensorFlow: run the same script in this process (saves a start-up).
    spec = importlib.util.spec_from_file_location("model_backend_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(str(out))
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


# Other backends run in fresh interpreters and compile from scratch (JAX: minutes on 2 cores).
@pytest.mark.parametrize("backend", ["tensorflow", pytest.param("jax", marks=pytest.mark.slow),
                                     pytest.param("torch", marks=pytest.mark.slow)])
def test_models_train_on_backend(backend, tf_results, tmp_path):
    res = tf_results if backend == "tensorflow" else run_backend(backend, tmp_path / f"{backend}.npz")
    assert str(res["backend"]) == backend
    for name in ("resfcn256", "light"):
        assert np.isfinite(res[f"{name}_loss"]) and res[f"{name}_loss"] > 0
        assert np.isfinite(res[f"{name}_nme"]) and res[f"{name}_nme"] > 0
        assert res[f"{name}_changed"] == 1.0  # every trainable weight got a gradient step
        # same weights, same input -> same output as on TensorFlow (padding, BN, upsampling agree)
        np.testing.assert_allclose(res[f"{name}_forward"], tf_results[f"{name}_forward"], atol=2e-4,
                                   err_msg=f"{name} on {backend}")
        np.testing.assert_allclose(res[f"{name}_loss"], tf_results[f"{name}_loss"], rtol=1e-3)
        # batch norm folded into the convolutions (inference graph) predicts the same
        np.testing.assert_allclose(res[f"{name}_folded"], res[f"{name}_forward"], atol=2e-5,
                                   err_msg=f"{name} folded on {backend}")
        # the inference engine: OpenVINO converts TensorFlow graphs only; other backends predict with Keras
        expected = "keras" if backend != "tensorflow" or importlib.util.find_spec("openvino") is None else "openvino"
        assert str(res[f"{name}_engine"]) == expected
        np.testing.assert_allclose(res[f"{name}_engine_out"], res[f"{name}_folded"], atol=2e-5,
                                   err_msg=f"{name} through the {expected} engine on {backend}")
