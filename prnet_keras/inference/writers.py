"""File writers for reconstructed faces; every file is written atomically.

Mesh frames: ``frame="camera"`` (default for OBJ/PLY/MAT, as the official demo and the
PRNet-keras API) writes x right, y up (y = h - 1 - y_image), z toward the viewer, in input
image pixels; ``frame="image"`` keeps y down. Triangles wind counter-clockwise seen from
the viewer in the camera frame (normals toward +z). Each format that allows comments says
which frame it holds.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from prnet_keras import LABEL_SCALE
from prnet_keras.errors import InputError
from prnet_keras.geometry import vertex_normals
from prnet_keras.inference.postprocess import Face, helper_pool, in_helper_thread
from prnet_keras.inference.textfmt import format_rows, format_rows_ascii
from prnet_keras.utils import atomic_path, atomic_write_bytes, atomic_write_text, to_jsonable
from prnet_keras.viz.meshfiles import MAT_KEYS, read_mesh_mat  # noqa: F401  (the reader of the .mat written here)

OUTPUTS = ("obj", "ply", "mat", "kpt", "pose", "depth", "texture", "uv", "figure")
_FRAMES = {"camera": "x right, y up (y = h-1-y_image), z toward viewer; input-image pixels",
           "image": "x right, y down, z toward viewer; input-image pixels"}


def _mesh_vertices(face: Face, frame: str) -> np.ndarray:
    if frame == "camera":
        return face.camera_vertices
    if frame == "image":
        return face.vertices
    raise InputError(f"frame: expected 'camera' or 'image', got {frame!r}")


_TEXT_CACHE: dict[tuple[int, str], tuple[object, bytes]] = {}


def _layout_text(layout: object, kind: str, make) -> bytes:
    """Text blocks that depend only on the UV layout (faces, texture coordinates), made once.

    Keyed by the layout object (held, so its id cannot be reused); layouts are immutable.
    """
    key = (id(layout), kind)
    hit = _TEXT_CACHE.get(key)
    if hit is not None and hit[0] is layout:
        return hit[1]
    text = make()
    if len(_TEXT_CACHE) >= 16:
        _TEXT_CACHE.clear()
    _TEXT_CACHE[key] = (layout, text)
    return text


def _face_lines(triangles: np.ndarray, textured: bool) -> bytes:
    tri = np.asarray(triangles, np.int64) + 1
    if textured:
        return format_rows_ascii(np.repeat(tri, 2, axis=1), "f", None, seps=" / / /")
    return format_rows_ascii(tri, "f", None)


def obj_bytes(vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray | None = None,
              uvs: np.ndarray | None = None, header: str = "", mtl: str | None = None,
              _faces: bytes | None = None, _uv_lines: bytes | None = None) -> bytes:
    """Wavefront OBJ (ASCII): ``v x y z [r g b]`` (colours in [0, 1]), optional ``vt``, 1-based faces.

    vertices (N, 3), triangles (T, 3) 0-based, colors (N, 3), uvs (N, 2) (the vertex index is
    also the texture-coordinate index).
    """
    head = "".join(f"# {line}\n" for line in header.splitlines())
    if mtl:
        head += f"mtllib {mtl}\nusemtl material_0\n"
    v = np.asarray(vertices, np.float64)
    parts = [head.encode("utf-8"),
             format_rows_ascii(np.hstack([v, np.asarray(colors, np.float64)]) if colors is not None else v, "v", 4)]
    textured = uvs is not None or _uv_lines is not None
    if textured:
        parts.append(_uv_lines if _uv_lines is not None else format_rows_ascii(np.asarray(uvs, np.float64), "vt", 6))
    parts.append(_faces if _faces is not None else _face_lines(triangles, textured))
    return b"".join(parts)


def write_obj(face: Face, path: str | os.PathLike, frame: str = "camera", colors: bool = True) -> Path:
    """OBJ with per-vertex colours (``v x y z r g b``) of one face."""
    path = Path(path)
    v = _mesh_vertices(face, frame)
    header = (f"prnet-keras face mesh: {v.shape[0]} vertices, {face.triangles.shape[0]} triangles\n"
              f"frame: {_FRAMES[frame]}")
    faces = _layout_text(face.layout, "f", lambda: _face_lines(face.triangles, False))
    atomic_write_bytes(path, obj_bytes(v, face.triangles, face.colors if colors else None, header=header, _faces=faces))
    return path


def uv_texcoords(face: Face) -> np.ndarray:
    """(N, 2) OBJ texture coordinates of the face pixels: u = col/(R-1), v = 1 - row/(R-1)."""
    r = face.layout.resolution
    rows, cols = np.divmod(face.layout.face_ind, r)
    return np.stack([cols / (r - 1), 1.0 - rows / (r - 1)], 1)


def write_obj_textured(face: Face, path: str | os.PathLike, texture_size: int | None = None,
                       visibility_mask: bool = False, frame: str = "camera") -> list[Path]:
    """OBJ + MTL + texture PNG side by side (``stem.obj``, ``stem.mtl``, ``stem_texture.png``), relative paths."""
    path = Path(path)
    mtl_path, tex_path = path.with_suffix(".mtl"), path.with_name(path.stem + "_texture.png")
    write_png(tex_path, face.texture(texture_size, visibility_mask))
    atomic_write_text(mtl_path, f"newmtl material_0\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nmap_Kd {tex_path.name}\n")
    v = _mesh_vertices(face, frame)
    header = f"prnet-keras textured face mesh\nframe: {_FRAMES[frame]}"
    faces = _layout_text(face.layout, "f/vt", lambda: _face_lines(face.triangles, True))
    uv_lines = _layout_text(face.layout, "vt", lambda: format_rows_ascii(uv_texcoords(face), "vt", 6))
    atomic_write_bytes(path,
                       obj_bytes(v, face.triangles, header=header, mtl=mtl_path.name, _faces=faces, _uv_lines=uv_lines))
    return [path, mtl_path, tex_path]


def write_ply(face: Face, path: str | os.PathLike, frame: str = "camera", colors: bool = True) -> Path:
    """Binary little-endian PLY: float x y z, uchar red green blue, int vertex_indices."""
    path = Path(path)
    v = _mesh_vertices(face, frame).astype("<f4")
    tri = face.triangles.astype("<i4")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vert = np.empty(v.shape[0], dtype=fields)
    vert["x"], vert["y"], vert["z"] = v[:, 0], v[:, 1], v[:, 2]
    if colors:
        rgb = np.clip(np.rint(face.colors * 255.0), 0, 255).astype(np.uint8)
        vert["red"], vert["green"], vert["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    faces = np.empty(tri.shape[0], dtype=[("n", "u1"), ("i", "<i4", (3,))])
    faces["n"], faces["i"] = 3, tri
    props = "".join(f"property {'float' if t == '<f4' else 'uchar'} {n}\n" for n, t in fields)
    header = (f"ply\nformat binary_little_endian 1.0\ncomment prnet-keras face mesh, frame: {_FRAMES[frame]}\n"
              f"element vertex {v.shape[0]}\n{props}element face {tri.shape[0]}\n"
              "property list uchar int vertex_indices\nend_header\n")
    atomic_write_bytes(path, header.encode("ascii") + vert.tobytes() + faces.tobytes())
    return path


def mesh_mat_dict(face: Face, mat_type: str = "normal") -> dict[str, np.ndarray]:
    """The PRNet-keras API mesh: vertices (N,3) camera frame (y up), colors (N,3) [0,1],
    full_triangles (T,3) 0-based, vertex_normals (N,3), kptIdxs (68,), bounding_box (6,)
    = [min x, min y, min z, max x, max y, max z]. ``dotnet`` transposes the four (N|T, 3) arrays.
    """
    if mat_type not in ("normal", "dotnet"):
        raise InputError(f"matType: expected 'normal' or 'dotnet', got {mat_type!r}")
    v = face.camera_vertices.astype(np.float32)
    tri = face.triangles.astype(np.int32)
    arrays = {"vertices": v, "colors": face.colors.astype(np.float32), "full_triangles": tri,
              "vertex_normals": vertex_normals(v, tri).astype(np.float32)}
    if mat_type == "dotnet":
        arrays = {k: np.ascontiguousarray(a.T) for k, a in arrays.items()}
    arrays["kptIdxs"] = face.keypoint_indices.astype(np.int32)
    arrays["bounding_box"] = np.concatenate([v.min(0), v.max(0)]).astype(np.float32)
    return arrays


def mesh_mat_bytes(face: Face, mat_type: str = "normal") -> bytes:
    """The ``.mat`` (MATLAB 5) bytes of :func:`mesh_mat_dict`, as the HTTP API sends them."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, mesh_mat_dict(face, mat_type), do_compression=False)
    return buf.getvalue()


