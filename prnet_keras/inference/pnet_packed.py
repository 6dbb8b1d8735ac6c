"""MTCNN's first stage in one network call: the image pyramid packed into one canvas.

mtcnn 1.0 resizes the image once per pyramid scale (TensorFlow ops) and runs its proposal
network (PNet) once per scale: 8 scales for a 450² photo with 40 px faces, each call small and
dominated by per-call overhead (~70 % of a whole detection on 2 cores). Here all scales are
area-resampled in one pass (:func:`_area_pyramid`), normalised and packed side by side (shelf
packing, even offsets, 2 px gaps) into one canvas, PNet runs once on it, and each scale's part of the
output map is cut out and decoded exactly as mtcnn does (its own box generation, NMS and
squaring).

PNet is fully convolutional with a 12 × 12 window and stride 2, so an output cell whose window
lies inside one scale sees exactly what it sees when that scale runs alone; only the last row
and column of a scale can differ (its max-pooling pads at the image edge). The boxes the whole
detector returns are the same within a pixel as mtcnn's own (tested).
"""

from __future__ import annotations

from typing import Callable

import numba
import numpy as np

GAP = 2


class _Out(np.ndarray):
    """A numpy array with ``.numpy()``: what mtcnn's helpers call on TensorFlow tensors."""

    def numpy(self) -> np.ndarray:
        return np.asarray(self)


def as_tensor_like(a: np.ndarray) -> np.ndarray:
    """``a`` viewed as an array that also answers ``.numpy()`` (for mtcnn's box helpers)."""
    return np.asarray(a).view(_Out)


PIXEL_MID, PIXEL_SCALE = 127.5, 1 / 128  # MTCNN's input scaling: (p - 127.5) / 128


def normalise(pixels: np.ndarray) -> np.ndarray:
    """MTCNN's input scaling of 0..255 pixels: (p - 127.5) / 128, float32."""
    return (pixels.astype(np.float32) - np.float32(PIXEL_MID)) * np.float32(PIXEL_SCALE)


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


@numba.njit(cache=True, nogil=True)
def _cells(n_src: int, n_dst: int):  # pragma: no cover - compiled
    """Area resampling of n_src pixels to n_dst cells: per cell the first and last source
    pixel it touches, the fractions before them, and 1 / its width in source pixels."""
    step = n_src / n_dst
    first, last = np.empty(n_dst, np.int64), np.empty(n_dst, np.int64)
    f_first, f_last, inv = np.empty(n_dst), np.empty(n_dst), np.empty(n_dst)
    for j in range(n_dst):
        a, b = j * step, min((j + 1) * step, n_src)
        first[j], last[j] = min(int(a), n_src - 1), min(int(b), n_src - 1)
        f_first[j], f_last[j] = a - first[j], b - last[j]
        inv[j] = 1.0 / (b - a)
    return first, f_first, last, f_last, inv


@numba.njit(cache=True, nogil=True)
def _area_pyramid(image, sizes, offsets, canvas):  # pragma: no cover - compiled
    """canvas[y:y+h, x:x+w] = MTCNN-normalised area average of ``image`` (H, W, C uint8) at
    (h, w), for each (h, w) of ``sizes`` (L, 2) at (y, x) of ``offsets`` (L, 2).

    What ``cv2.resize(normalise(image), (w, h), INTER_AREA)`` gives per level (equal within
    float32 rounding), but from one pass of running sums down the columns shared by all levels
    and running sums along each output row: ~2.5x faster than one OpenCV call per level, which
    reads the whole image each time. Area averaging commutes with the affine normalisation.
    """
    h, w, ch = image.shape
    n = w * ch
    flat = image.reshape(h, n)
    out = canvas.reshape(canvas.shape[0], canvas.shape[1] * ch)
    down = np.empty((h + 1, n))  # down[r] = sum of rows < r
    down[0, :] = 0.0
    for r in range(h):
        for q in range(n):
            down[r + 1, q] = down[r, q] + flat[r, q]
    along = np.empty(n + ch)  # along[q] = sum of the averaged row before element q
    for level in range(sizes.shape[0]):
        (rows, cols), (y0, x0) = (sizes[level, 0], sizes[level, 1]), (offsets[level, 0], offsets[level, 1])
        ya, fya, yb, fyb, yinv = _cells(h, rows)
        xa, fxa, xb, fxb, xinv = _cells(w, cols)
        for i in range(rows):
            along[:ch] = 0.0
            for q in range(n):
                top = down[ya[i], q] + fya[i] * (down[ya[i] + 1, q] - down[ya[i], q])
                bottom = down[yb[i], q] + fyb[i] * (down[yb[i] + 1, q] - down[yb[i], q])
                along[q + ch] = along[q] + (bottom - top) * yinv[i]
            for j in range(cols):
                pa, pb = xa[j] * ch, xb[j] * ch
                for k in range(ch):
                    left = along[pa + k] + fxa[j] * (along[pa + ch + k] - along[pa + k])
                    right = along[pb + k] + fxb[j] * (along[pb + ch + k] - along[pb + k])
                    out[y0 + i, (x0 + j) * ch + k] = ((right - left) * xinv[j] - PIXEL_MID) * PIXEL_SCALE


def pnet_proposals(image: np.ndarray, scales: np.ndarray, pnet: Callable[[np.ndarray], tuple],
                   threshold: float = 0.6, nms_per_scale: float = 0.5, nms_all: float = 0.7) -> np.ndarray:
    """PNet's face proposals for one image, as mtcnn's first stage returns them.

    image: (H, W, 3) uint8 RGB; scales: the pyramid (``detect._scale_pyramid``); pnet: (1, h, w,
    3) float32 normalised -> (box offsets (1, h', w', 4), face probabilities (1, h', w', 2)).
    Returns (N, 6) float64 squared boxes [image id 0, x1, y1, x2, y2, score] in image pixels.
    """
    from mtcnn.utils.bboxes import generate_bounding_box, resize_to_square, smart_nms_from_bboxes, upscale_bboxes

    h, w = image.shape[:2]
    sizes = [(int(h * s), int(w * s)) for s in scales]  # truncated, as tf.image.resize in mtcnn
    keep = [i for i, (sh, sw) in enumerate(sizes) if sh >= 12 and sw >= 12]
    scales, sizes = [scales[i] for i in keep], [sizes[i] for i in keep]
    if not sizes:
        return np.empty((0, 6))
    offsets, (ch, cw) = pack(sizes)
    canvas = np.zeros((1, ch, cw, 3), np.float32)  # gaps hold 0: a mid-grey pixel, normalised
    _area_pyramid(np.ascontiguousarray(image, np.uint8), np.asarray(sizes, np.int64), np.asarray(offsets, np.int64),
                  canvas[0])
    reg, prob = pnet(canvas)
    per_scale = []
    for s, (sh, sw), (y, x) in zip(scales, sizes, offsets):
        rows, cols = -(-(sh - 2) // 2) - 4, -(-(sw - 2) // 2) - 4
        r0, c0 = y // 2, x // 2
        boxes = generate_bounding_box(as_tensor_like(reg[:, r0:r0 + rows, c0:c0 + cols]),
                                      as_tensor_like(prob[:, r0:r0 + rows, c0:c0 + cols]), threshold)
        boxes = upscale_bboxes(boxes, np.asarray([s]))
        per_scale.append(smart_nms_from_bboxes(boxes, threshold=nms_per_scale, method="union", initial_sort=False))
    boxes = np.concatenate(per_scale, axis=0)
    boxes = smart_nms_from_bboxes(boxes, threshold=nms_all, method="union", initial_sort=True)
    return resize_to_square(boxes)
