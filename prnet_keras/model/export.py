"""Export a trained network: ``.keras``, SavedModel (TF Serving), TFLite (float16 / int8), ONNX.

Everything but ``keras`` goes through TensorFlow (TF-only seam). Every output is written
atomically: into a temporary sibling first, renamed onto the target on success, so a
failed export never leaves a half-written model where a server would pick it up.
The optional UV layout is written beside the model as ``<stem>.uv.npz``, which
:func:`prnet_keras.model.io.load_network` finds. The command line is ``prnet-export``
(:mod:`prnet_keras.cli.export`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import keras

from prnet_keras.errors import InputError, PRNetError
from prnet_keras.utils import FILE_MODE, atomic_write_bytes

FORMATS = ("keras", "saved_model", "tflite_float16", "tflite_int8", "onnx")
_SUFFIX = {"keras": ".keras", "tflite_float16": ".tflite", "tflite_int8": ".tflite", "onnx": ".onnx"}


class ExportError(PRNetError):
    """An export could not be made (missing converter package, unsupported backend)."""


def layout_sidecar(path: str | Path) -> Path:
    """``models/best.keras`` -> ``models/best.uv.npz``; a SavedModel dir ``sm`` -> ``sm.uv.npz``."""
    p = Path(path)
    stem = p.name[: -len(p.suffix)] if p.suffix in (".keras", ".tflite", ".onnx", ".h5") else p.name
    return p.with_name(stem + ".uv.npz")


def _require_tensorflow(fmt: str) -> Any:
    if keras.backend.backend() != "tensorflow":
        raise ExportError(f"export format {fmt!r} needs the TensorFlow backend (KERAS_BACKEND=tensorflow), "
                          f"running {keras.backend.backend()!r}")
    import tensorflow as tf

    return tf


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move a finished directory onto ``target``; an old one is only removed after the rename."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old.{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _export_saved_model(model: keras.Model, target: Path) -> None:
    _require_tensorflow("saved_model")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        # Keras writes a 'serve' endpoint and the 'serving_default' signature TF Serving uses.
        model.export(str(tmp / "sm"), format="tf_saved_model", verbose=False)
        _replace_dir(tmp / "sm", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export_tflite(model: keras.Model, target: Path, quantization: str) -> None:
    tf = _require_tensorflow(f"tflite_{quantization}")

    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as tmp:
        sm = Path(tmp) / "sm"
        model.export(str(sm), format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(sm))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        # No representative dataset: "DEFAULT" alone is dynamic-range int8 (weights int8).
        atomic_write_bytes(target, converter.convert())


def _export_onnx(model: keras.Model, target: Path) -> None:
    missing = []
    for module, package in (("onnx", "onnx"), ("tf2onnx", "tf2onnx")):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if keras.backend.backend() == "tensorflow" and missing:
        raise ExportError(f"ONNX export needs {' and '.join(missing)}: pip install {' '.join(missing)}")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp.onnx")
    try:
        model.export(str(tmp), format="onnx", verbose=False)
        os.replace(tmp, target)
    except ImportError as exc:
        raise ExportError(f"ONNX export: a converter package is missing ({exc}); pip install onnx tf2onnx") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def save_keras_atomic(model: keras.Model, target: Path) -> None:
    """``model.save`` to a temporary ``.tmp-*.keras`` beside ``target``, then rename onto it.

    Keras insists on the ``.keras`` suffix, so the temporary keeps it (``utils.atomic_path``
    cannot be used); readers never see a half-written model.
    """
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".keras", dir=target.parent)
    os.close(fd)
    try:
        model.save(tmp)
        os.chmod(tmp, FILE_MODE)  # mkstemp makes 0600; models are ordinary files
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export_model(model: keras.Model, path: str | Path, format: str = "keras", layout: Any = None) -> Path:
    """Write ``model`` to ``path`` in one of :data:`FORMATS`; return the written path.

    - ``keras``: native ``.keras`` file (architecture, weights, compile state).
    - ``saved_model``: a SavedModel directory, servable by TensorFlow Serving (signature
      ``serving_default``, input (B, 256, 256, 3) float32 in [0, 1], output sigmoid map).
    - ``tflite_float16`` / ``tflite_int8``: TFLite flatbuffer via SavedModel; float16
      weights, or dynamic-range int8 weights (activations stay float).
    - ``onnx``: via ``model.export(format="onnx")`` (TensorFlow backend needs tf2onnx + onnx).

    A missing suffix is added (``.keras``, ``.tflite``, ``.onnx``). ``layout`` (UVLayout),
    when given, is saved as ``<stem>.uv.npz`` beside the model.
    """
    if format not in FORMATS:
        raise InputError(f"export format: unknown {format!r}, expected one of {', '.join(FORMATS)}")
    target = Path(path)
    suffix = _SUFFIX.get(format)
    if suffix and target.suffix != suffix:
        target = target.with_name(target.name + suffix)
    target.parent.mkdir(parents=True, exist_ok=True)
    if format == "keras":
        save_keras_atomic(model, target)
    elif format == "saved_model":
        _export_saved_model(model, target)
    elif format.startswith("tflite_"):
        _export_tflite(model, target, format.split("_", 1)[1])
    else:
        _export_onnx(model, target)
    if layout is not None:
        layout.save(layout_sidecar(target))
    return target
