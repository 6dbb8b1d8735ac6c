"""Position-map losses (``--lossfunct``), backend-neutral (``keras.ops`` only).

All losses compare normalised maps (position map / LABEL_SCALE), shape (B, R, R, 3).
The weighted ones multiply each pixel's error by a (R, R) weight mask (paper ratios
16 : 4 : 3 : 0, ``UVLayout.weight_mask``) and average over the *non-zero-weight* elements
(pixels with weight > 0, times 3 channels), as PRNet does; the result does not change with
how much of the map lies outside the face.

| name | per-sample value |
|---|---|
| ``weighted_mse`` (default) | sum(w·d²) / (3·nnz(w)) |
| ``weighted_rmse`` | sqrt(sum(w·d²) / (3·nnz(w))) |
| ``weighted_l1`` | sum(w·abs(d)) / (3·nnz(w)) |
| ``mse`` | mean(d²) over all pixels (ignores any mask) |

Losses serialise into ``.keras`` files with their mask (compressed in the config), so
checkpoints reload without extra files.
"""

from __future__ import annotations

import base64
import zlib
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from prnet_keras.errors import InputError

LOSSES = ("weighted_mse", "weighted_rmse", "mse", "weighted_l1")
_KINDS = ("mse", "rmse", "l1")


def _encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) float32 -> JSON-safe dict (masks are piecewise constant: zlib shrinks them ~100x)."""
    data = zlib.compress(np.ascontiguousarray(mask, np.float32).tobytes(), 9)
    return {"shape": list(mask.shape), "zlib_f32": base64.b64encode(data).decode("ascii")}


def _decode_mask(obj: Any) -> np.ndarray | None:
    if obj is None:
        return None
    if isinstance(obj, dict):
        raw = zlib.decompress(base64.b64decode(obj["zlib_f32"]))
        return np.frombuffer(raw, np.float32).reshape(obj["shape"]).copy()
    return np.asarray(obj, np.float32)


def load_weight_mask(spec: Any, resolution: int = 256) -> np.ndarray | None:
    """Resolve a weight mask: None, a (R, R) array, a ``UVLayout``, or a grayscale PNG path (/255).

    Returns (R, R) float32 in [0, 1] or None. Raises InputError for an unreadable file, a
    wrong size (no silent resizing: a resized mask would move the landmark pixels), values
    outside [0, 1] or an all-zero mask.
    """
    if spec is None:
        return None
    if hasattr(spec, "weight_mask"):  # a UVLayout
        spec = spec.weight_mask
    where = "weight mask"
    if isinstance(spec, (str, Path)):
        from PIL import Image

        where = f"{spec}"
        try:
            with Image.open(spec) as im:
                arr = np.asarray(im.convert("L"), np.float32) / 255.0
        except (OSError, FileNotFoundError) as exc:
            raise InputError(f"{spec}: cannot read weight-mask image ({exc.__class__.__name__}: {exc})") from None
    else:
        arr = np.asarray(spec, np.float32)
    if arr.shape != (resolution, resolution):
        raise InputError(f"{where}: expected a {resolution}x{resolution} single-channel mask, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
        raise InputError(f"{where}: values must lie in [0, 1] (PNG: 0..255)")
    if not np.any(arr > 0):
        raise InputError(f"{where}: all weights are zero")
    return arr


@keras.saving.register_keras_serializable(package="prnet_keras")
class PositionMapLoss(keras.losses.Loss):
    """Masked MSE / RMSE / L1 between normalised position maps (B, R, R, 3).

    ``weight_mask`` (R, R) float in [0, 1] or None (uniform: every element counts).
    Returns one value per sample; Keras averages over the batch.
    """

    def __init__(self, kind: str = "mse", weight_mask: Any = None, name: str | None = None, **kwargs: Any) -> None:
        if kind not in _KINDS:
            raise InputError(f"loss kind must be one of {_KINDS}, got {kind!r}")
        super().__init__(name=name or f"position_map_{kind}", **kwargs)
        self.kind = kind
        self.weight_mask = _decode_mask(weight_mask)

    def call(self, y_true, y_pred):
        # float32 math even under mixed precision: squared errors of ~1e-3 underflow bf16.
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        diff = y_pred - y_true
        err = ops.abs(diff) if self.kind == "l1" else ops.square(diff)
        if self.weight_mask is None:
            value = ops.mean(err, axis=(1, 2, 3))
        else:
            w = ops.convert_to_tensor(self.weight_mask[..., None], "float32")
            count = 3.0 * float(np.count_nonzero(self.weight_mask))
            value = ops.sum(err * w, axis=(1, 2, 3)) / count
        if self.kind == "rmse":
            value = ops.sqrt(value + 1e-12)  # epsilon keeps the gradient finite at zero error
        return value

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["kind"] = self.kind
        config["weight_mask"] = None if self.weight_mask is None else _encode_mask(self.weight_mask)
        return config


def get_loss(name: str = "weighted_mse", weight_mask: Any = None, resolution: int = 256) -> PositionMapLoss:
    """The ``--lossfunct`` registry.

    ``weight_mask``: None, (R, R) array, ``UVLayout`` or grayscale PNG path. The weighted
    losses use it (None = uniform weights); ``mse`` is the plain mean and ignores it.
    """
    if name not in LOSSES:
        raise InputError(f"--lossfunct: unknown loss {name!r}, expected one of {', '.join(LOSSES)}")
    if name == "mse":
        return PositionMapLoss("mse", None, name="mse")
    return PositionMapLoss(name.split("_", 1)[1], load_weight_mask(weight_mask, resolution), name=name)
