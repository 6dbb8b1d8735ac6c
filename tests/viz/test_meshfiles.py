"""Reading the files the viewers open (no display needed): our writers' outputs read back exactly,
other tools' OBJ/PLY dialects, and bad files as one clear InputError (declared sizes checked first)."""

from __future__ import annotations

import shutil
import struct
import sys
import types

import numpy as np
import pytest

from prnet_keras.cli.view import main as view_main
from prnet_keras.errors import InputError
from prnet_keras.viz.meshfiles import load_view_mesh, read_mesh_mat


def test_our_files_read_back(mesh_files, faces):
    face, _ = faces["a"]
    v, tri, colors = face.camera_vertices, face.triangles, face.colors
    for name, v_tol, c_tol in (("obj", 1e-4, 1e-4), ("ply", 1e-4, 0.5 / 255), ("mat", 1e-5, 1e-6),
                               ("mat_dotnet", 1e-5, 1e-6)):
        mesh = load_view_mesh(mesh_files[name])
        np.testing.assert_allclose(mesh.vertices, v, atol=v_tol, err_msg=name)
        np.testing.assert_array_equal(mesh.triangles, tri, err_msg=name)
        np.testing.assert_allclose(mesh.colors, colors, atol=c_tol, err_msg=name)
        assert mesh.texture is None and not mesh.notes
    textured = load_view_mesh(mesh_files["textured"])
    np.testing.assert_allclose(textured.vertices, v, atol=1e-4)
    assert textured.colors is None and textured.texture.shape[2] == 3 and textured.triangle_uvs.shape == (tri.size, 2)
    # the texture holds the vertex colours at each vertex's UV (the orientation the viewer uses)
    assert np.abs(textured.point_colors() - colors).mean() < 0.01
    assert read_mesh_mat(mesh_files["mat_dotnet"])["full_triangles"].shape == tri.shape


def test_position_map_with_layout_beside_without_and_given(mesh_files, faces, tmp_path):
    face, layout = faces["a"]
    mesh = load_view_mesh(mesh_files["npy"])  # uv_layout.npz lies beside it
    expected = layout.vertices_from_map(face.position_map) * np.array([1, -1, 1])
    np.testing.assert_allclose(mesh.vertices, expected, atol=1e-4)
    np.testing.assert_array_equal(mesh.triangles, layout.triangles)
    assert mesh.colors is None and not mesh.notes
    alone = tmp_path / "alone_uv.npy"
    shutil.copy(mesh_files["npy"], alone)
    fallback = load_view_mesh(alone)  # no layout: every non-zero pixel, on the pixel grid
    assert fallback.vertices.shape[0] == 256 * 256 - int((np.abs(face.position_map).max(-1) == 0).sum())
    assert "no UV layout" in fallback.notes[0] and "--uv-data" in fallback.notes[0]
    given = load_view_mesh(alone, uv_data=mesh_files["npy"].parent / "uv_layout.npz")
    np.testing.assert_array_equal(given.triangles, layout.triangles)
    small = tmp_path / "small.npy"
    np.save(small, np.ones((128, 128, 3), np.float32))
    with pytest.raises(InputError, match="does not fit the 256x256 UV layout"):
        load_view_mesh(small, uv_data=mesh_files["npy"].parent / "uv_layout.npz")
    points = tmp_path / "points.npy"
    np.save(points, np.random.default_rng(0).normal(size=(500, 3)))
    pts = load_view_mesh(points)
    assert pts.triangles is None and "showing points" in pts.notes[0]


def test_obj_dialects(tmp_path):
    obj = tmp_path / "quad.obj"
    obj.write_text("# a quad with 0..255 colours, normals and relative indices\n"
                   "v 0 0 0 255 0 0\nv 1 0 0 0 255 0\nv 1 1 0 0 0 255\nv 0 1 0 255 255 255\n"
                   "vn 0 0 1\nvt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n"
                   "g face\ns off\nf -4/1/1 -3/2/1 -2/3/1 -1/4/1\nf 1//1 3//1 4//1\n")
    mesh = load_view_mesh(obj)
    np.testing.assert_array_equal(mesh.triangles, [[0, 1, 2], [0, 2, 3], [0, 2, 3]])
    np.testing.assert_allclose(mesh.colors[:2], [[1, 0, 0], [0, 1, 0]])
    assert mesh.texture is None  # no material library
    lib = tmp_path / "tex.obj"
    lib.write_text("mtllib tex.mtl\nusemtl skin\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nf 1/1 2/2 3/3\n")
    assert "tex.mtl: material file not found" in load_view_mesh(lib).notes[0]
    (tmp_path / "tex.mtl").write_text("newmtl other\nmap_Kd other.png\nnewmtl skin\nmap_Kd -s 1 1 1 skin.png\n")
    assert "skin.png: cannot read texture image" in load_view_mesh(lib).notes[0]
    from PIL import Image

    Image.fromarray(np.full((4, 8, 3), 200, np.uint8)).save(tmp_path / "skin.png")
    textured = load_view_mesh(lib)
    assert textured.texture.shape == (4, 8, 3) and textured.triangle_uvs.shape == (3, 2) and not textured.notes


