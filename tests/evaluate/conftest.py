"""Evaluation fixtures: a tiny trainable network wrapped like ``model.io.Network``."""

from __future__ import annotations

import numpy as np
import pytest

from prnet_keras import LABEL_SCALE


def _pixel_bias_layer():
    import keras

    class PixelBias(keras.layers.Layer):
        """A learned (h, w, c) map added to the input: lets a tiny model learn the mean map."""

        def build(self, input_shape):
            self.bias = self.add_weight(shape=tuple(input_shape[1:]), initializer="zeros", name="bias")

        def call(self, x):
            return x + self.bias

    return PixelBias()


class TinyNetwork:
    """``Network``-like wrapper (predict -> crop pixels, .layout, .name) of a very small Keras
    model, so evaluation tests do not depend on the size of the real architectures."""

    def __init__(self, layout, seed: int = 0):
        import keras

        keras.utils.set_random_seed(seed)
        r = layout.resolution
        inp = keras.Input((r, r, 3))
        x = keras.layers.AveragePooling2D(16)(inp)
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
        x = _pixel_bias_layer()(keras.layers.Conv2D(3, 1)(x))
        x = keras.layers.UpSampling2D(16, interpolation="bilinear")(x)
        out = keras.layers.Activation("sigmoid")(x)
        self.model = keras.Model(inp, out)
        self.layout = layout
        self.name = "tiny"
        self.calls = 0

    def predict(self, images: np.ndarray) -> np.ndarray:
        self.calls += len(images)
        return np.asarray(self.model.predict(images, verbose=0, batch_size=8)) * LABEL_SCALE

    def fit(self, images: np.ndarray, maps: np.ndarray, steps: int = 80) -> None:
        import keras

        self.model.compile(optimizer=keras.optimizers.Adam(5e-2), loss="mse")
        # Built now: the first step is then traced once, not twice (about half its start-up).
        self.model.optimizer.build(self.model.trainable_variables)
        x = images.astype(np.float32) / 255.0
        y = maps.astype(np.float32) / LABEL_SCALE
        self.model.fit(x, y, epochs=steps, batch_size=len(x), verbose=0)


@pytest.fixture
def tiny_network_factory():
    return TinyNetwork
