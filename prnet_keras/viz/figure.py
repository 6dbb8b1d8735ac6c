"""Figures: the 4-panel face summary (input with crop box, UV position map, 2D alignment, shaded
mesh) and a row of titled images (before / after)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from prnet_keras.utils import atomic_write_bytes
from prnet_keras.viz.overlay import draw_box, draw_dense, draw_landmarks
from prnet_keras.viz.render import render_mesh


def uv_map_image(position_map: np.ndarray) -> np.ndarray:
    """(R, R, 3) position map -> RGB uint8 for display: each channel min-max scaled over non-zero pixels."""
    pm = np.asarray(position_map, np.float64)
    out = np.zeros(pm.shape, np.uint8)
    mask = np.any(pm != 0, axis=-1)
    if mask.any():
        vals = pm[mask]
        lo, hi = vals.min(0), vals.max(0)
        out[mask] = np.rint(255 * (vals - lo) / np.maximum(hi - lo, 1e-9)).astype(np.uint8)
    return out


def face_figure(image: np.ndarray, uv_map: np.ndarray, vertices: np.ndarray, triangles: np.ndarray,
                keypoints: np.ndarray, crop_box: tuple[float, float, float], colors: np.ndarray | None = None):
    """matplotlib Figure with the four panels (arrays in image frame, y down, pixels)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, works headless

    h, w = image.shape[:2]
    fig = Figure(figsize=(12, 3.4), dpi=100)
    axes = fig.subplots(1, 4)
    aligned = draw_landmarks(draw_dense(image, vertices, step=8), keypoints)
    panels = [
        ("input + crop box", draw_box(image, crop_box, center_size=True)),
        ("UV position map", uv_map_image(uv_map)),
        ("2D alignment", aligned),
        ("3D mesh", render_mesh(vertices, triangles, colors, h, w)),
    ]
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(img)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    return fig


def save_face_figure(path: str | os.PathLike, image: np.ndarray, uv_map: np.ndarray, vertices: np.ndarray,
                     triangles: np.ndarray, keypoints: np.ndarray, crop_box: tuple[float, float, float],
                     colors: np.ndarray | None = None) -> Path:
    """Render :func:`face_figure` to a PNG file (atomically)."""
    fig = face_figure(image, uv_map, vertices, triangles, keypoints, crop_box, colors)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def save_panels(path: str | os.PathLike, panels: list[tuple[str, np.ndarray]], height_in: float = 3.2) -> Path:
    """A row of titled RGB images (e.g. before / after) as one PNG file (atomically)."""
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("save_panels: no panels")
    widths = [img.shape[1] / img.shape[0] for _, img in panels]
    fig = Figure(figsize=(height_in * sum(widths) * 0.92 + 0.2, height_in), dpi=100)
    axes = fig.subplots(1, len(panels), gridspec_kw={"width_ratios": widths}, squeeze=False)[0]
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(img)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