def _ply_header(fmt: str, n_vertex: int, n_face: int, colors: bool = True) -> bytes:
    props = "property float x\nproperty float y\nproperty float z\n"
    if colors:
        props += "property uchar red\nproperty uchar green\nproperty uchar blue\n"
    return (f"ply\nformat {fmt} 1.0\ncomment made by a test\nelement vertex {n_vertex}\n{props}"
            f"element face {n_face}\nproperty list uchar int vertex_indices\nend_header\n").encode()


def test_ply_ascii_big_endian_and_polygons(tmp_path):
    ascii_ply = tmp_path / "a.ply"
    body = b"0 0 0 255 0 0\n1 0 0 0 255 0\n1 1 0 0 0 255\n0 1 0 9 9 9\n4 0 1 2 3\n"  # one quad
    ascii_ply.write_bytes(_ply_header("ascii", 4, 1) + body)
    mesh = load_view_mesh(ascii_ply)
    np.testing.assert_array_equal(mesh.triangles, [[0, 1, 2], [0, 2, 3]])
    np.testing.assert_allclose(mesh.colors[0], [1, 0, 0])
    big = tmp_path / "b.ply"
    verts = b"".join(struct.pack(">fff", *v) for v in [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)])
    faces = struct.pack(">Biii", 3, 0, 1, 2) + struct.pack(">Biiii", 4, 0, 1, 2, 3)  # mixed lengths
    big.write_bytes(_ply_header("binary_big_endian", 4, 2, colors=False) + verts + faces)
    mesh = load_view_mesh(big)
    np.testing.assert_allclose(mesh.vertices[2], [1, 1, 0])
    np.testing.assert_array_equal(mesh.triangles, [[0, 1, 2], [0, 1, 2], [0, 2, 3]])
    assert mesh.colors is None


@pytest.mark.parametrize("name, content, message", [
    ("huge.ply", _ply_header("binary_little_endian", 2_000_000_000, 0) + b"\0" * 64,
     "declares 2000000000 vertex element"),
    ("short.ply", _ply_header("ascii", 3, 0) + b"0 0 0 1 2 3\n", "declares 3 vertex element"),
    ("index.ply", _ply_header("ascii", 1, 1) + b"0 0 0 1 1 1\n3 0 1 2\n", "outside the 1 vertices"),
    ("header.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty half x\nend_header\n",
     "bad PLY header line"),
    ("nomagic.ply", b"solid cube\n", "not a PLY file"),
    ("index.obj", b"v 0 0 0\nv 1 0 0\nf 1 2 3\n", "line 3: vertex index 3 outside 1..2"),
    ("words.obj", b"v 0 0 zero\n", "not numbers"),
    ("empty.obj", b"# nothing\n", "no 'v' lines"),
    ("garbage.mat", b"MATLAB? no", "not a MATLAB .mat file"),
    ("model.stl", b"solid", "unknown mesh file type .stl"),
    ("object.npy", None, "not a numeric NumPy .npy array"),
    ("huge.npy", None, "declares a larger array than the file holds"),
    ("rgba.npy", None, "expected a position map (H, W, 3) or vertices (N, 3)"),
])
def test_bad_files_are_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    if name == "object.npy":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif name == "huge.npy":  # the header promises a (100000, 100000, 3) float64 array; 80 bytes follow
        header = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000, 100000, 3), }"
        header = header.ljust(118) + "\n"
        path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * 80)
    elif name == "rgba.npy":
        np.save(path, np.zeros((8, 8, 4), np.float32))
    else:
        path.write_bytes(content)
    with pytest.raises(InputError) as info:
        load_view_mesh(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_view_mesh(tmp_path / "none.obj")
    (tmp_path / "dir.ply").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        load_view_mesh(tmp_path / "dir.ply")


def test_prnet_view_cli_errors_are_one_line(mesh_files, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.obj"
    bad.write_text("v 0 0 0\nf 1 2 3\n")
    assert view_main([str(mesh_files["obj"]), str(bad)]) == 2  # every file is checked before a window opens
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: line 2: vertex index 2")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if sys.platform.startswith("linux"):
        assert view_main([str(mesh_files["ply"])]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no display: DISPLAY is not set" in err[0]
    assert view_main(["--help"]) == 0
    assert view_main([]) == 2 and "required: FILE" in capsys.readouterr().err


def test_viewers_refuse_a_process_with_tensorflow(monkeypatch):
    from prnet_keras.viz import viewers
    from prnet_keras.viz.meshfiles import ViewMesh
    from prnet_keras.viz.viewers import ViewerError, show_meshes

    monkeypatch.setattr(viewers, "_check_display", lambda: None)  # this test is about the TensorFlow check only
    monkeypatch.setitem(sys.modules, "tensorflow", types.ModuleType("tensorflow"))
    with pytest.raises(ViewerError, match="TensorFlow is loaded in this process"):
        show_meshes([ViewMesh("m", np.zeros((3, 3)), np.array([[0, 1, 2]]))])