def write_mat(face: Face, path: str | os.PathLike, mat_type: str = "normal") -> Path:
    atomic_write_bytes(path, mesh_mat_bytes(face, mat_type))
    return Path(path)


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """PNG of an RGB (H, W, 3) or gray (H, W) uint8/uint16 array, atomically."""
    a = np.asarray(image)
    if a.ndim == 3:
        a = a[..., ::-1]  # OpenCV writes BGR
    # zlib level 1 with the RLE strategy and the fixed "sub" row filter: 2-4x faster than
    # OpenCV's default (adaptive filters per row), files within ~5 % (texture 256²: 1.9 ms
    # 69 kB vs 4.9 ms 67 kB; 16-bit UV map: 6.4 ms vs 11.8 ms).
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV >= 4.10
        params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(a), params)
    if not ok:  # pragma: no cover - cv2 refuses only unsupported dtypes
        raise InputError(f"{path}: cannot encode {a.dtype} {a.shape} as PNG")
    atomic_write_bytes(path, buf.tobytes())
    return Path(path)


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(array))
    return Path(path)


def write_keypoints(face: Face, stem: str | os.PathLike) -> list[Path]:
    """``stem_kpt.txt`` (68 rows "x y z", image frame, y down, pixels) and ``stem_kpt.npy`` (68, 3) float32."""
    stem = Path(stem)
    txt = "# 68 landmarks, image frame: x right, y down, z toward viewer (pixels)\n"
    txt += format_rows(face.keypoints.astype(np.float64), "", 4)
    p1 = stem.with_name(stem.name + "_kpt.txt")
    atomic_write_text(p1, txt)
    return [p1, write_npy(stem.with_name(stem.name + "_kpt.npy"), face.keypoints)]


