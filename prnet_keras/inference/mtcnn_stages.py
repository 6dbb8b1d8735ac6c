"""MTCNN (the ``mtcnn`` 1.0 package's weights and box maths) run on one image without its driver.

The package's ``detect_faces`` normalises the whole image in float64, builds the pyramid and
cuts the stage-2/3 patches with TensorFlow ops and calls its three networks eagerly: ~210 ms
for a 450² photo with 20 px faces on 2 cores, ~18 ms here (~10 ms with 40 px faces). For one
uint8 RGB image:

1. the pyramid is area-resampled from the uint8 image in one pass and PNet runs once on it
   packed into one canvas (``inference.pnet_packed``);
2. the 24² (RNet) and 48² (ONet) patches are cut by :func:`crop_patches`, a numpy port of
   ``tf.image.crop_and_resize`` as mtcnn calls it (equal within float32 rounding);
3. the three networks run on an engine: ``"openvino"`` (compiled for the CPU, conversions
   cached like the PRNet ones) or ``"keras"`` (``tf.function`` graphs);
4. everything between (thresholds, NMS, box regression, squaring, landmark placement) is the
   package's own code, so the boxes are its boxes (within a pixel; tested).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from prnet_keras.errors import InputError
from prnet_keras.inference.pnet_packed import as_tensor_like, normalise, pnet_proposals

StageForward = Callable[[np.ndarray], tuple]
# input shapes traced and output channels (in the order the networks return them)
STAGES = {"pnet": ((None, None, None, 3), (4, 2)),
          "rnet": ((None, 24, 24, 3), (4, 2)),
          "onet": ((None, 48, 48, 3), (4, 10, 2))}


def crop_patches(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Patches of ``image`` under ``boxes``, bilinearly resized to size × size, normalised.

    image: (H, W, 3) uint8; boxes: (N, 4) [x1, y1, x2, y2] pixels (may reach outside the image:
    samples there get MTCNN's 0, a mid-grey). Returns (N, size, size, 3) float32. Samples are
    placed as ``tf.image.crop_and_resize`` places them for the box mtcnn gives it (coordinates
    divided by the image size, sampled over size - 1).
    """
    h, w = image.shape[:2]
    b = np.asarray(boxes, np.float64)
    t = np.arange(size, dtype=np.float64) / (size - 1)
    ys = (b[:, 1:2] + (b[:, 3:4] - b[:, 1:2]) * t) * ((h - 1) / h)  # (N, size) source rows
    xs = (b[:, 0:1] + (b[:, 2:3] - b[:, 0:1]) * t) * ((w - 1) / w)
    inside = ((ys >= 0) & (ys <= h - 1))[:, :, None] & ((xs >= 0) & (xs <= w - 1))[:, None, :]
    y0, x0 = np.floor(ys), np.floor(xs)
    fy = (ys - y0).astype(np.float32)[:, :, None, None]
    fx = (xs - x0).astype(np.float32)[:, None, :, None]
    y0 = np.clip(y0, 0, h - 1).astype(np.intp)[:, :, None]
    x0 = np.clip(x0, 0, w - 1).astype(np.intp)[:, None, :]
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    img = np.asarray(image)
    tl, bl = img[y0, x0].astype(np.float32), img[y1, x0].astype(np.float32)
    top = tl + (img[y0, x1] - tl) * fx
    bottom = bl + (img[y1, x1] - bl) * fx
    out = normalise(top + (bottom - top) * fy)
    out[~inside] = 0.0
    return out


def stage_networks() -> dict[str, Any] | None:
    """mtcnn 1.0's three Keras networks with their shipped weights, or None when the package's
    internals are not the expected ones."""
    from mtcnn import MTCNN

    stages = getattr(MTCNN(), "stages", None) or []
    if len(stages) != 3 or not all(hasattr(s, "_model") for s in stages):
        return None
    return dict(zip(STAGES, (s._model for s in stages)))


def _tf_forward(model: Any, input_shape: tuple) -> StageForward:
    import tensorflow as tf

    graph = tf.function(lambda x: model(x, training=False),
                        input_signature=[tf.TensorSpec(input_shape, tf.float32)])
    return lambda x: tuple(np.asarray(t, np.float32) for t in graph(x))


def stage_forwards(engine: str = "auto", cache: bool = True) -> tuple[dict[str, StageForward], str] | None:
    """({"pnet"|"rnet"|"onet": forward}, engine used) for MTCNN's networks; None when the
    package's internals are not the expected ones.

    engine: "auto" (OpenVINO when it can run here, else TensorFlow), "openvino" (InputError
    when it cannot), "keras" (TensorFlow graphs). ``cache``: keep OpenVINO's conversions.
    """
    from prnet_keras.model import engines

    networks = stage_networks()
    if networks is None:
        return None
    if engine == "auto":
        engine = "keras" if engines.openvino_unavailable_reason() else "openvino"
    if engine not in ("keras", "openvino"):
        raise InputError(f"detector engine: expected auto, keras or openvino, got {engine!r}")
    if engine == "keras":
        return {k: _tf_forward(m, STAGES[k][0]) for k, m in networks.items()}, "keras"
    return {k: engines.openvino_outputs_forward(m, *STAGES[k], cache=cache, subfolder="openvino-mtcnn")
            for k, m in networks.items()}, "openvino"


def detect(image: np.ndarray, forwards: dict[str, StageForward], scales: np.ndarray,
           thresholds: tuple[float, float, float] = (0.6, 0.7, 0.8)) -> np.ndarray:
    """MTCNN's three stages on one image with mtcnn 1.0's default NMS settings.

    image: (H, W, 3) uint8 RGB; scales: the PNet pyramid; thresholds: per-stage face scores.
    Returns (N, 16) float64 rows [0, x1, y1, x2, y2, score, 5 landmark x, 5 landmark y]
    (landmarks: left eye, right eye, nose, left and right mouth corner), boxes clipped to the
    image, best first after the last NMS.
    """
    from mtcnn.utils.bboxes import (adjust_bboxes, limit_bboxes, pick_matches, replace_confidence, resize_to_square,
                                    smart_nms_from_bboxes)
    from mtcnn.utils.landmarks import adjust_landmarks

    boxes = pnet_proposals(image, scales, forwards["pnet"], thresholds[0])
    if len(boxes):
        offsets, scores = forwards["rnet"](crop_patches(image, boxes[:, 1:5], 24))
        boxes = adjust_bboxes(replace_confidence(boxes, scores), offsets)
        boxes = pick_matches(boxes, score_threshold=thresholds[1])
        boxes = resize_to_square(smart_nms_from_bboxes(boxes, threshold=0.7, method="union", initial_sort=True))
    if not len(boxes):
        return np.empty((0, 16))
    offsets, points, scores = forwards["onet"](crop_patches(image, boxes[:, 1:5], 48))
    points = adjust_landmarks(as_tensor_like(points), boxes)
    boxes = adjust_bboxes(replace_confidence(boxes, scores), offsets)
    boxes = pick_matches(np.concatenate([boxes, points], axis=-1), scores_column=5, score_threshold=thresholds[2])
    boxes = smart_nms_from_bboxes(boxes, threshold=0.7, method="min", initial_sort=True)
    return limit_bboxes(boxes, images_shapes=np.asarray([image.shape]), limit_landmarks=False)
