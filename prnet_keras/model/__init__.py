"""Networks, losses, metrics, official-checkpoint import and export.

``build_model(name, **options)`` is the one place a network is made from its name:

- ``resfcn256``: the official PRNet ResFCN256 (13,353,618 trainable parameters);
  options ``base_filters`` (16), ``resolution`` (256), ``l2`` (2e-4), ``bn_momentum``.
- ``light``: MobileNetV2-style encoder / U-Net decoder (2.0 M parameters);
  options ``width`` (1.0), ``resolution`` (256).

Only ``keras`` is imported here; TensorFlow-only pieces (checkpoint import, SavedModel /
TFLite export, SavedModel loading) are in ``checkpoint``, ``export`` and ``io``.
"""

from __future__ import annotations

from typing import Any, Callable

import keras

from prnet_keras.errors import InputError
from prnet_keras.model.light import build_light
from prnet_keras.model.losses import LOSSES, get_loss
from prnet_keras.model.metrics import LandmarkNME
from prnet_keras.model.resfcn import build_resfcn256

MODELS: dict[str, Callable[..., keras.Model]] = {
    "resfcn256": build_resfcn256,
    "light": build_light,
}


def build_model(name: str = "resfcn256", **options: Any) -> keras.Model:
    """Build a registered network by name; unknown names or options raise InputError."""
    try:
        builder = MODELS[name]
    except KeyError:
        raise InputError(f"model: unknown name {name!r}, expected one of {', '.join(MODELS)}") from None
    try:
        return builder(**options)
    except TypeError as exc:  # unexpected keyword
        raise InputError(f"model {name!r}: bad options {sorted(options)} ({exc})") from None
    except ValueError as exc:
        raise InputError(str(exc)) from None


__all__ = ["LOSSES", "MODELS", "LandmarkNME", "build_light", "build_model", "build_resfcn256", "get_loss"]
