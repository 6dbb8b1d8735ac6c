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
- ``"openvino-int8"``: the OpenVINO model quantised to int8 by NNCF (``model.quantize``),
  calibrated on crops the caller supplies, checked for accuracy on held-out crops, and
  cached (with its accuracy report) like the fp32 conversion: quantising resfcn256 takes
  minutes once, loading it again ~1 s.
- ``"auto"`` (default): OpenVINO when it is importable, the backend is TensorFlow and
  TensorFlow sees no GPU; otherwise Keras. With the cache on, on a CPU with int8
  dot-product units, the cached int8 model is used when its accuracy report is within the
  bound (``model.quantize.INT8_BOUND``); auto never quantises by itself. A model OpenVINO
  cannot convert falls back to Keras with a warning.
"""

from __future__ import annotations

import hashlib
import json
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
ENGINES = ("auto", "keras", "openvino", "openvino-int8")
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


def _model_key(model: Any, versions: str, by_class: bool = False) -> str:
    """Hash of the architecture (``by_class``: its class, for subclassed models whose JSON is only
    their instance name), every weight (dtype, shape, bytes) and the converter versions."""
    h = hashlib.sha256(versions.encode())
    h.update((f"{type(model).__module__}.{type(model).__qualname__}" if by_class else model.to_json()).encode())
    for w in model.get_weights():
        w = np.ascontiguousarray(w)
        h.update(f"{w.dtype}{w.shape}".encode())
        h.update(w.data)
    return h.hexdigest()[:32]


def _convert(model: Any, ov: Any, input_shape: tuple | None = None) -> Any:
    """``model`` traced by TensorFlow for ``input_shape`` (default: its input, any batch), converted."""
    import tensorflow as tf

    spec = tf.TensorSpec(input_shape or (None, *model.inputs[0].shape[1:]), tf.float32)
    traced = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    # share_weights=False: a shared model points into TensorFlow's buffers of the trace, which
    # are freed with it; compiled later, it read garbage now and then (MTCNN's boxes).
    return ov.convert_model(traced, share_weights=False)


def _read_entry(xml: Path, ov: Any) -> Any | None:
    """A cached OpenVINO model, or None when absent or damaged (then it is made again)."""
    if not xml.is_file():
        return None
    try:
        converted = ov.Core().read_model(str(xml))
        os.utime(xml)  # most recently used
        return converted
    except Exception:  # damaged entry: convert again and replace it
        return None


def _write_sidecar(path: Path, data: dict) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass


def _store_entry(xml: Path, converted: Any, ov: Any) -> None:
    """Save ``converted`` as ``xml`` (+ .bin) atomically (a stale .json beside it is removed), keep
    the CACHE_KEEP most recently used entries of the folder (best effort: an unwritable cache
    only costs time)."""
    try:
        xml.parent.mkdir(parents=True, exist_ok=True)
        xml.with_suffix(".json").unlink(missing_ok=True)
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
            for suffix in (".xml", ".bin", ".json"):
                old.with_suffix(suffix).unlink(missing_ok=True)
    except OSError:
        pass


def _cached_convert(model: Any, ov: Any, folder: Path, input_shape: tuple | None = None,
                    subfolder: str = "openvino") -> Any:
    """The converted model from ``folder / subfolder`` when there, else converted and stored
    (models traced for another ``input_shape`` than their own are keyed by their class)."""
    import keras

    key = _model_key(model, f"openvino {ov.__version__} keras {keras.__version__} input {input_shape}",
                     by_class=input_shape is not None)
    xml = folder / subfolder / f"{key}.xml"
    converted = _read_entry(xml, ov)
    if converted is None:
        converted = _convert(model, ov, input_shape)
        _store_entry(xml, converted, ov)
    return converted


def _compile(converted: Any, ov: Any, threads: int | None) -> Any:
    from prnet_keras.utils import usable_cores

    return ov.Core().compile_model(converted, "CPU", {
        "PERFORMANCE_HINT": "LATENCY",
        # fp32 pinned: on CPUs with bf16 units OpenVINO would otherwise default to bf16 (the
        # int8 model's quantised layers run in int8 either way; the rest stays fp32)
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": int(threads or usable_cores()),
    })


def _forward_of(compiled: Any, order: list[int] | None = None) -> Callable:
    """Forward of a compiled model: its first output, or with ``order`` the tuple of its outputs
    at those indices."""
    request = compiled.create_infer_request()
    lock = threading.Lock()  # one request: calls from several threads take turns (one stream anyway)

    def forward(x: np.ndarray) -> np.ndarray | tuple:
        x = np.ascontiguousarray(x, np.float32)
        with lock:
            # the output tensors are the request's own memory, overwritten by the next call: copy
            out = request.infer({0: x})
            if order is None:
                return np.array(out[0], np.float32, copy=True)
            return tuple(np.array(out[i], np.float32, copy=True) for i in order)

    forward.compiled = compiled  # type: ignore[attr-defined]
    return forward


def _converter_error(exc: Exception, engine: str, model: Any) -> Exception:
    if "KeyboardInterrupt" in str(exc):  # the converter reports Ctrl-C as a RuntimeError: stop, do not fall back
        return KeyboardInterrupt()
    return InputError(f"engine '{engine}': cannot convert {model.name} ({exc.__class__.__name__}: {exc})")


def _checked_openvino_backend(engine: str) -> Any:
    reason = openvino_unavailable_reason()
    if reason:
        raise InputError(f"engine '{engine}': {reason}")
    import openvino as ov

    return ov


def _checked_openvino(model: Any, engine: str) -> Any:
    ov = _checked_openvino_backend(engine)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise InputError(f"engine '{engine}': {model.name} must have one input and one output")
    return ov


def openvino_forward(model: Any, threads: int | None = None, cache: bool = False) -> ForwardFn:
    """Compile ``model`` (single input, single output, TensorFlow backend) with OpenVINO for the CPU.

    ``threads``: inference threads (default: the cores this process may use); ``cache``: keep
    the converted model in :func:`cache_dir`. Raises InputError when OpenVINO cannot run
    here or cannot convert the model.
    """
    ov = _checked_openvino(model, "openvino")
    folder = cache_dir() if cache else None
    try:
        converted = _cached_convert(model, ov, folder) if folder else _convert(model, ov)
        compiled = _compile(converted, ov, threads)
    except Exception as exc:  # the converter raises its own types for unsupported graphs
        raise _converter_error(exc, "openvino", model) from None
    return _forward_of(compiled)


def openvino_outputs_forward(model: Any, input_shape: tuple, channels: tuple[int, ...], threads: int | None = None,
                             cache: bool = True, subfolder: str = "openvino-small") -> Callable[[np.ndarray], tuple]:
    """Compile a model with several outputs (subclassed models too) with OpenVINO for the CPU.

    input_shape: traced input shape, None for sizes that vary (e.g. ``(None, None, None, 3)``);
    channels: the last dimension of each output, in the order the model returns them (the
    converter may list them in another order; they are matched by it, so they must differ).
    The forward maps a float32 array to that tuple of float32 arrays. ``cache``: keep the
    conversion in :func:`cache_dir` / ``subfolder`` (its own LRU of CACHE_KEEP entries).
    Raises InputError when OpenVINO cannot run here or cannot convert the model.
    """
    ov = _checked_openvino_backend("openvino")
    folder = cache_dir() if cache else None
    try:
        converted = (_cached_convert(model, ov, folder, tuple(input_shape), subfolder) if folder
                     else _convert(model, ov, tuple(input_shape)))
        compiled = _compile(converted, ov, threads)
        found = [o.get_partial_shape()[-1].get_length() for o in compiled.outputs]
        if len(set(channels)) != len(channels) or sorted(found) != sorted(channels):
            raise ValueError(f"outputs with last dimensions {found}, expected {list(channels)}")
    except Exception as exc:  # the converter raises its own types for unsupported graphs
        raise _converter_error(exc, "openvino", model) from None
    return _forward_of(compiled, [found.index(c) for c in channels])


# ---- int8 ------------------------------------------------------------------------------------
def _int8_entry(model: Any, ov: Any, folder: Path) -> Path:
    import keras

    try:
        from importlib.metadata import version

        nncf_version = version("nncf")
    except Exception:  # noqa: BLE001 - not installed: no entry can match anyway
        nncf_version = "none"
    from prnet_keras.model.quantize import SETTINGS

    key = _model_key(model, f"openvino {ov.__version__} keras {keras.__version__} nncf {nncf_version} {SETTINGS}")
    return folder / "openvino-int8" / f"{key}.xml"


def cached_int8_report(model: Any) -> dict | None:
    """The accuracy report of this model's cached int8 conversion, or None when there is none."""
    folder = cache_dir()
    if folder is None or openvino_unavailable_reason():
        return None
    import openvino as ov

    xml = _int8_entry(model, ov, folder)
    try:
        return json.loads(xml.with_suffix(".json").read_text()) if xml.is_file() else None
    except (OSError, ValueError):
        return None


