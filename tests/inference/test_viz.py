"""Headless renders, overlays and the 4-panel figure on a ground-truth face."""

from __future__ import annotations

import numpy as np
import pytest

from prnet_keras.inference import Predictor
from prnet_keras.viz import (
    draw_box, draw_dense, draw_landmarks, draw_pose_axes, draw_pose_box, render_mesh, render_open3d, render_views,
    save_render, uv_map_image,
)


@pytest.fixture(scope="module")
def face(posed_samples, bfm_layout, map_network):
    s = posed_samples[0]
    return Predictor(map_network([s.gt_map]), bfm_layout).predict(s.image, landmarks=s.kpts)[0]


def test_headless_render_in_image_frame_covers_the_face(face):
    h, w = face.image_size
    img = render_mesh(face.vertices, face.triangles, face.colors, h, w)
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
    lit = img.max(2) > 0
    lo, hi = face.vertices[:, :2].min(0), face.vertices[:, :2].max(0)
    rows, cols = np.nonzero(lit)
    # the render sits exactly where the mesh is, and fills most of its box
    assert cols.min() >= np.floor(lo[0]) - 1 and cols.max() <= np.ceil(hi[0]) + 1
    assert rows.min() >= np.floor(lo[1]) - 1 and rows.max() <= np.ceil(hi[1]) + 1
    assert lit.sum() > 0.5 * np.prod(hi - lo)
    # nose tip (landmark 30) is lit and brighter than the image background
    x, y = np.rint(face.keypoints[30, :2]).astype(int)
    assert img[y, x].sum() > 0


def test_render_views_and_png(face, tmp_path):
    views = render_views(face.vertices, face.triangles, None, size=128, frontal_rotation=face.pose.rotation)
    assert views.shape == (128, 384, 3)
    for k in range(3):
        panel = views[:, 128 * k:128 * (k + 1)]
        assert (panel.max(2) > 0).mean() > 0.15  # each view shows a face-sized blob
    # the frontal (middle) view is left-right symmetric in coverage
    mid = views[:, 128:256].max(2) > 0
    assert abs(mid[:, :64].sum() - mid[:, 64:].sum()) < 0.1 * mid.sum()
    save_render(tmp_path / "v.png", views)
    assert (tmp_path / "v.png").stat().st_size > 1000


def test_open3d_offscreen_render_or_none(face):
    img = render_open3d(face.camera_vertices, face.triangles, face.colors, 160, 120)
    if img is not None:  # some machines have no GL context; the rasteriser is the fallback
        assert img.shape == (120, 160, 3) and img.std() > 1


def test_overlays_do_not_modify_input(face):
    img = face.image
    before = img.copy()
    a = draw_landmarks(img, face.keypoints)
    b = draw_dense(img, face.vertices, step=1)
    c = draw_box(img, face.crop_box, center_size=True)
    d = draw_pose_axes(img, face.pose.rotation, face.keypoints[30, :2], 60)
    lo, hi = face.layout.canonical_vertices.min(0), face.layout.canonical_vertices.max(0)
    e = draw_pose_box(img, face.pose.camera_matrix, lo, hi)
    np.testing.assert_array_equal(img, before)
    for out in (a, b, c, d, e):
        assert out.shape == img.shape and (out != img).any()
    # dense points land on the vertex pixels
    x, y = np.rint(face.vertices[0, :2]).astype(int)
    assert tuple(b[y, x]) == (255, 64, 64)
    # the pose box's projected corners enclose the face
    changed = np.nonzero((e != img).any(2))
    assert changed[1].min() <= face.vertices[:, 0].min() + 2 and changed[1].max() >= face.vertices[:, 0].max() - 2


def test_uv_map_image(face):
    img = uv_map_image(face.crop_map)
    assert img.dtype == np.uint8 and img.shape == (256, 256, 3) and img.max() == 255
