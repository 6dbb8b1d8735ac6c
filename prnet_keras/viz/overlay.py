"""2D overlays on RGB uint8 images: landmarks with contour lines, dense points, boxes, pose axes.

All inputs are image-frame pixels (x right, y down). Every function returns a new image;
the input is never modified.
"""

from __future__ import annotations

import cv2
import numpy as np

# 68-point (iBUG) contours: (start, end inclusive, closed)
LANDMARK_CONTOURS = (
    (0, 16, False), (17, 21, False), (22, 26, False), (27, 30, False), (31, 35, False),
    (36, 41, True), (42, 47, True), (48, 59, True), (60, 67, True),
)


def _rgb_copy(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.dtype != np.uint8:
        a = np.clip(a * (255.0 if a.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a[..., :3]).copy()


def _scale(image: np.ndarray) -> int:
    return max(1, int(round(max(image.shape[:2]) / 400)))


def draw_landmarks(image: np.ndarray, keypoints: np.ndarray, color=(0, 255, 0), line_color=(255, 255, 255),
                   lines: bool = True, radius: int | None = None) -> np.ndarray:
    """68 landmarks (68, 2|3) as dots, joined by the face contours when ``lines``."""
    out = _rgb_copy(image)
    k = np.asarray(keypoints, np.float64)[:, :2]
    s = _scale(out)
    if lines and k.shape[0] == 68:
        for a, b, closed in LANDMARK_CONTOURS:
            pts = np.rint(k[a:b + 1]).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(out, [pts], closed, line_color, s, cv2.LINE_AA)
    for x, y in np.rint(k).astype(int):
        cv2.circle(out, (int(x), int(y)), radius or 2 * s, color, -1, cv2.LINE_AA)
    return out


def draw_dense(image: np.ndarray, vertices: np.ndarray, step: int = 4, color=(255, 64, 64)) -> np.ndarray:
    """Every ``step``-th vertex (N, 2|3) as a single pixel (vectorised, clipped to the image)."""
    out = _rgb_copy(image)
    h, w = out.shape[:2]
    v = np.rint(np.asarray(vertices)[::max(1, step), :2]).astype(np.int64)
    ok = (v[:, 0] >= 0) & (v[:, 0] < w) & (v[:, 1] >= 0) & (v[:, 1] < h)
    out[v[ok, 1], v[ok, 0]] = color
    return out


def draw_box(image: np.ndarray, box: np.ndarray, color=(255, 0, 0), center_size: bool = False) -> np.ndarray:
    """A box [left, top, right, bottom], or (cx, cy, size) square with ``center_size``."""
    out = _rgb_copy(image)
    b = np.asarray(box, np.float64).reshape(-1)
    if center_size:
        cx, cy, size = b[:3]
        b = np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])
    l, t, r, bt = np.rint(b[:4]).astype(int)
    cv2.rectangle(out, (int(l), int(t)), (int(r), int(bt)), color, 2 * _scale(out), cv2.LINE_AA)
    return out


def draw_pose_axes(image: np.ndarray, rotation: np.ndarray, origin_xy: np.ndarray, length: float) -> np.ndarray:
    """Head axes (x red, y green, z blue) of rotation R (camera frame, y up) drawn at ``origin_xy``."""
    out = _rgb_copy(image)
    r = np.asarray(rotation, np.float64)
    o = np.asarray(origin_xy, np.float64)[:2]
    for axis, color in zip(range(3), ((255, 0, 0), (0, 255, 0), (0, 0, 255))):
        d = r[:, axis] * length
        end = o + np.array([d[0], -d[1]])  # y up -> image y down
        cv2.arrowedLine(out, tuple(np.rint(o).astype(int).tolist()), tuple(np.rint(end).astype(int).tolist()),
                        color, 2 * _scale(out), cv2.LINE_AA, tipLength=0.15)
    return out


def draw_pose_box(image: np.ndarray, camera_matrix: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  color=(255, 255, 0)) -> np.ndarray:
    """The canonical-frame box [lo, hi] (3,) projected with the 3x4 camera (camera frame y up) as a wire cube."""
    out = _rgb_copy(image)
    h = out.shape[0]
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    p = np.asarray(camera_matrix, np.float64)
    cam = corners @ p[:, :3].T + p[:, 3]
    xy = np.stack([cam[:, 0], h - 1 - cam[:, 1]], 1)
    edges = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)]
    for a, b in edges:
        cv2.line(out, tuple(np.rint(xy[a]).astype(int).tolist()), tuple(np.rint(xy[b]).astype(int).tolist()),
                 color, 2 * _scale(out), cv2.LINE_AA)
    return out
