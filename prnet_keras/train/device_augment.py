"""The training augmentation of :mod:`.augment` in ``keras.ops``, run inside the train step.

With ``train.augment_on_device`` the CPU only decodes: a batch is the uint8 crop, the
position map and the per-sample parameters that :func:`~prnet_keras.train.augment.sample_params`
drew (:meth:`AugmentParams.to_arrays`), and the accelerator warps, recolours and occludes.
For the same parameters the result equals the CPU augmentation within interpolation error
(bilinear sampling in float here, OpenCV's fixed-point weights and uint8 rounding there;
the noise texture and every other quantity are computed identically). Backend-clean:
``keras.ops`` only.

:class:`DeviceAugmentedModel` wraps the network for training: it augments dict batches
before the forward pass and derives the label from the same parameters in
``compute_loss`` / ``compute_metrics``; plain ``(image, label)`` batches (validation) pass
straight through. The network itself is what gets saved.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from prnet_keras import LABEL_SCALE
from prnet_keras.train.augment import noise_coordinates


def _hash16(x: Any) -> Any:
    """:func:`prnet_keras.train.augment.hash16` in ``keras.ops`` (int32)."""
    x = ops.bitwise_xor(x, ops.right_shift(x, 8))
    x = ops.bitwise_and(ops.multiply(x, 0x5BD1), 0xFFFF)
    x = ops.bitwise_xor(x, ops.right_shift(x, 7))
    x = ops.bitwise_and(ops.multiply(x, 0x2C1B), 0xFFFF)
    return ops.bitwise_xor(x, ops.right_shift(x, 9))


def _noise_value(seed: Any, gy: Any, gx: Any, channel: Any) -> Any:
    h = _hash16(ops.bitwise_xor(_hash16(seed), gy))
    h = _hash16(ops.bitwise_xor(h, ops.bitwise_or(gx, ops.left_shift(channel, 8))))
    return ops.cast(h, "float32") * (1.0 / 65535.0)


def _noise_canvas(seed: Any, grain: Any, x0: Any, y0: Any, size: int) -> Any:
    """(B, size, size, 3) noise textures anchored at each box's corner (see ``noise_texture``)."""
    pix = ops.arange(size, dtype="int32")
    seed, grain = ops.reshape(seed, (-1, 1, 1, 1)), ops.reshape(grain, (-1, 1, 1, 1))
    oy = ops.maximum(ops.reshape(pix, (1, -1, 1, 1)) - ops.reshape(y0, (-1, 1, 1, 1)), 0)
    ox = ops.maximum(ops.reshape(pix, (1, 1, -1, 1)) - ops.reshape(x0, (-1, 1, 1, 1)), 0)
    iy, wy = noise_coordinates(oy, grain, backend=ops)
    ix, wx = noise_coordinates(ox, grain, backend=ops)
    c = ops.reshape(ops.arange(3, dtype="int32"), (1, 1, 1, 3))
    top = _noise_value(seed, iy, ix, c) * (1.0 - wx) + _noise_value(seed, iy, ix + 1, c) * wx
    bottom = _noise_value(seed, iy + 1, ix, c) * (1.0 - wx) + _noise_value(seed, iy + 1, ix + 1, c) * wx
    return top * (1.0 - wy) + bottom * wy


