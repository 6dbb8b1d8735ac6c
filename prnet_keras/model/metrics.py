"""Validation metric people read: 68-landmark NME (%) from position maps (``keras.ops`` only)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from prnet_keras.errors import InputError


@keras.saving.register_keras_serializable(package="prnet_keras")
class LandmarkNME(keras.metrics.Metric):
    """Mean 2D normalised mean error (%) of the 68 landmarks read from position maps.

    ``uv_kpt_ind`` (2, 68) int: row 0 = UV column, row 1 = UV row (``UVLayout.uv_kpt_ind``).
    Per sample: gather the 68 pixels of y_true and y_pred (B, R, R, 3), take x, y; error =
    mean point distance / sqrt(w·h) of the ground-truth 68-point box, × 100. Maps may be
    normalised (/ LABEL_SCALE) or in pixels: the scale cancels. The result is the mean
    over all samples seen since the last reset.
    """

    def __init__(self, uv_kpt_ind: Any, resolution: int = 256, name: str = "nme", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        kpt = np.asarray(uv_kpt_ind, np.int64)
        if kpt.shape != (2, 68) or kpt.min() < 0 or kpt.max() >= resolution:
            raise InputError(f"LandmarkNME: uv_kpt_ind must be (2, 68) pixel indices in [0, {resolution}), "
                             f"got {kpt.shape}")
        self.uv_kpt_ind = kpt
        self.resolution = int(resolution)
        self._flat = (kpt[1] * resolution + kpt[0]).astype("int32")
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="count")

    def _landmarks(self, maps):
        maps = ops.cast(maps, "float32")
        flat = ops.reshape(maps, (-1, self.resolution * self.resolution, ops.shape(maps)[-1]))
        return ops.take(flat, ops.convert_to_tensor(self._flat), axis=1)[..., :2]  # (B, 68, 2)

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        gt = self._landmarks(y_true)
        pred = self._landmarks(y_pred)
        err = ops.mean(ops.sqrt(ops.sum(ops.square(pred - gt), axis=-1)), axis=-1)  # (B,)
        extent = ops.max(gt, axis=1) - ops.min(gt, axis=1)  # (B, 2): box w, h
        norm = ops.sqrt(ops.maximum(extent[:, 0] * extent[:, 1], 1e-12))
        nme = 100.0 * err / norm
        if sample_weight is not None:
            sw = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
            self.total.assign_add(ops.sum(nme * sw))
            self.count.assign_add(ops.sum(sw))
        else:
            self.total.assign_add(ops.sum(nme))
            self.count.assign_add(ops.cast(ops.shape(nme)[0], "float32"))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self) -> None:
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(uv_kpt_ind=self.uv_kpt_ind.tolist(), resolution=self.resolution)
        return config
