"""ResFCN256, the official PRNet encoder-decoder, in backend-neutral Keras 3.

Every layer is named after the official TF1 variable scope with ``/`` replaced by ``__``
(Keras forbids ``/`` in layer names, PyTorch ``.``), so the TF1 variable ``resfcn256/resBlock_3/
Conv_1/BatchNorm/gamma`` is the ``gamma`` of layer ``resBlock_3__Conv_1__BatchNorm`` and
``resfcn256/Conv2d_transpose_5/weights`` the ``kernel`` of layer ``Conv2d_transpose_5``.
:func:`official_name` and :func:`official_variable_map` are that mapping table.
"""

from __future__ import annotations

import keras
from keras import layers

from prnet_keras import RESOLUTION

OFFICIAL_SCOPE = "resfcn256"
# TF1 l2_regularizer(scale) adds scale * sum(w^2) / 2; Keras L2(l) adds l * sum(w^2).
OFFICIAL_L2 = 2e-4
BN_EPSILON = 1e-3  # tf.contrib.layers.batch_norm default
SEP = "__"  # stands for the TF1 scope separator "/" in layer names
# Keras variable name -> TF1 variable name (last path component).
_VAR_TO_TF1 = {"kernel": "weights", "gamma": "gamma", "beta": "beta",
               "moving_mean": "moving_mean", "moving_variance": "moving_variance"}


def _suffix(i: int) -> str:
    """TF1 auto-naming: first scope 'X', then 'X_1', 'X_2', ..."""
    return "" if i == 0 else f"_{i}"


