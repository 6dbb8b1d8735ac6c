"""Interactive viewers (need a display): open3d mesh / point-cloud windows, pptk when importable.

Inputs are camera-frame arrays (x right, y up, z toward viewer), e.g. ``Face.camera_vertices``,
so meshes appear upright.
"""

from __future__ import annotations

import sys

import numpy as np


def _o3d_mesh(vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray | None):
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.asarray(vertices, np.float64)),
                                     o3d.utility.Vector3iVector(np.asarray(triangles, np.int32)))
    if colors is not None:
        mesh.vertex_colors = o3d.utility.Vector3dVector(np.clip(np.asarray(colors, np.float64), 0, 1))
    mesh.compute_vertex_normals()
    return mesh


def show_mesh(vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray | None = None,
              title: str = "prnet-keras mesh") -> None:
    """Open an interactive open3d window with the mesh (blocks until closed)."""
    import open3d as o3d

    o3d.visualization.draw_geometries([_o3d_mesh(vertices, triangles, colors)], window_name=title)


def show_point_cloud(points: np.ndarray, colors: np.ndarray | None = None, title: str = "prnet-keras points",
                     backend: str = "auto") -> str:
    """Show a point cloud with pptk when importable (it has no wheels past Python 3.7), else open3d.

    Returns the backend used ("pptk" or "open3d").
    """
    pts = np.asarray(points, np.float64)
    if backend in ("auto", "pptk"):
        try:
            import pptk  # type: ignore[import-not-found]

            viewer = pptk.viewer(pts)
            if colors is not None:
                viewer.attributes(np.asarray(colors))
            viewer.set(point_size=0.5)
            return "pptk"
        except ImportError:
            print("pptk is not installed (no wheels past Python 3.7): showing the point cloud with open3d", file=sys.stderr)
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    if colors is not None:
        cloud.colors = o3d.utility.Vector3dVector(np.clip(np.asarray(colors, np.float64), 0, 1))
    o3d.visualization.draw_geometries([cloud], window_name=title)
    return "open3d"
