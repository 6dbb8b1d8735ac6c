"""Viewer fixtures: two small analytic faces, written by our writers in every mesh format.
(The private X server the viewer tests open windows in is the ``xserver`` fixture of tests/conftest.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

R = 256


def analytic_face(kind: str):
    """A smooth face-sized surface with an image whose colours vary across it: "a" an upright
    ellipse with a nose bump, "b" a wide, flat ellipse with a ridge. Returns (Face, UVLayout)."""
    from prnet_keras.geometry import UVLayout, grid_triangles
    from prnet_keras.inference import face_from_position_map

    rows, cols = np.mgrid[0:R, 0:R].astype(np.float64)
    ry, rx = (110.0, 80.0) if kind == "a" else (60.0, 120.0)
    inside = 1.0 - ((rows - 128) / ry) ** 2 - ((cols - 128) / rx) ** 2
    mask = inside >= 0
    flat = np.flatnonzero(mask)[np.linspace(0, mask.sum() - 1, 68).astype(int)]
    canonical = np.stack([cols[mask] - 128, 128 - rows[mask], np.zeros(mask.sum())], 1)
    layout = UVLayout(R, mask, np.stack([flat % R, flat // R]), np.where(mask, 3 / 16, 0), grid_triangles(mask),
                      canonical, source=f"test-{kind}")
    if kind == "a":
        z = 60 * np.sqrt(np.clip(inside, 0, 1)) + 35 * np.exp(-((rows - 135) ** 2 + (cols - 128) ** 2) / 150)
    else:
        z = 25 * np.sqrt(np.clip(inside, 0, 1)) + 20 * np.exp(-((cols - 160) ** 2) / 80)
    pm = np.stack([cols, rows, z], -1).astype(np.float32)
    image = np.zeros((R, R, 3), np.uint8)
    image[..., 0] = cols.astype(np.uint8) if kind == "a" else 40
    image[..., 1] = rows.astype(np.uint8)
    image[..., 2] = 200 if kind == "a" else (255 - cols).astype(np.uint8)
    return face_from_position_map(pm, np.eye(3), layout, image), layout


@pytest.fixture(scope="session")
def faces() -> dict[str, tuple]:
    """{"a": (Face, UVLayout), "b": (Face, UVLayout)} (see :func:`analytic_face`)."""
    return {kind: analytic_face(kind) for kind in ("a", "b")}


@pytest.fixture(scope="session")
def mesh_files(tmp_path_factory, faces) -> dict[str, Path]:
    """Face "a" in every format our writers produce, face "b" as .obj; the .npy with its layout beside it."""
    from prnet_keras.inference.writers import write_mat, write_obj, write_obj_textured, write_ply, write_uv_map

    out = tmp_path_factory.mktemp("meshes")
    (face_a, layout_a), (face_b, _) = faces["a"], faces["b"]
    files = {
        "obj": write_obj(face_a, out / "a.obj"),
        "textured": write_obj_textured(face_a, out / "a_textured.obj")[0],
        "ply": write_ply(face_a, out / "a.ply"),
        "mat": write_mat(face_a, out / "a.mat"),
        "mat_dotnet": write_mat(face_a, out / "a_dotnet.mat", "dotnet"),
        "npy": write_uv_map(face_a, out / "a")[1],
        "b_obj": write_obj(face_b, out / "b.obj"),
    }
    layout_a.save(out / "uv_layout.npz")
    return files
