"""MTCNN's first stage in one network call: the image pyramid packed into one canvas.

mtcnn 1.0 resizes the image once per pyramid scale (TensorFlow ops) and runs its proposal
network (PNet) once per scale: 8 scales for a 450² photo with 40 px faces, each call small and
dominated by per-call overhead (~70 % of a whole detection on 2 cores). Here the scales are
resized with OpenCV and packed side by side (shelf packing, even offsets, 2 px gaps) into one
canvas, PNet runs once on it, and each scale's part of the output map is cut out and decoded
exactly as mtcnn does (its own box generation, NMS and squaring).

PNet is fully convolutional with a 12 × 12 window and stride 2, so an output cell whose window
lies inside one scale sees exactly what it sees when that scale runs alone; only the last row
and column of a scale can differ (its max-pooling pads at the image edge). The boxes the whole
detector returns are the same within a pixel (tested).
"""

from __future__ import annotations

from typing import Any, Callable

import cv2
import numpy as np

GAP = 2


class _Out(np.ndarray):
    """A numpy array with ``.numpy()``: what mtcnn's helpers call on TensorFlow tensors."""

    def numpy(self) -> np.ndarray:
        return np.asarray(self)


def pack(sizes: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """Shelf packing of (h, w) rectangles in the given order (largest first); offsets are even.
    Returns ((y, x) per rectangle, (height, width) of the canvas)."""
    if not sizes:
        return [], (0, 0)
    width = sizes[0][1] + GAP + (sizes[1][1] if len(sizes) > 1 else 0)
    width += width % 2
    out, x, y, shelf = [], 0, 0, 0
    for h, w in sizes:
        if x and x + w > width:
            x, y, shelf = 0, y + shelf + GAP + (y + shelf + GAP) % 2, 0
        out.append((y, x))
        x += w + GAP + (w + GAP) % 2
        shelf = max(shelf, h)
    return out, (y + shelf, width)


def packed_pnet_call(stage: Any, pyramid: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """A replacement for ``StagePNet.__call__`` of mtcnn 1.0 (same arguments and result)."""
    from mtcnn.utils.bboxes import generate_bounding_box, resize_to_square, smart_nms_from_bboxes, upscale_bboxes

    def call(images_normalized, images_oshapes, min_face_size=20, min_size=12, scale_factor=0.709,
             threshold_pnet=0.6, nms_pnet1=0.5, nms_pnet2=0.7, **kwargs):
        images = np.asarray(images_normalized, np.float32)
        b, h, w = images.shape[:3]
        # one pyramid for the batch: the largest image's (as mtcnn's apply_scales picks)
        shapes = np.asarray(images_oshapes)
        big = int(np.argmax(shapes[:, 0] * shapes[:, 1]))
        scales = pyramid(int(shapes[big][1]), int(shapes[big][0]), min_face_size, scale_factor, min_size)
        # the batch is padded to (h, w); tf.image.resize truncates the scaled size
        sizes = [(int(h * s), int(w * s)) for s in scales]
        keep = [i for i, (sh, sw) in enumerate(sizes) if sh >= 12 and sw >= 12]
        scales, sizes = [scales[i] for i in keep], [sizes[i] for i in keep]
        if not sizes:
            return np.empty((0, 6))
        offsets, (ch, cw) = pack(sizes)
        canvas = np.zeros((b, ch, cw, 3), np.float32)
        for (sh, sw), (y, x) in zip(sizes, offsets):
            for k in range(b):
                canvas[k, y:y + sh, x:x + sw] = cv2.resize(images[k], (sw, sh), interpolation=cv2.INTER_AREA)
        reg, prob = (np.asarray(t, np.float32) for t in stage._model(canvas))
        per_scale = []
        for s, (sh, sw), (y, x) in zip(scales, sizes, offsets):
            rows, cols = -(-(sh - 2) // 2) - 4, -(-(sw - 2) // 2) - 4
            r0, c0 = y // 2, x // 2
            boxes = generate_bounding_box(reg[:, r0:r0 + rows, c0:c0 + cols].view(_Out),
                                          prob[:, r0:r0 + rows, c0:c0 + cols].view(_Out), threshold_pnet)
            boxes = upscale_bboxes(boxes, np.asarray([s] * b))
            per_scale.append(smart_nms_from_bboxes(boxes, threshold=nms_pnet1, method="union", initial_sort=False))
        boxes = np.concatenate(per_scale, axis=0) if per_scale else np.empty((0, 6))
        boxes = smart_nms_from_bboxes(boxes, threshold=nms_pnet2, method="union", initial_sort=True)
        return resize_to_square(boxes)

    return call
