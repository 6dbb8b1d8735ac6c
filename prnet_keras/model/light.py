"""A light position-map network for CPU and mobile: MobileNetV2 encoder + U-Net decoder.

Encoder: MobileNetV2 inverted-residual blocks (expansion 1x1 -> depthwise 3x3 -> linear 1x1
projection, residual when shapes allow, ReLU6) scaled by a width multiplier, 256 -> 8.
Decoder: bilinear 2x upsampling, concatenation with the encoder feature of the same
resolution (landmark-level detail survives the bottleneck) and a depthwise-separable
conv block per scale, back to 256, then a 3x3 conv + sigmoid. 2.0 M parameters at width 1 (0.15 M at width 0.25).
Uses only ``keras.layers``, so it runs on every Keras backend and converts to TFLite/ONNX.
"""

from __future__ import annotations

import keras
from keras import layers

from prnet_keras import RESOLUTION

# MobileNetV2 (expansion t, channels c, repeats n, first stride s), the classifier head omitted.
_MBV2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
# Decoder output channels at 16, 32, 64, 128, 256 pixels (before the width multiplier).
_DECODER = [128, 64, 48, 32, 16]


def _width(channels: float, width: float, divisor: int = 8) -> int:
    """MobileNet channel rounding: multiple of ``divisor``, never below 90 % of the target."""
    c = channels * width
    out = max(divisor, int(c + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * c else out


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, act: bool = True):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x) if act else x


def _inverted_residual(x, expansion: int, filters: int, stride: int, name: str):
    """MobileNetV2 block; residual add only when stride 1 and channels unchanged."""
    in_ch = x.shape[-1]
    y = x
    if expansion != 1:
        y = _conv_bn(y, in_ch * expansion, 1, 1, f"{name}_expand")
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = layers.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_dw_relu")(y)
    y = _conv_bn(y, filters, 1, 1, f"{name}_project", act=False)
    if stride == 1 and in_ch == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def _separable_block(x, filters: int, name: str):
    """Depthwise 3x3 + BN + ReLU6, pointwise 1x1 + BN + ReLU6."""
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(name=f"{name}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    return _conv_bn(x, filters, 1, 1, f"{name}_pw")


def build_light(width: float = 1.0, resolution: int = RESOLUTION, name: str = "light") -> keras.Model:
    """Build the light model. Input (B, R, R, 3) float32 in [0, 1]; output (B, R, R, 3) sigmoid.

    ``width`` is the MobileNet width multiplier (1.0 default, 0.25 for tiny test models);
    ``resolution`` must be a multiple of 32.
    """
    if not 0.0 < width <= 4.0:
        raise ValueError(f"light: width must be in (0, 4], got {width}")
    if resolution % 32:
        raise ValueError(f"light: resolution must be a multiple of 32, got {resolution}")
    inputs = keras.Input((resolution, resolution, 3), name="image")
    # MobileNet expects [-1, 1]; the network input convention here is [0, 1].
    x = layers.Rescaling(2.0, offset=-1.0, name="rescale")(inputs)
    x = _conv_bn(x, _width(32, width), 3, 2, "stem")  # R/2
    skips = {}  # resolution -> last feature map at that resolution
    block = 0
    for t, c, n, s in _MBV2:
        for i in range(n):
            x = _inverted_residual(x, t, _width(c, width), s if i == 0 else 1, f"block{block}")
            block += 1
        skips[x.shape[1]] = x
    x = _conv_bn(x, _width(256, width), 1, 1, "bottleneck")
    for i, c in enumerate(_DECODER):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"up{i}")(x)
        skip = skips.get(x.shape[1])
        if skip is not None:
            x = layers.Concatenate(name=f"up{i}_concat")([x, skip])
        x = _separable_block(x, _width(c, width), f"up{i}")
    x = layers.Conv2D(3, 3, padding="same", name="head_conv")(x)
    outputs = layers.Activation("sigmoid", dtype="float32", name="head_sigmoid")(x)
    return keras.Model(inputs, outputs, name=name)
