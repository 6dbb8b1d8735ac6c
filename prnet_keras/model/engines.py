"""What runs a Keras network's forward pass for prediction: Keras itself or OpenVINO.

``keras_forward(model, engine) -> (forward, engine_used)``; ``forward`` maps (B, R, R, C)
float32 to the model's output as a float32 array, any B, callable from any thread.

- ``"keras"``: ``model.predict_on_batch`` (any backend, any device).
- ``"openvino"``: the model traced once by TensorFlow (dynamic batch), converted in memory to
  OpenVINO and compiled for the CPU in fp32 (``INFERENCE_PRECISION_HINT`` is pinned: on CPUs
  with bf16 units OpenVINO would otherwise default to bf16). ResFCN256 batch 1 on 2 cores:
  ~45-50 ms instead of ~60 ms, outputs equal within float32 rounding (~1e-7). Converting costs
  ~2 s; with ``cache=True`` (models loaded from files) the converted model is kept in the
  cache folder (:func:`cache_dir`, keyed by a hash of the architecture and weights, the 8
  most recently used kept), so a later load of the same weights takes ~0.3 s. TensorFlow
  backend only (the converter reads TensorFlow graphs).
- ``"auto"`` (default): OpenVINO when it is importable, the backend is TensorFlow and
  TensorFlow sees no GPU; otherwise Keras. A model OpenVINO cannot convert falls back to
  Keras with a warning.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from prnet_keras.errors import InputError, PRNetWarning

ForwardFn = Callable[[np.ndarray], np.ndarray]
ENGINES = ("auto", "keras", "openvino")
CACHE_KEEP = 8  # converted models kept in the cache (53 MB each for resfcn256)


def cache_dir() -> Path | None:
    """Folder for converted models: ``$PRNET_CACHE_DIR`` ("off" disables caching), else
    ``$XDG_CACHE_HOME/prnet-keras``, else ``~/.cache/prnet-keras``."""
    env = os.environ.get("PRNET_CACHE_DIR")
    if env is not None:
        return None if env.strip().lower() in ("", "off", "none", "0") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "prnet-keras"


def openvino_unavailable_reason() -> str | None:
    """Why the OpenVINO engine cannot run here, or None when it can."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return f"the OpenVINO engine converts TensorFlow graphs; the Keras backend is {keras.backend.backend()!r}"
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "openvino is not installed (pip install openvino)"
    return None


def _tf_sees_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def _keras_predict(model: Any) -> ForwardFn:
    # predict_on_batch: the compiled predict step without predict()'s per-call data pipeline;
    # eager __call__ is 3-5x slower at batch 1 on CPU.
    return lambda x: np.asarray(model.predict_on_batch(x), np.float32)


def _model_key(model: Any, versions: str) -> str:
    """Hash of the architecture, every weight (dtype, shape, bytes) and the converter versions."""
    h = hashlib.sha256(versions.encode())
    h.update(model.to_json().encode())
    for w in model.get_weights():
        w = np.ascontiguousarray(w)
        h.update(f"{w.dtype}{w.shape}".encode())
        h.update(w.data)
    return h.hexdigest()[:32]


def _convert(model: Any, ov: Any) -> Any:
    import tensorflow as tf

    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)
    traced = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    return ov.convert_model(traced)


def _cached_convert(model: Any, ov: Any, folder: Path) -> Any:
    """The converted model from ``folder`` when there, else converted and stored (best effort:
    an unwritable or damaged cache only costs the conversion)."""
    import keras

    key = _model_key(model, f"openvino {ov.__version__} keras {keras.__version__}")
    xml = folder / "openvino" / f"{key}.xml"
    if xml.is_file():
        try:
            converted = ov.Core().read_model(str(xml))
            os.utime(xml)  # most recently used
            return converted
        except Exception:  # damaged entry: convert again and replace it
            pass
    converted = _convert(model, ov)
    try:
        xml.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=xml.parent, prefix=".tmp-"))
        try:
            ov.save_model(converted, str(tmp / "m.xml"), compress_to_fp16=False)
            # .bin first: an .xml is only ever seen beside its complete weights
            os.replace(tmp / "m.bin", xml.with_suffix(".bin"))
            os.replace(tmp / "m.xml", xml)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        entries = sorted(xml.parent.glob("*.xml"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[CACHE_KEEP:]:
            old.unlink(missing_ok=True)
            old.with_suffix(".bin").unlink(missing_ok=True)
    except OSError:
        pass
    return converted


def openvino_forward(model: Any, threads: int | None = None, cache: bool = False) -> ForwardFn:
    """Compile ``model`` (single input, single output, TensorFlow backend) with OpenVINO for the CPU.

    ``threads``: inference threads (default: the cores this process may use); ``cache``: keep
    the converted model in :func:`cache_dir`. Raises InputError when OpenVINO cannot run
    here or cannot convert the model.
    """
    reason = openvino_unavailable_reason()
    if reason:
        raise InputError(f"engine 'openvino': {reason}")
    import openvino as ov

    from prnet_keras.utils import usable_cores

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise InputError(f"engine 'openvino': {model.name} must have one input and one output")
    folder = cache_dir() if cache else None
    try:
        converted = _cached_convert(model, ov, folder) if folder else _convert(model, ov)
        compiled = ov.Core().compile_model(converted, "CPU", {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": int(threads or usable_cores()),
        })
    except Exception as exc:  # the converter raises its own types for unsupported graphs
        if "KeyboardInterrupt" in str(exc):  # it reports Ctrl-C as a RuntimeError: stop, do not fall back
            raise KeyboardInterrupt from None
        raise InputError(f"engine 'openvino': cannot convert {model.name} ({exc.__class__.__name__}: {exc})") from None
    request = compiled.create_infer_request()
    lock = threading.Lock()  # one request: calls from several threads take turns (one stream anyway)

    def forward(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        with lock:
            # the output tensor is the request's own memory, overwritten by the next call: copy
            return np.array(request.infer({0: x})[0], np.float32, copy=True)

    forward.compiled = compiled  # type: ignore[attr-defined]
    return forward


def keras_forward(model: Any, engine: str = "auto", cache: bool = False) -> tuple[ForwardFn, str]:
    """(forward, engine used) for a keras.Model; ``engine`` is one of ENGINES (the packaged
    default ``inference.engine`` is "auto"), ``cache`` keeps an OpenVINO conversion for the
    next load of the same weights (see module doc)."""
    if engine not in ENGINES:
        raise InputError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "keras" or (engine == "auto" and (openvino_unavailable_reason() or _tf_sees_gpu())):
        return _keras_predict(model), "keras"
    try:
        return openvino_forward(model, cache=cache), "openvino"
    except InputError as exc:
        if engine == "openvino":
            raise
        warnings.warn(f"{exc}; predicting with Keras instead", PRNetWarning, stacklevel=2)
        return _keras_predict(model), "keras"
