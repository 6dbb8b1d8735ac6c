"""prnet-keras: PRNet (UV position-map regression) for Keras 3.

Packages, imports flowing one way (left to right):

    geometry -> data -> model -> train, evaluate, inference -> viz, server, cli
"""

__version__ = "0.1.0"

# Network input is the crop / 255; the label is the position map / LABEL_SCALE, so the
# sigmoid output times LABEL_SCALE is crop pixels (kept for official-checkpoint compatibility).
LABEL_SCALE = 256.0 * 1.1
RESOLUTION = 256