def write_pose(face: Face, path: str | os.PathLike) -> Path:
    """Pose JSON: angles in degrees, rotation, scale, translation, 3x4 camera, crop box; frames stated."""
    d = {"pose": face.pose.to_dict(), "crop_box": face.to_dict()["crop_box"],
         "image_size": [int(face.image_size[0]), int(face.image_size[1])]}
    atomic_write_text(path, json.dumps(to_jsonable(d), indent=2) + "\n")
    return Path(path)


def write_depth(face: Face, stem: str | os.PathLike) -> list[Path]:
    """``stem_depth.png`` (uint8: face z min..max -> 1..255, nearer = brighter, 0 = background)
    and ``stem_depth.npy`` (h, w) float32 z in image pixels (0 = background)."""
    stem = Path(stem)
    z = face.depth_image
    covered = face.depth_mask
    img = np.zeros(z.shape, np.uint8)
    if covered.any():
        lo, hi = float(z[covered].min()), float(z[covered].max())
        img[covered] = np.rint(1 + 254 * (z[covered] - lo) / max(hi - lo, 1e-6)).astype(np.uint8)
    return [write_png(stem.with_name(stem.name + "_depth.png"), img),
            write_npy(stem.with_name(stem.name + "_depth.npy"), z)]


def write_uv_map(face: Face, stem: str | os.PathLike) -> list[Path]:
    """``stem_uv.png``: crop-frame map / LABEL_SCALE as 16-bit RGB (the network's label, x=R, y=G, z=B);
    ``stem_uv.npy``: (R, R, 3) float32 image-frame position map (x, y pixels y down, z)."""
    stem = Path(stem)
    png = np.clip(np.rint(face.crop_map / LABEL_SCALE * 65535.0), 0, 65535).astype(np.uint16)
    return [write_png(stem.with_name(stem.name + "_uv.png"), png),
            write_npy(stem.with_name(stem.name + "_uv.npy"), face.position_map)]


