"""Interactive viewers (need a display): open3d mesh / point-cloud windows, pptk when importable.

Inputs are camera-frame arrays (x right, y up, z toward viewer), e.g. ``Face.camera_vertices``
or a :class:`~prnet_keras.viz.meshfiles.ViewMesh`, so meshes appear upright. open3d's window
crashes (segfault) in a process that has loaded TensorFlow, so these functions refuse to run
there: open them from a process of their own (``prnet-view``, which ``prnet-predict --show``
starts as a child).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Sequence

import numpy as np

from prnet_keras.errors import PRNetError
from prnet_keras.viz.meshfiles import ViewMesh

WINDOW_SIZE = (960, 720)


class ViewerError(PRNetError):
    """No window could be opened (no display, no OpenGL, or TensorFlow loaded in this process)."""


def _check_process() -> None:
    if "tensorflow" in sys.modules:
        raise ViewerError("TensorFlow is loaded in this process and open3d's window crashes with it; "
                          "open the viewer in a process of its own (prnet-view FILE)")


def _check_display() -> None:
    """Refuse early when no X server answers: open3d then falls back to an invisible off-screen
    context and waits for a window that nobody can see or close."""
    if not sys.platform.startswith("linux"):
        return
    display = os.environ.get("DISPLAY")
    if not display:
        raise ViewerError("no display: DISPLAY is not set (run it in a desktop session, over ssh -X, or under "
                          "xvfb-run); without a display prnet-predict --show writes headless views instead")
    try:
        libx11 = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
    except OSError:  # no Xlib to ask: let open3d try
        return
    libx11.XOpenDisplay.restype, libx11.XOpenDisplay.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    libx11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    handle = libx11.XOpenDisplay(display.encode())
    if not handle:
        raise ViewerError(f"cannot open a window: no X server answers on display {display}")
    libx11.XCloseDisplay(handle)


def _o3d_mesh(mesh: ViewMesh):
    import open3d as o3d

    out = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.asarray(mesh.vertices, np.float64)),
                                    o3d.utility.Vector3iVector(np.asarray(mesh.triangles, np.int32)))
    if mesh.texture is not None and mesh.triangle_uvs is not None:
        uv = np.asarray(mesh.triangle_uvs, np.float64).copy()
        uv[:, 1] = 1.0 - uv[:, 1]  # open3d samples textures with v down (image rows)
        out.triangle_uvs = o3d.utility.Vector2dVector(uv)
        out.triangle_material_ids = o3d.utility.IntVector(np.zeros(len(mesh.triangles), np.int32))
        out.textures = [o3d.geometry.Image(np.ascontiguousarray(mesh.texture))]
    elif mesh.colors is not None:
        out.vertex_colors = o3d.utility.Vector3dVector(np.clip(np.asarray(mesh.colors, np.float64), 0, 1))
    out.compute_vertex_normals()
    return out


def _depth_colors(points: np.ndarray) -> np.ndarray:
    """Points without colours: a blue (far) to orange (near) ramp on z, so depth reads at a glance."""
    z = points[:, 2]
    t = ((z - z.min()) / max(float(np.ptp(z)), 1e-9))[:, None]
    return (1 - t) * np.array([0.15, 0.35, 0.75]) + t * np.array([0.95, 0.6, 0.25])


def _o3d_points(mesh: ViewMesh):
    import open3d as o3d

    pts = np.asarray(mesh.vertices, np.float64)
    colors = mesh.point_colors()
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    cloud.colors = o3d.utility.Vector3dVector(
        np.clip(np.asarray(colors, np.float64), 0, 1) if colors is not None else _depth_colors(pts))
    return cloud


def _open3d_session(items: list[tuple[object, str]], size: tuple[int, int]) -> None:
    """Show (open3d geometry, title) items in one window, one after another: Esc or Q shows the
    next (and closes the window after the last), the window's close button ends the session.

    One window for all: open3d ends GLFW when a Visualizer is freed, and a window opened after
    that in the same process sometimes never appears (seen under Xvfb with Mesa).
    """
    import open3d as o3d

    vis = o3d.visualization.VisualizerWithKeyCallback()
    if not vis.create_window(window_name=items[0][1], width=size[0], height=size[1]):
        raise ViewerError("cannot open a window: open3d could not create it (no OpenGL?)")
    current = [0]

    def show(k: int) -> None:
        geometry, title = items[k]
        if k:
            intrinsic = vis.get_view_control().convert_to_pinhole_camera_parameters().intrinsic
            vis.create_window(window_name=title, width=intrinsic.width, height=intrinsic.height)  # retitles
        vis.clear_geometries()
        vis.add_geometry(geometry)
        vis.reset_view_point(True)  # fit the view to this geometry alone (add_geometry widens the old box)
        vis.get_render_option().point_size = 3.0

    def next_item(_vis) -> bool:
        if current[0] + 1 >= len(items):
            vis.close()
            return False
        current[0] += 1
        show(current[0])
        return True

    for key in (256, ord("Q")):  # GLFW key codes of Esc and Q (open3d's own "close" keys)
        vis.register_key_callback(key, next_item)
    try:
        show(0)
        vis.run()  # until the last item is dismissed or the window is closed
    finally:
        vis.destroy_window()


def _pptk_window(mesh: ViewMesh) -> bool:
    try:
        import pptk  # type: ignore[import-not-found]
    except ImportError:
        return False
    colors = mesh.point_colors()
    viewer = pptk.viewer(np.asarray(mesh.vertices, np.float64))
    viewer.attributes(colors if colors is not None else _depth_colors(mesh.vertices))
    viewer.set(point_size=0.5)
    viewer.wait()  # pptk returns at once; wait for Enter in its window, then close it
    viewer.close()
    return True


def show_meshes(meshes: Sequence[ViewMesh], points: bool = False, backend: str = "auto",
                size: tuple[int, int] = WINDOW_SIZE) -> str:
    """Show the meshes one after another in a window (Esc or Q: next; blocks until done).

    ``points`` shows point clouds (pptk when importable and ``backend`` is auto/pptk: it has no
    wheels past Python 3.7; else open3d). Meshes without triangles are always points.
    Returns the backend used ("open3d" or "pptk").
    """
    if backend not in ("auto", "open3d", "pptk"):
        raise ValueError(f"backend: expected auto, open3d or pptk, got {backend!r}")
    _check_display()
    _check_process()
    used = "open3d"
    items = []
    for mesh in meshes:
        as_points = points or mesh.triangles is None or len(mesh.triangles) == 0
        if as_points and backend in ("auto", "pptk") and _pptk_window(mesh):
            used = "pptk"
            continue
        if as_points and backend == "pptk":
            print("pptk is not installed (no wheels past Python 3.7): showing the point cloud with open3d",
                  file=sys.stderr)
        title = f"prnet-view {'points' if as_points else 'mesh'}: {mesh.name}"
        if len(meshes) > 1:
            title += f" ({len(items) + 1}/{len(meshes)})"
        items.append((_o3d_points(mesh) if as_points else _o3d_mesh(mesh), title))
    if items:
        _open3d_session(items, size)
    return used


def show_mesh(vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray | None = None,
              title: str = "prnet-keras mesh") -> None:
    """Open an interactive open3d window with the mesh (blocks until closed).

    vertices (N, 3) camera frame (y up), triangles (T, 3), colors (N, 3) in [0, 1] or None.
    """
    show_meshes([ViewMesh(title, np.asarray(vertices, np.float64), np.asarray(triangles, np.int32), colors)])


def show_point_cloud(points: np.ndarray, colors: np.ndarray | None = None, title: str = "prnet-keras points",
                     backend: str = "auto") -> str:
    """Show a point cloud with pptk when importable (it has no wheels past Python 3.7), else open3d.

    Returns the backend used ("pptk" or "open3d").
    """
    return show_meshes([ViewMesh(title, np.asarray(points, np.float64), None, colors)], points=True, backend=backend)