def augment_images(inputs: dict[str, Any]) -> Any:
    """(B, R, R, 3) uint8 crops + parameters -> augmented float32 images in [0, 1]."""
    image = ops.cast(inputs["image"], "float32")
    size = image.shape[1]
    m = ops.cast(inputs["matrix"], "float32")
    a, b, tx, c, d, ty = (m[:, i] for i in range(6))
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    zeros = ops.zeros_like(a)
    # affine_transform maps each output pixel to the input point to sample: the inverse of M.
    inverse = ops.stack([ia, ib, -(ia * tx + ib * ty), ic, id_, -(ic * tx + id_ * ty), zeros, zeros], axis=1)
    warped = ops.image.affine_transform(image, inverse, interpolation="bilinear", fill_mode="constant",
                                        fill_value=0, data_format="channels_last")
    color = ops.reshape(ops.cast(inputs["color"], "float32"), (-1, 1, 1, 3)) * (1.0 / 255.0)
    x = ops.minimum(warped * color, 1.0)
    box = ops.cast(inputs["occluder"], "int32")
    pix = ops.arange(size, dtype="int32")
    rows = ops.reshape(pix, (1, -1, 1, 1))
    cols = ops.reshape(pix, (1, 1, -1, 1))
    x0, y0, x1, y1 = (ops.reshape(box[:, i], (-1, 1, 1, 1)) for i in range(4))
    inside = ops.logical_and(ops.logical_and(rows >= y0, rows < y1), ops.logical_and(cols >= x0, cols < x1))
    noise = _noise_canvas(ops.cast(inputs["noise_seed"], "int32"), ops.cast(inputs["noise_grain"], "int32"),
                          box[:, 0], box[:, 1], size)
    solid = ops.reshape(ops.cast(inputs["occluder_color"], "float32"), (-1, 1, 1, 3))
    is_noise = ops.reshape(ops.cast(inputs["occluder_noise"], "int32"), (-1, 1, 1, 1)) > 0
    fill = ops.where(is_noise, noise, solid)
    return ops.where(inside, fill, x)


def position_maps(value: Any) -> Any:
    """(B, R, R, 3) float32 crop px from a batch's ``position_map``: float values, or the
    uint8 (B, 2, R, R, 3) byte planes of float16 values (as stored, shuffled, in HDF5)."""
    if keras.backend.standardize_dtype(value.dtype) != "uint8":
        return ops.cast(value, "float32")
    shape = value.shape
    planes = ops.reshape(value, (-1, 2, shape[2] * shape[3] * shape[4]))
    pairs = ops.reshape(ops.transpose(planes, (0, 2, 1)), (-1, 2 * shape[2] * shape[3] * shape[4]))
    halves = ops.view(pairs, "float16")  # little-endian byte pairs -> float16
    return ops.cast(ops.reshape(halves, (-1, shape[2], shape[3], shape[4])), "float32")


def augment_labels(inputs: dict[str, Any], label_scale: float = LABEL_SCALE) -> Any:
    """(B, R, R, 3) position maps in crop px + parameters -> network labels (px / label_scale)."""
    pm = position_maps(inputs["position_map"])
    m = ops.reshape(ops.cast(inputs["matrix"], "float32"), (-1, 1, 1, 6))
    s = ops.reshape(ops.cast(inputs["scale"], "float32"), (-1, 1, 1))
    x, y, z = pm[..., 0], pm[..., 1], pm[..., 2]
    covered = ops.cast(ops.any(ops.not_equal(pm, 0.0), axis=-1), "float32")  # uncovered UV pixels stay 0
    nx = (m[..., 0] * x + m[..., 1] * y + m[..., 2]) * covered
    ny = (m[..., 3] * x + m[..., 4] * y + m[..., 5]) * covered
    return ops.stack([nx, ny, z * s], axis=-1) * (1.0 / label_scale)


@keras.saving.register_keras_serializable(package="prnet_keras")
class DeviceAugmentedModel(keras.Model):
    """Training wrapper: augments dict batches on the accelerator, then runs ``network``.

    Compile it like the network; save ``network`` (the weights are the same variables).
    """

    def __init__(self, network: keras.Model, label_scale: float = LABEL_SCALE, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.network = network
        self.label_scale = float(label_scale)

    def call(self, inputs: Any, training: bool = False) -> Any:
        if isinstance(inputs, dict):
            inputs = augment_images(inputs)
        return self.network(inputs, training=training)

    def _label(self, x: Any, y: Any) -> Any:
        return augment_labels(x, self.label_scale) if isinstance(x, dict) else y

    def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None,
                     training: bool = True) -> Any:
        if isinstance(x, dict) and sample_weight is None and "weight" in x:
            sample_weight = x["weight"]
        return super().compute_loss(x, self._label(x, y), y_pred, sample_weight, training)

    def compute_metrics(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        if isinstance(x, dict) and sample_weight is None and "weight" in x:
            sample_weight = x["weight"]
        return super().compute_metrics(x, self._label(x, y), y_pred, sample_weight)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "network": keras.saving.serialize_keras_object(self.network),
                "label_scale": self.label_scale}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "DeviceAugmentedModel":
        network = keras.saving.deserialize_keras_object(config.pop("network"))
        return cls(network, **config)