def openvino_int8_forward(model: Any, calibration: Any = None, layout: Any = None, threads: int | None = None,
                          cache: bool = True, log: Callable[[str], None] | None = None) -> ForwardFn:
    """The model quantised to int8 by NNCF (``model.quantize``) and compiled for the CPU.

    calibration: an object with ``source`` (str) and ``load(layout) -> quantize.Calibration``
    (e.g. ``inference.calibration``); needed unless the cache holds an int8 model of these
    weights (then None reuses it, whatever data calibrated it). A cached model calibrated on
    another ``source`` is made again. ``forward.report`` is the accuracy report
    (``quantize.accuracy_report``); ``log`` receives progress lines while quantising.
    """
    from prnet_keras.model import quantize

    ov = _checked_openvino(model, "openvino-int8")
    folder = cache_dir() if cache else None
    xml = _int8_entry(model, ov, folder) if folder else None
    report = cached_int8_report(model) if xml is not None else None
    quantized = None
    if report is not None and (calibration is None or report.get("source") == calibration.source):
        quantized = _read_entry(xml, ov)
    try:
        if quantized is None:
            if calibration is None:
                raise InputError("engine 'openvino-int8': no int8 model of these weights is cached and no "
                                 "calibration data was given")
            converted = _cached_convert(model, ov, folder) if folder else _convert(model, ov)
            data = calibration.load(layout)
            quantized = quantize.quantize_int8(converted, data.calibration_crops, log)
            if xml is not None:  # measure the model as it is served: read back from the cache
                _store_entry(xml, quantized, ov)
                quantized = _read_entry(xml, ov) or quantized
            fp32 = _forward_of(_compile(converted, ov, threads))
            report = quantize.accuracy_report(fp32, _forward_of(_compile(quantized, ov, threads)), data)
            if xml is not None and xml.is_file():  # the report last: auto trusts entries that have one
                _write_sidecar(xml.with_suffix(".json"), report)
            if log:
                log(quantize.describe(report))
        elif log and not quantize.within_bound(report):  # cached, but outside the bound: say so each time
            log(f"warning: {quantize.describe(report)}")
        compiled = _compile(quantized, ov, threads)
    except InputError:
        raise
    except Exception as exc:  # converter / NNCF errors
        raise _converter_error(exc, "openvino-int8", model) from None
    forward = _forward_of(compiled)
    forward.report = report  # type: ignore[attr-defined]
    return forward


