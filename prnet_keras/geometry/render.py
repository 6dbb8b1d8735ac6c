"""Image-space renders on the rasteriser: depth (z-buffer), per-vertex visibility, vertex
normals and a Lambert-shaded image.

Same conventions as :mod:`prnet_keras.geometry.raster`: image frame, pixel centres at integer
(x=j, y=i), x right, y down, z larger = nearer the camera; outputs float32.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from prnet_keras.errors import InputError
from prnet_keras.geometry.raster import as_attributes, as_triangles, as_vertices, rasterize


def render_depth(vertices: np.ndarray, triangles: np.ndarray, height: int, width: int) -> np.ndarray:
    """Z-buffer of the mesh (H, W) float32: nearest surface z per pixel, 0 where empty.

    vertices (n, 3) image frame (x, y pixels, y down, z larger = nearer).
    """
    v = as_vertices(vertices)
    _, zbuf, _ = rasterize(v, triangles, np.zeros((v.shape[0], 0), np.float32), height, width)
    return zbuf


@njit(cache=True, nogil=True)
def _visibility_kernel(vertices, depth, covered, tolerance, out):
    # A vertex is visible when nothing covers any of the (up to) 4 pixel centres around it
    # by more than `tolerance` in front of it: checking the nearest centre alone fails on
    # steep surfaces (face sides), where depth changes by several px within one pixel.
    height, width = depth.shape
    for i in range(vertices.shape[0]):
        x = np.float64(vertices[i, 0])
        y = np.float64(vertices[i, 1])
        z = np.float64(vertices[i, 2])
        out[i] = False
        if not (x > -0.5 and y > -0.5 and x < width - 0.5 and y < height - 0.5) or not math.isfinite(z):
            continue
        c0 = max(int(math.floor(x)), 0)
        r0 = max(int(math.floor(y)), 0)
        c1 = min(c0 + 1, width - 1)
        r1 = min(r0 + 1, height - 1)
        front = np.inf
        for r in (r0, r1):
            for c in (c0, c1):
                if covered[r, c] and depth[r, c] < front:
                    front = depth[r, c]
        # Nothing drawn around it (silhouette slivers) means nothing hides it either.
        out[i] = front == np.inf or z >= front - tolerance


def vertex_visibility(
    vertices: np.ndarray, triangles: np.ndarray, height: int, width: int, tolerance: float | None = None,
    zbuffer: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """(n,) bool: vertex inside the image and not behind the rendered surface.

    vertices (n, 3) image frame. A vertex is visible when its z is at least the smallest
    z-buffer value over the pixel centres around it minus ``tolerance`` (default: 1 % of
    the mesh's z range, at least 0.5 px). ``zbuffer`` = (depth (H, W) float32, covered
    (H, W) bool) of this mesh from :func:`rasterize` saves rendering it again.
    """
    v = as_vertices(vertices)
    if v.shape[1] != 3:
        raise InputError(f"vertices: visibility needs (n, 3) with depth, got shape {v.shape}")
    if zbuffer is None:
        _, zbuf, tri_index = rasterize(v, triangles, np.zeros((v.shape[0], 0), np.float32), height, width)
        covered = tri_index >= 0
    else:
        zbuf, covered = zbuffer
        if zbuf.shape != (height, width) or covered.shape != (height, width):
            raise InputError(f"zbuffer: expected ({height}, {width}) arrays, got {zbuf.shape} and {covered.shape}")
    if tolerance is None:
        zr = float(np.ptp(v[:, 2])) if v.shape[0] else 0.0
        tolerance = max(0.5, 0.01 * zr) if np.isfinite(zr) else 0.5
    out = np.zeros(v.shape[0], np.bool_)
    _visibility_kernel(v, np.ascontiguousarray(zbuf, np.float32), np.ascontiguousarray(covered, np.bool_),
                       float(tolerance), out)
    return out


@njit(cache=True, nogil=True)
def _normals_kernel(vertices, triangles, out):
    for t in range(triangles.shape[0]):
        i0 = triangles[t, 0]
        i1 = triangles[t, 1]
        i2 = triangles[t, 2]
        ax = vertices[i1, 0] - vertices[i0, 0]
        ay = vertices[i1, 1] - vertices[i0, 1]
        az = vertices[i1, 2] - vertices[i0, 2]
        bx = vertices[i2, 0] - vertices[i0, 0]
        by = vertices[i2, 1] - vertices[i0, 1]
        bz = vertices[i2, 2] - vertices[i0, 2]
        # Unnormalised cross product = 2 x area x unit normal: area weighting for free.
        nx = ay * bz - az * by
        ny = az * bx - ax * bz
        nz = ax * by - ay * bx
        for i in (i0, i1, i2):
            out[i, 0] += nx
            out[i, 1] += ny
            out[i, 2] += nz


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted per-vertex unit normals (n, 3) float32 (orientation from triangle winding).

    vertices (n, 3) in any frame; the normal of triangle (a, b, c) is (b - a) x (c - a).
    Vertices without a (non-degenerate) triangle get a zero normal.
    """
    v = np.ascontiguousarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise InputError(f"vertices: expected (n, 3), got shape {v.shape}")
    tri = as_triangles(triangles)
    if tri.size and (tri.min() < 0 or tri.max() >= v.shape[0]):
        raise InputError(f"triangles: indices must lie in [0, {v.shape[0]})")
    normals = np.zeros_like(v)
    _normals_kernel(v, tri, normals)
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    return (normals / np.maximum(norm, 1e-300)).astype(np.float32)


def render_shaded(
    vertices: np.ndarray,
    triangles: np.ndarray,
    colors: np.ndarray | None,
    height: int,
    width: int,
    light_dir: tuple[float, float, float] = (0.0, 0.0, 1.0),
    ambient: float = 0.35,
    background: float = 0.0,
) -> np.ndarray:
    """Lambertian + ambient shading of per-vertex colours (n, 3) in [0, 1] -> (H, W, 3) float32.

    vertices (n, 3) image frame; light_dir in a y-up camera frame (x right, y up, z towards
    the viewer). Normals are flipped per vertex to face the camera (+z) so the winding does
    not matter. ``colors=None`` shades a uniform light grey. Colour = albedo·(ambient +
    (1 - ambient)·max(0, n·l)), clipped to [0, 1].
    """
    v = as_vertices(vertices)
    tri = as_triangles(triangles)
    n = vertex_normals(v, tri)
    n[n[:, 2] < 0] *= -1.0
    light = np.asarray(light_dir, np.float32).reshape(3)
    norm = float(np.linalg.norm(light))
    if not norm > 0:
        raise InputError(f"light_dir: expected a non-zero 3-vector, got {tuple(light_dir)}")
    light = light / norm
    # Image y points down; flip so a light "from above" means +y up as people expect.
    lambert = np.clip(n[:, 0] * light[0] - n[:, 1] * light[1] + n[:, 2] * light[2], 0.0, 1.0)
    shade = ambient + (1.0 - ambient) * lambert
    if colors is None:
        base = np.full((v.shape[0], 3), 0.8, np.float32)
    else:
        base = as_attributes(colors, v.shape[0])
        if base.shape[1] != 3:
            raise InputError(f"colors: expected ({v.shape[0]}, 3) RGB in [0, 1], got shape {base.shape}")
    image, _, _ = rasterize(v, tri, base * shade[:, None], height, width, background=background)
    return np.clip(image, 0.0, 1.0)
