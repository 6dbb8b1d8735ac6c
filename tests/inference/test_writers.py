"""Written files load back with the right counts and values (open3d, scipy, numpy, cv2)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import open3d as o3d
import pytest
import scipy.io

from prnet_keras import LABEL_SCALE
from prnet_keras.errors import InputError
from prnet_keras.inference import Predictor
from prnet_keras.inference.writers import (
    OUTPUTS, mesh_mat_bytes, read_mesh_mat, write_face_outputs, write_obj, write_obj_textured, write_ply,
)


@pytest.fixture(scope="module")
def face(posed_samples, bfm_layout, map_network):
    # The mean-BFM layout: every face pixel is covered by the GT render, so no two vertices coincide
    # (the official mask reaches a few pixels past the BFM footprint, where a GT map is 0).
    s = posed_samples[1]
    return Predictor(map_network([s.gt_map]), bfm_layout).predict(s.image, landmarks=s.kpts)[0]


def test_obj_with_colours(face, tmp_path):
    path = write_obj(face, tmp_path / "f.obj")
    mesh = o3d.io.read_triangle_mesh(str(path), enable_post_processing=False)
    assert len(mesh.vertices) == face.vertices.shape[0] and len(mesh.triangles) == face.triangles.shape[0]
    # open3d's OBJ reader renumbers vertices in face order: compare per triangle corner
    got_tri = np.asarray(mesh.triangles)
    np.testing.assert_allclose(np.asarray(mesh.vertices)[got_tri], face.camera_vertices[face.triangles], atol=1e-3)
    np.testing.assert_allclose(np.asarray(mesh.vertex_colors)[got_tri], face.colors[face.triangles], atol=1e-4)
    rows = np.array([line.split()[1:] for line in path.read_text().splitlines() if line.startswith("v ")], float)
    np.testing.assert_allclose(rows[:, :3], face.camera_vertices, atol=1e-3)
    head = path.read_text().splitlines()[:3]
    assert any("y up" in line for line in head)
    # camera frame: y = h - 1 - y_image
    assert rows[0, 1] == pytest.approx(face.image_size[0] - 1 - face.vertices[0, 1], abs=1e-3)


def test_obj_textured_relative_paths(face, tmp_path):
    obj, mtl, png = write_obj_textured(face, tmp_path / "sub" / "t.obj", texture_size=512, visibility_mask=True)
    assert "mtllib t.mtl" in obj.read_text() and "map_Kd t_texture.png" in mtl.read_text()
    tex = cv2.imread(str(png))
    assert tex.shape == (512, 512, 3) and tex.max() > 0
    mesh = o3d.io.read_triangle_mesh(str(obj), enable_post_processing=False)
    assert len(mesh.vertices) == face.vertices.shape[0] and mesh.has_triangle_uvs()


def test_binary_ply(face, tmp_path):
    path = write_ply(face, tmp_path / "f.ply")
    assert path.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")
    mesh = o3d.io.read_triangle_mesh(str(path), enable_post_processing=False)
    np.testing.assert_allclose(np.asarray(mesh.vertices), face.camera_vertices, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(mesh.triangles), face.triangles)
    np.testing.assert_allclose(np.asarray(mesh.vertex_colors), np.rint(face.colors * 255) / 255, atol=1e-6)


@pytest.mark.parametrize("mat_type", ["normal", "dotnet"])
def test_mesh_mat_round_trip(face, mat_type):
    data = mesh_mat_bytes(face, mat_type)
    raw = scipy.io.loadmat(__import__("io").BytesIO(data))
    n, t = face.vertices.shape[0], face.triangles.shape[0]
    assert raw["vertices"].shape == ((n, 3) if mat_type == "normal" else (3, n))
    assert raw["full_triangles"].shape == ((t, 3) if mat_type == "normal" else (3, t))
    back = read_mesh_mat(data)
    np.testing.assert_allclose(back["vertices"], face.camera_vertices, atol=1e-4)
    np.testing.assert_array_equal(back["full_triangles"], face.triangles)
    assert back["full_triangles"].min() == 0
    # kptIdxs select the landmarks from the mesh (y up)
    kp = face.keypoints.copy()
    kp[:, 1] = face.image_size[0] - 1 - kp[:, 1]
    np.testing.assert_allclose(back["vertices"][back["kptIdxs"]], kp, atol=1e-4)
    np.testing.assert_allclose(back["bounding_box"], np.r_[back["vertices"].min(0), back["vertices"].max(0)])
    used = np.unique(face.triangles)  # a few isolated face pixels belong to no triangle: zero normal
    normals = back["vertex_normals"][used]
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-4)
    assert np.median(normals[:, 2]) > 0.3  # y-up camera frame, counter-clockwise: normals toward the viewer
    assert back["colors"].min() >= 0 and back["colors"].max() <= 1


def test_read_mesh_mat_errors(tmp_path):
    with pytest.raises(InputError, match="not a MATLAB .mat file"):
        read_mesh_mat(b"garbage")
    buf = __import__("io").BytesIO()
    scipy.io.savemat(buf, {"vertices": np.zeros((4, 3))})
    with pytest.raises(InputError, match="missing key"):
        read_mesh_mat(buf.getvalue())


def test_all_outputs(face, tmp_path):
    paths = write_face_outputs(face, tmp_path, "img_0", OUTPUTS, texture_size=256, visibility_mask=False)
    names = sorted(p.name for p in paths)
    assert names == sorted([
        "img_0.obj", "img_0.ply", "img_0.mat", "img_0_kpt.txt", "img_0_kpt.npy", "img_0_pose.json",
        "img_0_depth.png", "img_0_depth.npy", "img_0_textured.obj", "img_0_textured.mtl",
        "img_0_textured_texture.png", "img_0_uv.png", "img_0_uv.npy", "img_0_figure.png"])
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files
    kpt = np.loadtxt(tmp_path / "img_0_kpt.txt")
    np.testing.assert_allclose(kpt, face.keypoints, atol=1e-3)
    np.testing.assert_array_equal(np.load(tmp_path / "img_0_kpt.npy"), face.keypoints)
    pose = json.loads((tmp_path / "img_0_pose.json").read_text())
    assert pose["pose"]["yaw_deg"] == pytest.approx(face.pose.angles_deg[1])
    depth = np.load(tmp_path / "img_0_depth.npy")
    assert depth.shape == face.image_size
    png = cv2.imread(str(tmp_path / "img_0_depth.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint8 and ((png > 0) == face.depth_mask).all()
    uv = cv2.imread(str(tmp_path / "img_0_uv.png"), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert uv.dtype == np.uint16
    np.testing.assert_allclose(uv / 65535.0 * LABEL_SCALE, np.clip(face.crop_map, 0, LABEL_SCALE), atol=0.01)
    np.testing.assert_array_equal(np.load(tmp_path / "img_0_uv.npy"), face.position_map)
    fig = cv2.imread(str(tmp_path / "img_0_figure.png"))
    assert fig.shape[1] > 2 * fig.shape[0] and fig.std() > 10


def test_unknown_output(face, tmp_path):
    with pytest.raises(InputError, match="unknown"):
        write_face_outputs(face, tmp_path, "x", ["obj", "stl"])


def test_fast_text_formatting_matches_printf():
    from prnet_keras.inference.textfmt import format_rows

    rng = np.random.default_rng(3)
    vals = np.concatenate([rng.normal(0, 300, (500, 3)), rng.uniform(-1, 1, (500, 3)) * 1e-3])
    vals = vals[np.abs(vals).min(1) >= 1e-4]  # "%.4f" prints tiny negatives as -0.0000; we print 0.0000
    assert format_rows(vals, "v", 4) == ("v %.4f %.4f %.4f\n" * len(vals)) % tuple(vals.ravel())
    assert format_rows(vals[:, :2], "", 6) == ("%.6f %.6f\n" * len(vals)) % tuple(vals[:, :2].ravel())
    ints = rng.integers(-5, 100000, (300, 6))
    assert format_rows(ints, "f", None, " / / /") == ("f %d/%d %d/%d %d/%d\n" * 300) % tuple(ints.ravel())
    odd = np.array([[np.nan, 1.0], [2e15, -3.0]])  # fallback path
    assert format_rows(odd, "p", 2) == "p nan 1.00\np 2000000000000000.00 -3.00\n"
    assert format_rows(np.zeros((0, 3)), "v") == ""


def test_textured_obj_uvs_point_at_each_vertex_colour(face, tmp_path):
    obj, _, png = write_obj_textured(face, tmp_path / "t.obj", texture_size=256)
    vt = np.array([line.split()[1:] for line in obj.read_text().splitlines() if line.startswith("vt ")], float)
    assert vt.shape == (face.vertices.shape[0], 2) and vt.min() >= 0 and vt.max() <= 1
    tex = cv2.imread(str(png))[..., ::-1].astype(float)
    cols = np.rint(vt[:, 0] * 255).astype(int)
    rows = np.rint((1 - vt[:, 1]) * 255).astype(int)  # OBJ v is up, image rows go down
    texel = tex[rows, cols]
    # texture = bilinear image sample at the vertex, colours = nearest pixel: nearly equal
    assert np.median(np.abs(texel - face.colors * 255)) < 6
