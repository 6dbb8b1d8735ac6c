"""Geometry core: morphable models, pose, crops, UV layout, the rasteriser and its renders."""

from prnet_keras.geometry.crop import (
    CropConfig, apply_transform, crop_to_image, crop_transform, detector_crop, keypoint_box, training_crop,
    transform_scale, vertices_to_crop,
)
from prnet_keras.geometry.model_spec import load_morphable_model
from prnet_keras.geometry.morphable import MorphableModel, load_face3d_bfm, load_mean_bfm, save_face3d_bfm
from prnet_keras.geometry.pose import (
    angles_to_rotation, camera_matrix, estimate_pose_para, from_image, make_pose_para, orthographic_project,
    parse_pose_para, pose_vertices, rms_residual, rotation_to_angles, similarity_transform, to_image, umeyama,
)
from prnet_keras.geometry.raster import UVRenderPlan, rasterize, render_uv_map, uv_pixel_coords, uv_render_plan
from prnet_keras.geometry.render import render_depth, render_shaded, vertex_normals, vertex_visibility
from prnet_keras.geometry.uv import UVLayout, grid_triangles, load_uv_layout

__all__ = [
    "CropConfig", "MorphableModel", "UVLayout", "UVRenderPlan", "angles_to_rotation", "estimate_pose_para",
    "from_image",
    "orthographic_project", "uv_render_plan", "apply_transform", "camera_matrix", "crop_to_image",
    "crop_transform", "detector_crop", "grid_triangles", "keypoint_box", "load_face3d_bfm", "load_mean_bfm",
    "load_morphable_model", "load_uv_layout", "make_pose_para", "parse_pose_para", "pose_vertices", "rasterize",
    "render_depth", "render_shaded", "render_uv_map", "rms_residual", "rotation_to_angles", "save_face3d_bfm",
    "similarity_transform", "to_image", "training_crop", "transform_scale", "umeyama", "uv_pixel_coords",
    "vertex_normals", "vertex_visibility", "vertices_to_crop",
]
