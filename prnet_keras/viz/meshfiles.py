"""Read the mesh files the viewers open: OBJ (+ MTL + texture), PLY, our mesh ``.mat`` and position-map ``.npy``.

Everything comes back as a :class:`ViewMesh` of plain arrays, so the viewers (open3d or pptk)
and tests see the same thing. Readers raise :class:`InputError` naming the file and what was
expected; sizes a file declares are checked against the bytes it holds before allocating.
Imports only numpy / scipy / PIL / geometry (never TensorFlow or Keras): the viewer process
must stay free of TensorFlow.

    from prnet_keras.viz.meshfiles import load_view_mesh
    mesh = load_view_mesh("out/photo_0.obj")
    mesh.vertices.shape, mesh.triangles.shape, mesh.colors is not None
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from prnet_keras.errors import InputError
from prnet_keras.viz.plyfile import read_ply_arrays

MESH_SUFFIXES = (".obj", ".ply", ".mat", ".npy")
MAT_KEYS = ("vertices", "colors", "full_triangles", "vertex_normals", "kptIdxs", "bounding_box")
MAX_TEXTURE_PIXELS = 64 * 1024 * 1024
MAX_MAP_SIDE = 8192


@dataclasses.dataclass
class ViewMesh:
    """A mesh (or point cloud) to show.

    vertices (N, 3) float64, y up (camera frame); triangles (T, 3) int32 or None (points only);
    colors (N, 3) float32 in [0, 1] or None; triangle_uvs (3T, 2) float64 texture coordinates
    per triangle corner (u right, v up, as in OBJ) and texture (H, W, 3) uint8, or None;
    notes: what the reader could not use (printed by the CLI).
    """

    name: str
    vertices: np.ndarray
    triangles: np.ndarray | None = None
    colors: np.ndarray | None = None
    triangle_uvs: np.ndarray | None = None
    texture: np.ndarray | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    def point_colors(self) -> np.ndarray | None:
        """(N, 3) colours for a point cloud: the vertex colours, else the texture at each vertex's UV."""
        if self.colors is not None:
            return self.colors
        if self.texture is None or self.triangle_uvs is None or self.triangles is None:
            return None
        h, w = self.texture.shape[:2]
        corners = self.triangles.reshape(-1)
        uv = self.triangle_uvs
        cols = np.clip(np.rint(uv[:, 0] * (w - 1)), 0, w - 1).astype(np.int64)
        rows = np.clip(np.rint((1.0 - uv[:, 1]) * (h - 1)), 0, h - 1).astype(np.int64)
        out = np.zeros((self.vertices.shape[0], 3), np.float32)
        out[corners] = self.texture[rows, cols] / np.float32(255.0)
        return out


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, expected a mesh file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _checked_triangles(tri: np.ndarray, n: int, name: str) -> np.ndarray:
    tri = np.asarray(tri, np.int64).reshape(-1, 3)
    if tri.size and (tri.min() < 0 or tri.max() >= n):
        raise InputError(f"{name}: a face refers to vertex {int(tri.max() if tri.max() >= n else tri.min())}, "
                         f"outside the {n} vertices")
    return tri.astype(np.int32)


def _colors01(values: np.ndarray) -> np.ndarray:
    """Colours given as [0, 1] floats or 0..255 numbers -> (N, 3) float32 in [0, 1]."""
    c = np.asarray(values, np.float64)
    if c.size and np.nanmax(c) > 1.0:
        c = c / 255.0
    return np.clip(np.nan_to_num(c), 0.0, 1.0).astype(np.float32)


# ---- OBJ -----------------------------------------------------------------------------------
def _obj_index(token: str, count: int, what: str, name: str, lineno: int) -> int:
    i = int(token)
    if i > 0 and i <= count:
        return i - 1
    if i < 0 and -i <= count:
        return count + i  # relative to the elements read so far
    raise InputError(f"{name}: line {lineno}: {what} index {i} outside 1..{count}")


