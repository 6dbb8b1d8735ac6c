"""In-memory meshes for the server: reading PRNet-keras mesh .mat files; OBJ, PLY, JSON.

A :class:`Mesh` holds vertices in the *image* frame (x right, y down, z larger = nearer,
pixels). The PRNet-keras ``.mat`` stores them y-up (y' = h - 1 - y) like the peer
(written by ``inference.writers.mesh_mat_bytes``, read back here with full validation for
/evaluate); OBJ, PLY and the JSON mesh also use y-up so ordinary 3D viewers show the face
upright. Nothing here touches the file system.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np

from prnet_keras.server.codec import ApiError

@dataclasses.dataclass
class Mesh:
    """vertices (N, 3) float32 image frame; colors (N, 3) float32 in [0, 1];
    triangles (T, 3) int32 0-based; kpt_idx (68,) int32 indices into vertices."""

    vertices: np.ndarray
    colors: np.ndarray
    triangles: np.ndarray
    kpt_idx: np.ndarray

    @property
    def keypoints(self) -> np.ndarray:
        return self.vertices[self.kpt_idx]


def y_up(vertices: np.ndarray, height: int) -> np.ndarray:
    """Image frame -> y-up frame of the same image (its own inverse)."""
    out = np.array(vertices, dtype=np.float32, copy=True)
    out[:, 1] = height - 1 - out[:, 1]
    return out


def _n_by_3(mat: dict, key: str, field: str, dtype: type) -> np.ndarray:
    if key not in mat:
        raise ApiError(422, "invalid_mat", f"{field}: mesh .mat has no key {key!r}", field)
    try:
        a = np.asarray(mat[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise ApiError(422, "invalid_mat", f"{field}: mesh .mat key {key!r} is not numeric", field) from None
    if a.ndim != 2 or 3 not in a.shape:
        raise ApiError(422, "invalid_mat",
                       f"{field}: mesh .mat key {key!r} must be N x 3 (or 3 x N for dotnet), got {a.shape}", field)
    if a.shape[1] != 3:  # dotnet layout
        a = a.T
    if not np.all(np.isfinite(a)):
        raise ApiError(422, "invalid_mat", f"{field}: mesh .mat key {key!r} holds NaN or infinite values", field)
    return a.astype(dtype)


def mesh_from_mat(mat: dict, height: int, field: str, max_vertices: int) -> Mesh:
    """A decoded PRNet-keras mesh .mat (normal or dotnet) -> :class:`Mesh` in the image frame.

    More than ``max_vertices`` vertices (or 4x as many triangles) is a 413: scoring cost
    grows with them.
    """
    shape = np.shape(mat.get("vertices"))
    n_declared = max(shape) if len(shape) == 2 and 3 in shape else 0
    if n_declared > max_vertices:
        raise ApiError(413, "too_many", f"{field}: mesh .mat has {n_declared} vertices, the limit is {max_vertices}",
                       field)
    if np.size(mat.get("full_triangles", ())) > 12 * max_vertices:
        raise ApiError(413, "too_many", f"{field}: mesh .mat has more than {4 * max_vertices} triangles", field)
    v = _n_by_3(mat, "vertices", field, np.float32)
    n = len(v)
    if n < 68:
        raise ApiError(422, "invalid_mat", f"{field}: mesh .mat has {n} vertices, expected at least 68", field)
    colors = _n_by_3(mat, "colors", field, np.float32) if "colors" in mat else np.full((n, 3), 0.7, np.float32)
    if len(colors) != n:
        raise ApiError(422, "invalid_mat", f"{field}: colors has {len(colors)} rows, vertices {n}", field)
    tri = _n_by_3(mat, "full_triangles", field, np.float64) if "full_triangles" in mat else np.zeros((0, 3))
    if len(tri) and (tri.min() < 0 or tri.max() >= n or np.any(tri != np.round(tri))):
        raise ApiError(422, "invalid_mat", f"{field}: full_triangles must be 0-based integer indices below {n}", field)
    if "kptIdxs" not in mat:
        raise ApiError(422, "invalid_mat", f"{field}: mesh .mat has no key 'kptIdxs'", field)
    try:
        kpt = np.asarray(mat["kptIdxs"], np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ApiError(422, "invalid_mat", f"{field}: kptIdxs is not numeric", field) from None
    if (kpt.shape != (68,) or not np.all(np.isfinite(kpt)) or kpt.min() < 0 or kpt.max() >= n
            or np.any(kpt != np.round(kpt))):
        raise ApiError(422, "invalid_mat", f"{field}: kptIdxs must hold 68 integer vertex indices below {n}", field)
    return Mesh(y_up(v, height), colors, tri.astype(np.int32), kpt.astype(np.int32))


# ---- OBJ / PLY / JSON ---------------------------------------------------------------------

def obj_bytes(mesh: Mesh, height: int) -> bytes:
    """Wavefront OBJ with per-vertex colours (``v x y z r g b``), y up, 1-based faces."""
    from prnet_keras.inference import writers

    header = (f"prnet-keras face mesh: {len(mesh.vertices)} vertices, {len(mesh.triangles)} triangles\n"
              "frame: x right, y up (y = h-1-y_image), z toward viewer; input-image pixels")
    return writers.obj_bytes(y_up(mesh.vertices, height), mesh.triangles, np.clip(mesh.colors, 0.0, 1.0),
                             header=header)


def ply_bytes(mesh: Mesh, height: int) -> bytes:
    """Binary little-endian PLY: float x y z, uchar red green blue; int vertex_indices faces; y up."""
    v = y_up(mesh.vertices, height)
    n, t = len(v), len(mesh.triangles)
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment prnet-keras mesh, y up, image pixels\n"
        f"element vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        f"element face {t}\nproperty list uchar int vertex_indices\nend_header\n"
    ).encode("ascii")
    vert = np.zeros(n, dtype=[("p", "<f4", 3), ("c", "u1", 3)])
    vert["p"] = v
    vert["c"] = np.clip(np.rint(np.asarray(mesh.colors) * 255.0), 0, 255).astype(np.uint8)
    faces = np.zeros(t, dtype=[("k", "u1"), ("i", "<i4", 3)])
    faces["k"] = 3
    faces["i"] = mesh.triangles
    return header + vert.tobytes() + faces.tobytes()


def mesh_json(mesh: Mesh, height: int, decimals: int = 2) -> dict:
    """Flat lists for a browser: vertices (3N, y up, rounded), colors (3N uint8), triangles (3T)."""
    v = np.round(y_up(mesh.vertices, height).astype(np.float64), decimals)
    c = np.clip(np.rint(np.asarray(mesh.colors) * 255.0), 0, 255).astype(np.int64)
    return {
        "n_vertices": int(len(v)),
        "n_triangles": int(len(mesh.triangles)),
        "frame": "y up, image pixels (y' = height - 1 - y)",
        "vertices": v.ravel().tolist(),
        "colors": c.ravel().tolist(),
        "triangles": np.asarray(mesh.triangles, np.int64).ravel().tolist(),
    }


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def ply_counts(data: bytes) -> tuple[int, int]:
    """(vertices, faces) from a PLY header (used by tests and the client)."""
    end = data.index(b"end_header\n")
    n = t = 0
    for line in data[:end].decode("ascii").splitlines():
        parts = line.split()
        if parts[:2] == ["element", "vertex"]:
            n = int(parts[2])
        elif parts[:2] == ["element", "face"]:
            t = int(parts[2])
    return n, t

