"""What every benchmark records beside its figures: the machine, its load, and library versions."""

from __future__ import annotations

import importlib
import os
import platform

# import name -> key in the results (and how to read its version)
_NAMES = {"cv2": "opencv"}


def _version(module_name: str) -> str | None:
    try:
        module = importlib.import_module(module_name)
    except Exception:  # noqa: BLE001 - e.g. open3d raises OSError without libusb
        return None
    return getattr(module, "__version__", None)


def environment(*modules: str) -> dict:
    """Machine facts + versions of python, numpy and ``modules`` (import names, e.g. "cv2", "h5py").

    The 1-minute load average is included because the development machines are shared:
    it says how contended the timings were.
    """
    env = {
        "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(), "python": platform.python_version(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "numpy": _version("numpy"),
    }
    for name in modules:
        env[_NAMES.get(name, name)] = _version(name)
    if "h5py" in modules:
        import h5py

        env["hdf5"] = h5py.version.hdf5_version
    if "keras" in modules:
        import keras

        env["keras_backend"] = keras.backend.backend()
    return env