def read_obj(path: str | os.PathLike) -> ViewMesh:
    """Wavefront OBJ: ``v x y z [r g b]``, ``vt u v``, polygon ``f`` (fans), and the first
    material's ``map_Kd`` texture from its ``mtllib`` (missing MTL / texture: a note, no texture)."""
    path = Path(path)
    name = str(path)
    verts: list[list[str]] = []
    uvs: list[list[str]] = []
    face_v: list[int] = []
    face_t: list[int] = []
    uv_corners = 0
    mtllib = material = None
    text = _read_bytes(path).decode("utf-8", errors="replace")
    try:
        for lineno, line in enumerate(text.splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            key = parts[0]
            if key == "v":
                if len(parts) not in (4, 5, 7, 8):
                    raise InputError(f"{name}: line {lineno}: 'v' needs x y z [w] [r g b], got {len(parts) - 1} values")
                verts.append(parts[1:])
            elif key == "vt":
                uvs.append(parts[1:3])
            elif key == "f":
                corners = parts[1:]
                if len(corners) < 3:
                    raise InputError(f"{name}: line {lineno}: a face needs at least 3 corners")
                vi, ti = [], []
                for c in corners:
                    fields = c.split("/")
                    vi.append(_obj_index(fields[0], len(verts), "vertex", name, lineno))
                    if len(fields) > 1 and fields[1]:
                        ti.append(_obj_index(fields[1], len(uvs), "texture-coordinate", name, lineno))
                for k in range(1, len(vi) - 1):  # fan: polygons become triangles
                    face_v += (vi[0], vi[k], vi[k + 1])
                    if len(ti) == len(vi):
                        face_t += (ti[0], ti[k], ti[k + 1])
                        uv_corners += 3
            elif key == "mtllib" and mtllib is None:
                mtllib = line.split(None, 1)[1].strip()
            elif key == "usemtl" and material is None:
                material = line.split(None, 1)[1].strip() if len(parts) > 1 else None
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(f"{name}: line {lineno}: expected numbers ({exc})") from None
    if not verts:
        raise InputError(f"{name}: no 'v' lines: not an OBJ mesh")
    widths = {len(v) for v in verts}
    try:
        if len(widths) == 1:
            arr = np.asarray(verts, np.float64)
        else:  # some vertices carry colours, others not: keep the positions
            arr = np.asarray([v[:3] for v in verts], np.float64)
    except ValueError:
        raise InputError(f"{name}: 'v' lines hold values that are not numbers") from None
    width = widths.pop() if len(widths) == 1 else 3
    mesh = ViewMesh(name, arr[:, :3])
    if width in (6, 7):
        mesh.colors = _colors01(arr[:, width - 3:])
    if face_v:
        mesh.triangles = np.asarray(face_v, np.int32).reshape(-1, 3)
    if face_v and uv_corners == len(face_v) and mtllib:
        try:
            uv = np.asarray(uvs, np.float64)
        except ValueError:
            raise InputError(f"{name}: 'vt' lines hold values that are not numbers") from None
        texture = _obj_texture(path, mtllib, material, mesh.notes)
        if texture is not None:
            mesh.triangle_uvs, mesh.texture = uv[np.asarray(face_t)], texture
    return mesh


def _obj_texture(obj_path: Path, mtllib: str, material: str | None, notes: list[str]) -> np.ndarray | None:
    """The ``map_Kd`` image of ``material`` (else the first material with one) in ``mtllib``."""
    mtl_path = obj_path.parent / mtllib
    try:
        lines = mtl_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        notes.append(f"{mtl_path}: material file not found; showing the mesh without its texture")
        return None
    maps: dict[str | None, str] = {}
    current = None
    for line in lines:
        parts = line.split()
        if parts and parts[0] == "newmtl":
            current = line.split(None, 1)[1].strip() if len(parts) > 1 else ""
        elif parts and parts[0] == "map_Kd" and len(parts) > 1:
            maps.setdefault(current, parts[-1])  # options (-s, -o, ...) come before the file name
    image_name = maps.get(material) or next(iter(maps.values()), None)
    if image_name is None:
        return None
    image_path = mtl_path.parent / image_name
    try:
        return read_texture(image_path)
    except InputError as exc:
        notes.append(f"{exc}; showing the mesh without its texture")
        return None


def read_texture(path: str | os.PathLike) -> np.ndarray:
    """A texture image -> (H, W, 3) uint8 RGB; its declared size is checked before decoding."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_TEXTURE_PIXELS:
                raise InputError(f"{path}: texture of {w}x{h} pixels is larger than the {MAX_TEXTURE_PIXELS} allowed")
            return np.asarray(im.convert("RGB"), np.uint8)
    except InputError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: cannot read texture image ({exc})") from None


# ---- PLY -----------------------------------------------------------------------------------
def read_ply(path: str | os.PathLike) -> ViewMesh:
    """PLY (ASCII or binary): vertex x y z [red green blue], faces ``vertex_indices`` (fans)."""
    path = Path(path)
    vertex, faces = read_ply_arrays(_read_bytes(path), str(path))
    mesh = ViewMesh(str(path), np.stack([vertex[k] for k in ("x", "y", "z")], 1).astype(np.float64))
    names = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))
    rgb = next((keys for keys in names if all(k in vertex for k in keys)), None)
    if rgb is not None:
        c = np.stack([vertex[k] for k in rgb], 1)
        mesh.colors = (c / 255.0 if c.dtype.kind in "iu" else np.clip(c, 0, 1)).astype(np.float32)
    if faces is not None and len(faces):
        mesh.triangles = _checked_triangles(faces, mesh.vertices.shape[0], str(path))
    return mesh


# ---- our mesh .mat -------------------------------------------------------------------------
def read_mesh_mat(source: bytes | str | os.PathLike, name: str = "mesh .mat") -> dict[str, np.ndarray]:
    """Read a mesh ``.mat`` (bytes or path; normal or dotnet) -> arrays in the normal layout.

    vertices/colors/vertex_normals (N, 3) float32, full_triangles (T, 3) int64, kptIdxs (68,)
    int64, bounding_box (6,) float32. Raises InputError naming the missing/bad key.
    """
    from prnet_keras.matfile import load_mat

    if isinstance(source, (str, os.PathLike)):
        name = str(source)
        source = _read_bytes(Path(source))
    mat = load_mat(source, name)  # declared array sizes are checked before anything is allocated
    missing = [k for k in MAT_KEYS if k not in mat]
    if missing:
        raise InputError(f"{name}: missing key(s) {', '.join(missing)}")
    out = {}
    for key in ("vertices", "colors", "vertex_normals", "full_triangles"):
        a = np.asarray(mat[key])
        if a.ndim != 2 or 3 not in a.shape:
            raise InputError(f"{name}: {key} must be (N, 3) or (3, N), got {a.shape}")
        if a.shape[1] != 3:
            a = a.T  # dotnet layout
        out[key] = a.astype(np.int64 if key == "full_triangles" else np.float32)
    out["kptIdxs"] = np.asarray(mat["kptIdxs"]).reshape(-1).astype(np.int64)
    out["bounding_box"] = np.asarray(mat["bounding_box"]).reshape(-1).astype(np.float32)
    n = out["vertices"].shape[0]
    if out["full_triangles"].size and (out["full_triangles"].min() < 0 or out["full_triangles"].max() >= n):
        raise InputError(f"{name}: full_triangles index outside [0, {n})")
    return out


def read_mat_mesh(path: str | os.PathLike) -> ViewMesh:
    """Our mesh ``.mat`` (``normal`` or ``dotnet`` layout) as a coloured mesh."""
    arrays = read_mesh_mat(path)
    colors = arrays["colors"] if arrays["colors"].shape == arrays["vertices"].shape else None
    return ViewMesh(str(path), arrays["vertices"].astype(np.float64), arrays["full_triangles"].astype(np.int32),
                    None if colors is None else _colors01(colors))


# ---- position-map .npy ---------------------------------------------------------------------
def layout_beside(path: Path) -> list[Path]:
    """Where a position map's UV layout may lie: ``<stem>.uv.npz``, then ``uv_layout.npz`` in its folder."""
    return [path.with_name(path.stem + ".uv.npz"), path.parent / "uv_layout.npz"]


def _read_npy(path: Path) -> np.ndarray:
    """A numeric ``.npy`` (no pickles). Memory-mapped first, so a shape the header declares
    beyond the file's size is refused before anything is allocated."""
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError) as exc:
        if "mmap length is greater than file size" in str(exc):
            raise InputError(f"{path}: its header declares a larger array than the file holds (truncated?)") from None
        raise InputError(f"{path}: not a numeric NumPy .npy array ({exc})") from None
    if not isinstance(mapped, np.ndarray) or mapped.dtype.kind not in "fiu":
        raise InputError(f"{path}: expected a numeric array, got {getattr(mapped, 'dtype', type(mapped).__name__)}")
    return np.array(mapped)