def _write_one(face: Face, base: Path, stem: str, output: str, texture_size: int | None, visibility_mask: bool,
               mat_type: str) -> list[Path]:
    if output == "obj":
        return [write_obj(face, base.with_suffix(".obj"))]
    if output == "ply":
        return [write_ply(face, base.with_suffix(".ply"))]
    if output == "mat":
        return [write_mat(face, base.with_suffix(".mat"), mat_type)]
    if output == "kpt":
        return write_keypoints(face, base)
    if output == "pose":
        return [write_pose(face, base.with_name(stem + "_pose.json"))]
    if output == "depth":
        return write_depth(face, base)
    if output == "texture":
        return write_obj_textured(face, base.with_name(stem + "_textured.obj"), texture_size, visibility_mask)
    if output == "uv":
        return write_uv_map(face, base)
    from prnet_keras.viz.figure import save_face_figure

    return [save_face_figure(base.with_name(stem + "_figure.png"), face.image, face.crop_map, face.vertices,
                             face.triangles, face.keypoints, face.crop_box, face.colors)]


def _schedule(outputs: list[str] | tuple[str, ...], visibility_mask: bool) -> list[str]:
    """Order of the write jobs on two threads: the one that renders the z-buffer first
    (masked texture, else depth), the z-buffer-free ones next, depth last (by then the
    z-buffer is there)."""
    first = "texture" if "texture" in outputs and visibility_mask else "depth"
    return sorted(outputs, key=lambda o: 0 if o == first else 2 if o == "depth" else 1)


def write_face_outputs(face: Face, out_dir: str | os.PathLike, stem: str, outputs: list[str] | tuple[str, ...],
                       texture_size: int | None = None, visibility_mask: bool = False,
                       mat_type: str = "normal") -> list[Path]:
    """Write the requested ``outputs`` (names from OUTPUTS) of one face as ``out_dir/stem*``.

    The writers run two at a time on the helper pool and compute what they need on the
    way (visibility, depth, texture, pose, colours: cached on the face, so each is
    computed once); text formatting, rasterisation, PNG encoding and file writes release
    the GIL. The matplotlib figure is drawn in the calling thread. Returns the written
    paths in the order of ``outputs``.
    """
    bad = [o for o in outputs if o not in OUTPUTS]
    if bad:
        raise InputError(f"outputs: unknown {', '.join(bad)} (expected some of {', '.join(OUTPUTS)})")
    base = Path(out_dir) / stem
    args = (texture_size, visibility_mask, mat_type)
    _ = face.vertices  # every writer derives from it
    if len(outputs) < 2 or in_helper_thread():
        return [p for o in outputs for p in _write_one(face, base, stem, o, *args)]
    pool = helper_pool()
    futures = {o: pool.submit(_write_one, face, base, stem, o, *args)
               for o in _schedule(outputs, visibility_mask) if o != "figure"}
    figure = _write_one(face, base, stem, "figure", *args) if "figure" in outputs else []
    return [p for o in outputs for p in (figure if o == "figure" else futures[o].result())]