def keras_forward(model: Any, engine: str = "auto", cache: bool = False, calibration: Any = None,
                  layout: Any = None, log: Callable[[str], None] | None = None) -> tuple[ForwardFn, str]:
    """(forward, engine used) for a keras.Model; ``engine`` is one of ENGINES (the packaged
    default ``inference.engine`` is "auto"), ``cache`` keeps an OpenVINO conversion for the
    next load of the same weights (see module doc). ``calibration`` / ``layout`` / ``log``:
    for "openvino-int8" (:func:`openvino_int8_forward`)."""
    if engine not in ENGINES:
        raise InputError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "keras" or (engine == "auto" and (openvino_unavailable_reason() or _tf_sees_gpu())):
        return _keras_predict(model), "keras"
    if engine == "openvino-int8":
        return openvino_int8_forward(model, calibration, layout, cache=cache, log=log), "openvino-int8"
    if engine == "auto" and cache and int8_preferred(model):
        try:
            return openvino_int8_forward(model, None, layout, cache=True), "openvino-int8"
        except InputError:
            pass  # an unreadable cache entry: fp32 below
    try:
        return openvino_forward(model, cache=cache), "openvino"
    except InputError as exc:
        if engine == "openvino":
            raise
        warnings.warn(f"{exc}; predicting with Keras instead", PRNetWarning, stacklevel=2)
        return _keras_predict(model), "keras"


def int8_preferred(model: Any) -> bool:
    """``auto`` picks int8 only on an int8-capable CPU and when this model's cached int8
    conversion passed the accuracy bound (``model.quantize.INT8_BOUND``) on its validation crops."""
    from prnet_keras.model import quantize

    if not quantize.int8_capable_cpu():
        return False
    report = cached_int8_report(model)
    return report is not None and quantize.within_bound(report)
