"""Headless mesh rendering to images (for figures, tests and servers without a display).

Two back-ends: the project's own shaded rasteriser (``geometry.render_shaded``, always
available, deterministic) and open3d's off-screen ``Visualizer(visible=False)`` (optional;
returns None when no OpenGL context can be made, and runs in a child process).
"""

from __future__ import annotations

import numpy as np

from prnet_keras.geometry import angles_to_rotation, render_shaded


def _fit_to_canvas(vertices: np.ndarray, size: int, margin: float = 0.05) -> np.ndarray:
    # Scale/translate x, y (image frame, y down) to fill a size² canvas, keeping aspect.
    v = np.asarray(vertices, np.float64).copy()
    lo, hi = v[:, :2].min(0), v[:, :2].max(0)
    k = (1 - 2 * margin) * (size - 1) / max(float((hi - lo).max()), 1e-9)
    v[:, :2] = (v[:, :2] - (lo + hi) / 2) * k + (size - 1) / 2
    v[:, 2] = (v[:, 2] - v[:, 2].min()) * k
    return v.astype(np.float32)


def render_mesh(vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray | None = None,
                height: int | None = None, width: int | None = None, background: float = 0.0) -> np.ndarray:
    """Shade a mesh in image frame (x, y pixels y down, z nearer = larger) -> (H, W, 3) uint8.

    Without ``height``/``width`` the mesh is fitted into a 256² canvas.
    """
    v = np.asarray(vertices, np.float32)
    if height is None or width is None:
        v = _fit_to_canvas(v, 256)
        height = width = 256
    img = render_shaded(v, triangles, colors, int(height), int(width), background=background)
    return np.rint(img * 255).astype(np.uint8)


def render_views(vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray | None = None,
                 yaws_deg: tuple[float, ...] = (-60.0, 0.0, 60.0), size: int = 256,
                 frontal_rotation: np.ndarray | None = None) -> np.ndarray:
    """Side-by-side renders (size, size·len(yaws), 3) uint8 of the mesh turned about its vertical axis.

    vertices are image frame (y down); ``frontal_rotation`` (the pose R, camera frame) is undone
    first so yaw 0 is a frontal view.
    """
    v = np.asarray(vertices, np.float64).copy()
    v[:, 1] = -v[:, 1]  # to y up for rotations
    v -= v.mean(0)
    if frontal_rotation is not None:
        v = v @ np.asarray(frontal_rotation, np.float64)  # V·R undoes V_cam = V0·Rᵀ
    panels = []
    for yaw in yaws_deg:
        r = angles_to_rotation(np.radians([0.0, yaw, 0.0]))
        w = v @ r.T
        w[:, 1] = -w[:, 1]  # back to y down
        panels.append(render_mesh(_fit_to_canvas(w, size), triangles, colors, size, size))
    return np.concatenate(panels, axis=1)


_O3D_SCRIPT = """
import sys
import numpy as np
import open3d as o3d

d = np.load(sys.argv[1])
mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(d["v"]), o3d.utility.Vector3iVector(d["t"]))
if d["c"].size:
    mesh.vertex_colors = o3d.utility.Vector3dVector(d["c"])
mesh.compute_vertex_normals()
vis = o3d.visualization.Visualizer()
if not vis.create_window(visible=False, width=int(d["w"]), height=int(d["h"])):
    sys.exit(3)
vis.add_geometry(mesh)
vis.poll_events()
vis.update_renderer()
buf = np.asarray(vis.capture_screen_float_buffer(do_render=True))
vis.destroy_window()
np.save(sys.argv[2], buf)
"""


def render_open3d(vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray | None = None,
                  width: int = 512, height: int = 512, timeout_s: float = 60.0) -> np.ndarray | None:
    """Off-screen open3d render (H, W, 3) uint8 of a camera-frame (y up) mesh; None when impossible.

    Runs in a child process: open3d's EGL context can crash the interpreter (segfault) when
    TensorFlow is loaded in the same process, and a crash must not take the caller down.
    """
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "mesh.npz", Path(tmp) / "out.npy"
        np.savez(src, v=np.asarray(vertices, np.float64), t=np.asarray(triangles, np.int32),
                 c=np.zeros((0, 3)) if colors is None else np.clip(np.asarray(colors, np.float64), 0, 1),
                 w=width, h=height)
        try:
            proc = subprocess.run([sys.executable, "-c", _O3D_SCRIPT, str(src), str(dst)], capture_output=True,
                                  timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if proc.returncode != 0 or not dst.exists():
            return None
        buf = np.load(dst)
    if buf.size == 0:
        return None
    return np.rint(np.clip(buf, 0, 1) * 255).astype(np.uint8)


def save_render(path, image: np.ndarray) -> None:
    """Write an RGB uint8 render as PNG atomically."""
    import cv2

    from prnet_keras.utils import atomic_write_bytes

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(np.asarray(image)[..., ::-1]))
    if not ok:  # pragma: no cover
        raise ValueError(f"{path}: cannot encode image as PNG")
    atomic_write_bytes(path, buf.tobytes())