def read_position_map(path: str | os.PathLike, uv_data: str | os.PathLike | None = None) -> ViewMesh:
    """A position-map ``.npy`` (H, W, 3) (image or crop frame: x right, y down) as a mesh.

    Triangles come from the UV layout: ``uv_data`` (a uv-data folder or layout ``.npz``), else a
    layout found beside the file (:func:`layout_beside`), else the non-zero pixels triangulated
    on the pixel grid (a note says so). An (N, 3) array is taken as the face vertices in the
    layout's order (points only without a layout of N vertices). y is flipped to y up.
    """
    from prnet_keras.geometry.uv import UVLayout, grid_triangles, load_uv_layout

    path = Path(path)
    name = str(path)
    pm = _read_npy(path)
    if not ((pm.ndim == 3 and pm.shape[2] == 3) or (pm.ndim == 2 and pm.shape[1] == 3)):
        raise InputError(f"{name}: expected a position map (H, W, 3) or vertices (N, 3), got shape {pm.shape}")
    if pm.ndim == 3 and max(pm.shape[:2]) > MAX_MAP_SIDE:
        raise InputError(f"{name}: a {pm.shape[0]}x{pm.shape[1]} map is larger than {MAX_MAP_SIDE} pixels a side")
    pm = pm.astype(np.float64)
    notes: list[str] = []
    layout, layout_name = None, None
    if uv_data is not None:
        layout, layout_name = load_uv_layout(uv_data), str(uv_data)
    else:
        found = next((c for c in layout_beside(path) if c.is_file()), None)
        if found is not None:
            layout, layout_name = UVLayout.load(found), str(found)
    if pm.ndim == 2:
        v = pm
        if layout is not None and layout.n_vertices == v.shape[0]:
            tri = layout.triangles
        else:
            tri = None
            notes.append(f"{name}: {v.shape[0]} vertices and no UV layout of as many face pixels: showing points")
    elif layout is not None and layout.resolution == pm.shape[0] == pm.shape[1]:
        v, tri = layout.vertices_from_map(pm), layout.triangles
    else:
        if layout is not None and uv_data is not None:
            raise InputError(f"{name}: a {pm.shape[0]}x{pm.shape[1]} map does not fit the "
                             f"{layout.resolution}x{layout.resolution} UV layout {layout_name}")
        mask = np.isfinite(pm).all(-1) & (np.abs(pm).max(-1) > 0)
        if not mask.any():
            raise InputError(f"{name}: every pixel of the position map is zero or not finite")
        why = (f"the layout {layout_name} is {layout.resolution}x{layout.resolution}" if layout is not None
               else f"no UV layout (looked for {', '.join(str(c) for c in layout_beside(path))}; or pass --uv-data)")
        notes.append(f"{name}: {why}: triangulating the {int(mask.sum())} non-zero pixels on the pixel grid")
        v, tri = pm[mask], grid_triangles(mask)
    v = np.array(v, np.float64)
    if not np.isfinite(v).all():
        raise InputError(f"{name}: the face vertices hold NaN or infinite values")
    v[:, 1] = -v[:, 1]  # y down (image rows) -> y up
    return ViewMesh(name, v, None if tri is None else np.asarray(tri, np.int32), notes=notes)


def load_view_mesh(path: str | os.PathLike, uv_data: str | os.PathLike | None = None) -> ViewMesh:
    """Read ``path`` by its suffix (.obj, .ply, .mat, .npy); ``uv_data`` only applies to .npy."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise InputError(f"{path}: unknown mesh file type {suffix or '(none)'}; "
                         f"expected one of {', '.join(MESH_SUFFIXES)}")
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if suffix == ".obj":
        mesh = read_obj(path)
    elif suffix == ".ply":
        mesh = read_ply(path)
    elif suffix == ".mat":
        mesh = read_mat_mesh(path)
    else:
        mesh = read_position_map(path, uv_data)
    if not np.isfinite(mesh.vertices).all():
        raise InputError(f"{path}: vertices hold NaN or infinite values")
    return mesh
