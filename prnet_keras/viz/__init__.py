"""prnet_keras.viz: 2D overlays, the 4-panel figure, headless renders and interactive viewers.

Imports only geometry / numpy / matplotlib / cv2 / open3d (never inference), so it works on
plain arrays: image-frame vertices (x, y pixels, y down) unless a function says otherwise.
"""

from prnet_keras.viz.figure import face_figure, save_face_figure, uv_map_image
from prnet_keras.viz.overlay import draw_box, draw_dense, draw_landmarks, draw_pose_axes, draw_pose_box
from prnet_keras.viz.render import render_mesh, render_open3d, render_views, save_render

__all__ = [
    "draw_box", "draw_dense", "draw_landmarks", "draw_pose_axes", "draw_pose_box", "face_figure", "render_mesh",
    "render_open3d", "render_views", "save_face_figure", "save_render", "uv_map_image",
]