class _Builder:
    """Creates layers with official names and shared settings (no bias, L2, BN eps)."""

    def __init__(self, l2: float, bn_momentum: float) -> None:
        self.reg = keras.regularizers.L2(l2 / 2.0) if l2 > 0 else None
        self.bn_momentum = bn_momentum

    def bn(self, x, scope: str):
        return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=self.bn_momentum,
                                         name=f"{scope}{SEP}BatchNorm")(x)

    def conv(self, x, filters: int, kernel: int, stride: int, scope: str, bn: bool = True, act: bool = True):
        """TF1 ``tcl.conv2d`` under the official arg_scope: conv (no bias) [-> BN -> ReLU]."""
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                          kernel_regularizer=self.reg, name=scope)(x)
        if bn:
            x = self.bn(x, scope)
        if act:
            x = layers.ReLU(name=f"{scope}{SEP}relu")(x)
        return x

    def deconv(self, x, filters: int, stride: int, scope: str, activation: str = "relu"):
        """TF1 ``tcl.conv2d_transpose`` 4x4 (no bias) -> BN -> activation."""
        x = layers.Conv2DTranspose(filters, 4, strides=stride, padding="same", use_bias=False,
                                   kernel_regularizer=self.reg, name=scope)(x)
        x = self.bn(x, scope)
        # float32 output keeps the sigmoid (and the loss) exact under mixed precision.
        dtype = "float32" if activation == "sigmoid" else None
        return layers.Activation(activation, name=f"{scope}{SEP}{activation}", dtype=dtype)(x)

    def res_block(self, x, filters: int, stride: int, scope: str):
        """Official resBlock: bottleneck 1x1 (c/2) -> 4x4 (c/2, stride) -> 1x1 (c), add, BN, ReLU."""
        shortcut = x
        if stride != 1 or x.shape[-1] != filters:
            if stride != 1:
                # A 1x1 'same' conv with stride s reads pixels 0, s, 2s, ...: subsample, then a
                # stride-1 1x1 conv (same kernel, same result). TF 2.21's oneDNN backprop of a
                # strided 1x1 conv corrupts memory (segfault), so never emit one.
                shortcut = layers.MaxPooling2D(1, strides=stride, name=f"{scope}{SEP}shortcut_subsample")(shortcut)
            shortcut = self.conv(shortcut, filters, 1, 1, f"{scope}{SEP}shortcut", bn=False, act=False)
        y = self.conv(x, filters // 2, 1, 1, f"{scope}{SEP}Conv")
        y = self.conv(y, filters // 2, 4, stride, f"{scope}{SEP}Conv_1")
        y = self.conv(y, filters, 1, 1, f"{scope}{SEP}Conv_2", bn=False, act=False)
        y = layers.Add(name=f"{scope}{SEP}add")([y, shortcut])
        y = self.bn(y, scope)
        return layers.ReLU(name=f"{scope}{SEP}relu")(y)


# Encoder: (multiple of base filters, stride) for resBlock, resBlock_1, ... resBlock_9.
_ENCODER = [(2, 2), (2, 1), (4, 2), (4, 1), (8, 2), (8, 1), (16, 2), (16, 1), (32, 2), (32, 1)]
# Decoder: (multiple of base filters or None for 3 output channels, stride), Conv2d_transpose .. _16.
_DECODER = [(32, 1), (16, 2), (16, 1), (16, 1), (8, 2), (8, 1), (8, 1), (4, 2), (4, 1), (4, 1),
            (2, 2), (2, 1), (1, 2), (1, 1), (None, 1), (None, 1), (None, 1)]


def build_resfcn256(
    base_filters: int = 16,
    resolution: int = RESOLUTION,
    l2: float = OFFICIAL_L2,
    bn_momentum: float = 0.99,
    name: str = "resfcn256",
) -> keras.Model:
    """Build ResFCN256. Defaults give the exact official architecture.

    Input (B, resolution, resolution, 3) float32 crop / 255; output (B, resolution,
    resolution, 3) sigmoid position map (× LABEL_SCALE = crop pixels). ``base_filters``
    (official 16, must be even) scales every width for tiny test variants; ``l2`` is the
    TF1 regulariser scale (2e-4, applied halved as TF1 does); ``bn_momentum`` is the
    moving-statistics momentum (TF1 used 0.999; 0.99 settles faster on short runs and does
    not change the architecture or the checkpoint layout).
    """
    if base_filters < 2 or base_filters % 2:
        raise ValueError(f"resfcn256: base_filters must be an even integer >= 2, got {base_filters}")
    if resolution % 32:
        raise ValueError(f"resfcn256: resolution must be a multiple of 32, got {resolution}")
    b = _Builder(l2, bn_momentum)
    inputs = keras.Input((resolution, resolution, 3), name="image")
    x = b.conv(inputs, base_filters, 4, 1, "Conv")
    for i, (mult, stride) in enumerate(_ENCODER):
        x = b.res_block(x, base_filters * mult, stride, f"resBlock{_suffix(i)}")
    for i, (mult, stride) in enumerate(_DECODER):
        filters = 3 if mult is None else base_filters * mult
        last = i == len(_DECODER) - 1
        x = b.deconv(x, filters, stride, f"Conv2d_transpose{_suffix(i)}", "sigmoid" if last else "relu")
    return keras.Model(inputs, x, name=name)


def official_name(layer_name: str, variable_name: str) -> str:
    """Keras (layer, variable) -> official TF1 variable name, e.g.
    ('resBlock_3__Conv_1__BatchNorm', 'gamma') -> 'resfcn256/resBlock_3/Conv_1/BatchNorm/gamma'."""
    return "/".join([OFFICIAL_SCOPE, *layer_name.split(SEP), _VAR_TO_TF1[variable_name]])


def official_variable_map(model: keras.Model) -> dict[str, keras.Variable]:
    """Official TF1 variable name -> Keras variable, for every weight of a ResFCN256 model.

    Raises ValueError for a model whose weights do not all have an official counterpart
    (e.g. the light model).
    """
    out: dict[str, keras.Variable] = {}
    for layer in model.layers:
        for var in layer.weights:
            leaf = var.path.rsplit("/", 1)[-1]
            if leaf not in _VAR_TO_TF1:
                raise ValueError(f"{model.name}: weight {var.path} has no official ResFCN256 counterpart")
            key = official_name(layer.name, leaf)
            if key in out:
                raise ValueError(f"{model.name}: two weights map to {key}")
            out[key] = var
    return out
