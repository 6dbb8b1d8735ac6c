"""Load a trained network from disk, whatever its format, behind one small interface.

``load_network(path, uv_data=None) -> Network`` accepts

- a ``.keras`` file (Keras 3 native; any backend),
- a SavedModel directory (``model.export`` / TF Serving layout; TensorFlow),
- an official TF1 checkpoint prefix (``<prefix>.index`` + ``<prefix>.data-*`` beside it;
  loaded into a default ``resfcn256``; TensorFlow),
- a ``.tflite`` flatbuffer (TensorFlow's interpreter) or ``.onnx`` file (onnxruntime).

Keras models predict through ``model.engines`` (OpenVINO on CPU when installed, else Keras).
``Network.predict(images)`` maps (B, R, R, 3) float32 crops in [0, 1] to (B, R, R, 3)
float32 position maps in crop pixels (sigmoid × LABEL_SCALE), in chunks of ``batch_size``.
"""

from __future__ import annotations

import dataclasses
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from prnet_keras import LABEL_SCALE
from prnet_keras.errors import InputError, ModelFileError, PRNetWarning
from prnet_keras.geometry.uv import UVLayout, load_uv_layout
from prnet_keras.model.checkpoint import checkpoint_prefix, is_tf1_checkpoint
from prnet_keras.model.engines import keras_forward
from prnet_keras.model.export import layout_sidecar
from prnet_keras.model.fold import fold_batch_norm

ForwardFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass
class Network:
    """A loaded position-map network.

    ``name``: file name; ``kind``: "keras" | "saved_model" | "checkpoint" | "tflite" | "onnx";
    ``layout``: the UVLayout its maps use; ``model``: the keras.Model when there is one;
    ``forward``: (b, R, R, 3) float32 [0, 1] -> (b, R, R, 3) sigmoid output; ``engine``: what
    runs it ("keras" | "openvino" for Keras models, else the kind's own runtime).
    """

    name: str
    kind: str
    layout: UVLayout
    forward: ForwardFn
    resolution: int
    model: Any = None
    batch_size: int = 32
    engine: str = ""

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(B, R, R, 3) float32 crops / 255 -> (B, R, R, 3) float32 maps in crop pixels."""
        x = np.asarray(images, np.float32)
        r = self.resolution
        if x.ndim != 4 or x.shape[1:] != (r, r, 3):
            raise InputError(f"{self.name}: images must be (B, {r}, {r}, 3) float32 in [0, 1], got shape {x.shape}")
        out = np.empty(x.shape, np.float32)
        for i in range(0, len(x), self.batch_size):
            chunk = x[i:i + self.batch_size]
            out[i:i + len(chunk)] = np.asarray(self.forward(chunk), np.float32).reshape(chunk.shape)
        out *= np.float32(LABEL_SCALE)
        return out


# ---- forward functions per format ----------------------------------------------------------
def _load_keras(path: Path) -> Any:
    import keras

    import prnet_keras.model  # noqa: F401  (registers the custom losses/metrics)

    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a .keras file (a .keras model is a zip archive)")
    try:
        return keras.saving.load_model(str(path), compile=False)
    except Exception as exc:  # Keras raises many types for a foreign/corrupt archive
        raise ModelFileError(f"{path}: cannot load the .keras model ({exc.__class__.__name__}: {exc})") from None


def _saved_model_forward(path: Path) -> tuple[ForwardFn, int]:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except (OSError, ValueError, tf.errors.OpError) as exc:
        raise ModelFileError(f"{path}: cannot load the SavedModel ({exc.__class__.__name__})") from None
    sig = loaded.signatures.get("serving_default")
    if sig is None:
        raise ModelFileError(f"{path}: SavedModel has no 'serving_default' signature (has {list(loaded.signatures)})")
    specs = sig.structured_input_signature[1]
    if len(specs) != 1:
        raise ModelFileError(f"{path}: expected one image input, the signature has {sorted(specs)}")
    (in_name, spec), = specs.items()
    resolution = spec.shape[1]  # None when exported with a dynamic size

    def forward(x: np.ndarray) -> np.ndarray:
        out = sig(**{in_name: tf.constant(x)})
        return next(iter(out.values())).numpy()

    forward.loaded = loaded  # type: ignore[attr-defined]  # its variables live as long as the function
    return forward, resolution


def _tflite_forward(path: Path) -> tuple[ForwardFn, int]:
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter deprecation notice
        try:
            interp = tf.lite.Interpreter(model_path=str(path))
        except ValueError as exc:
            raise ModelFileError(f"{path}: not a TFLite model ({exc})") from None
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    state = {"batch": None}

    def forward(x: np.ndarray) -> np.ndarray:
        if state["batch"] != len(x):  # the interpreter has a fixed batch: resize when it changes
            interp.resize_tensor_input(inp["index"], x.shape)
            interp.allocate_tensors()
            state["batch"] = len(x)
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        return interp.get_tensor(out["index"])

    return forward, int(inp["shape"][1])


def _onnx_forward(path: Path) -> tuple[ForwardFn, int]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelFileError(f"{path}: running ONNX models needs onnxruntime (pip install onnxruntime)") from None
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelFileError(f"{path}: cannot load the ONNX model ({exc.__class__.__name__})") from None
    name = sess.get_inputs()[0].name
    size = sess.get_inputs()[0].shape[1]
    return (lambda x: sess.run(None, {name: x})[0]), (size if isinstance(size, int) else None)


# ---- layout lookup -------------------------------------------------------------------------
def layout_candidates(path: Path) -> list[Path]:
    """Where a model's layout may lie: ``<stem>.uv.npz``, ``<name>.uv.npz``, ``uv_layout.npz``
    beside it (and inside a SavedModel folder)."""
    out = [layout_sidecar(path), path.with_name(path.name + ".uv.npz"), path.parent / "uv_layout.npz"]
    if path.is_dir():
        out.append(path / "uv_layout.npz")
    return list(dict.fromkeys(out))


def resolve_layout(path: Path, uv_data: Any = None) -> UVLayout:
    """An explicit ``uv_data`` (UVLayout, uv-data folder or .npz) wins; else a file beside the model."""
    found = next((c for c in layout_candidates(path) if c.is_file()), None)
    if uv_data is not None:
        layout = uv_data if isinstance(uv_data, UVLayout) else load_uv_layout(uv_data)
        if found is not None and UVLayout.load(found) != layout:
            warnings.warn(f"{path}: using the given uv_data, which differs from the layout in {found}", PRNetWarning,
                          stacklevel=3)
        return layout
    if found is not None:
        return UVLayout.load(found)
    looked = ", ".join(str(c) for c in layout_candidates(path))
    raise InputError(f"{path}: no UV layout found (looked for {looked}); pass uv_data / --uv-data "
                     "(an official uv-data folder or a uv_layout.npz)")


# ---- entry points --------------------------------------------------------------------------
def load_keras_model(path: str | Path) -> Any:
    """A keras.Model from a ``.keras`` file or an official TF1 checkpoint prefix (into ``resfcn256``)."""
    p = Path(path)
    if p.suffix == ".keras":
        if not p.is_file():
            raise ModelFileError(f"{p}: model file not found")
        return _load_keras(p)
    if is_tf1_checkpoint(p):
        from prnet_keras.model.checkpoint import load_official_checkpoint
        from prnet_keras.model.resfcn import build_resfcn256

        model = build_resfcn256()
        load_official_checkpoint(model, checkpoint_prefix(p))
        return model
    raise ModelFileError(f"{p}: expected a .keras file or an official checkpoint prefix ({p.name}.index beside it)")


def load_network(path: str | Path, uv_data: Any = None, batch_size: int = 32, fold_bn: bool = True,
                 engine: str = "auto", calibration: Any = None, log: Callable[[str], None] | None = None) -> Network:
    """Load a network (format from the path, see module doc) and its UV layout.

    Keras models (``.keras``, checkpoints) predict through a copy with batch normalisation
    folded into the convolutions (``model.fold``: same outputs within float32 rounding,
    ~10-45 % faster on CPU); ``fold_bn=False`` predicts with the model as loaded.
    ``Network.model`` is always the model as loaded. ``engine`` runs Keras models:
    "auto" | "keras" | "openvino" | "openvino-int8" (``model.engines``); ``calibration`` and
    ``log``: for "openvino-int8" (``engines.openvino_int8_forward``).

    Raises ModelFileError for a missing file or one of the wrong kind, InputError when no
    UV layout can be found (pass ``uv_data``) or it does not fit the model's resolution.
    """
    p = Path(path)
    model = None
    used = ""
    if p.is_dir():
        if not (p / "saved_model.pb").is_file():
            raise ModelFileError(f"{p}: a folder but not a SavedModel (no saved_model.pb)")
        kind = "saved_model"
        forward, resolution = _saved_model_forward(p)
    elif p.suffix == ".keras" or is_tf1_checkpoint(p):
        kind = "keras" if p.suffix == ".keras" else "checkpoint"
        p = p if kind == "keras" else checkpoint_prefix(p)
        model = load_keras_model(p)
        layout = resolve_layout(p, uv_data)  # before the engine: int8 calibration needs it
        forward, used = keras_forward(fold_batch_norm(model) if fold_bn else model, engine, cache=True,
                                      calibration=calibration, layout=layout, log=log)
        resolution = int(model.input_shape[1])
    elif p.suffix in (".tflite", ".onnx"):
        if not p.is_file():
            raise ModelFileError(f"{p}: model file not found")
        kind = p.suffix[1:]
        forward, resolution = (_tflite_forward if kind == "tflite" else _onnx_forward)(p)
    elif not p.exists():
        raise ModelFileError(f"{p}: no such model (expected a .keras file, SavedModel folder, "
                             f".tflite/.onnx file or a checkpoint prefix with {p.name}.index beside it)")
    else:
        raise ModelFileError(f"{p}: unsupported model file (expected .keras, a SavedModel folder, .tflite, .onnx "
                             "or an official TF1 checkpoint prefix)")
    if model is not None and tuple(model.output_shape[1:]) != (resolution, resolution, 3):
        raise ModelFileError(f"{p}: not a position-map network (output {model.output_shape}, "
                             f"expected (None, {resolution}, {resolution}, 3))")
    layout = resolve_layout(p, uv_data)
    resolution = layout.resolution if resolution is None else int(resolution)  # dynamic-size exports
    if layout.resolution != resolution:
        raise InputError(f"{p}: the UV layout is {layout.resolution}x{layout.resolution} "
                         f"but the network works at {resolution}x{resolution}")
    return Network(name=p.name, kind=kind, layout=layout, forward=forward, resolution=resolution,
                   model=model, batch_size=int(batch_size), engine=used or kind)
