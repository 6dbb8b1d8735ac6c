"""prnet-keras: PRNet (UV position-map regression) for Keras 3.

Packages, imports flowing one way (left to right; no import cycles, tests/project checks both):

    geometry -> data, model, viz -> train, evaluate, inference -> server, client, cli

``viz`` depends only on ``geometry`` (so ``evaluate`` and ``inference`` draw with it); the
shared modules ``errors`` and ``utils`` sit below everything. The configuration
(``prnet_keras.config``) is read only by the entry points in ``cli``, which pass its values down.
"""

__version__ = "0.1.0"

# Network input is the crop / 255; the label is the position map / LABEL_SCALE, so the
# sigmoid output times LABEL_SCALE is crop pixels (kept for official-checkpoint compatibility).
LABEL_SCALE = 256.0 * 1.1
RESOLUTION = 256
