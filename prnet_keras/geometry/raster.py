"""Triangle rasteriser (numba) with a z-buffer, and UV-space renders (position maps).

Image-space renders built on it (depth, visibility, normals, shading) are in
:mod:`prnet_keras.geometry.render`; ``as_vertices`` / ``as_triangles`` / ``as_attributes``
are the input checks both modules share.

Conventions: image coordinates, pixel (row i, column j) has its centre at (x=j, y=i);
x right, y down, z larger = nearer the camera. A pixel is covered when its centre lies
inside the triangle; centres exactly on an edge follow a top-left style tie rule, so a
pixel on an edge shared by two triangles is drawn exactly once and nothing is drawn
outside the triangles (no border dilation, unlike face3d). Attributes are interpolated
with the barycentric weights of the pixel centre. Degenerate (zero-area) triangles and
triangles with non-finite vertices are skipped; triangles partly or wholly outside the
image are clipped to it. Outputs are float32.

Exactness: edge functions are evaluated in float64 from the float32 inputs, always from
the edge's lower-indexed vertex, so the two triangles sharing an edge compute bitwise
opposite values there (watertight, no double coverage).

Speed: BFM-sized meshes in UV space cover ~0.6 px per triangle, so the cost is per-triangle
setup and its branches; the kernel rejects empty bounding boxes before any other work.
Repeated UV renders of one layout (dataset generation) go through a cached
:class:`UVRenderPlan` (per-pixel vertex indices + barycentric weights, computed once by the
same kernel), which turns a render into a gather.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

import numpy as np
from numba import njit

from prnet_keras.errors import InputError


@njit(cache=True, nogil=True, inline="always")
def _edge_setup(xa, ya, xb, yb, ia, ib, sign):
    # Canonical start = lower vertex index: a shared edge gives bitwise opposite w.
    if ia < ib:
        sx, sy, dx, dy, f = xa, ya, xb - xa, yb - ya, sign
    else:
        sx, sy, dx, dy, f = xb, yb, xa - xb, ya - yb, -sign
    # Tie rule on the edge direction of the positively oriented triangle: exactly one of
    # two opposite directions owns on-edge centres.
    tx = sign * (xb - xa)
    ty = sign * (yb - ya)
    tie = ty < 0.0 or (ty == 0.0 and tx > 0.0)
    return sx, sy, dx, dy, f, tie


@njit(cache=True, nogil=True)
def _raster_kernel(vertices, has_z, triangles, attributes, image, zbuffer, tri_index, weights, depth_test, record):
    """Core loop. Returns -1, or the index of the first triangle with an out-of-range vertex.

    zbuffer must hold -inf on entry (depth test = strictly nearer wins, ties keep the first);
    without depth test the first triangle to cover a pixel keeps it. With ``record`` the
    barycentric weights go to ``weights`` (H, W, 3) float64 instead of interpolating.
    """
    height = image.shape[0]
    width = image.shape[1]
    channels = image.shape[2]
    n_vert = vertices.shape[0]
    xhi = np.float64(width - 1)
    yhi = np.float64(height - 1)
    for t in range(triangles.shape[0]):
        i0 = triangles[t, 0]
        i1 = triangles[t, 1]
        i2 = triangles[t, 2]
        if min(i0, min(i1, i2)) < 0 or max(i0, max(i1, i2)) >= n_vert:
            return t
        x0 = np.float64(vertices[i0, 0])
        y0 = np.float64(vertices[i0, 1])
        x1 = np.float64(vertices[i1, 0])
        y1 = np.float64(vertices[i1, 1])
        x2 = np.float64(vertices[i2, 0])
        y2 = np.float64(vertices[i2, 1])
        xmin = max(min(x0, min(x1, x2)), 0.0)
        xmax = min(max(x0, max(x1, x2)), xhi)
        ymin = max(min(y0, min(y1, y2)), 0.0)
        ymax = min(max(y0, max(y1, y2)), yhi)
        # Most triangles of a dense mesh contain no pixel centre: reject them first.
        cmin = math.ceil(xmin)
        cmax = math.floor(xmax)
        rmin = math.ceil(ymin)
        rmax = math.floor(ymax)
        if cmin > cmax or rmin > rmax:
            continue
        if not math.isfinite(x0 + x1 + x2 + y0 + y1 + y2):
            continue
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if area == 0.0:
            continue
        sign = 1.0 if area > 0.0 else -1.0
        inv_area = 1.0 / abs(area)
        # Edge k is opposite vertex k: 1->2, 2->0, 0->1.
        sx0, sy0, dx0, dy0, f0, tie0 = _edge_setup(x1, y1, x2, y2, i1, i2, sign)
        sx1, sy1, dx1, dy1, f1, tie1 = _edge_setup(x2, y2, x0, y0, i2, i0, sign)
        sx2, sy2, dx2, dy2, f2, tie2 = _edge_setup(x0, y0, x1, y1, i0, i1, sign)
        if has_z:
            z0 = np.float64(vertices[i0, 2])
            z1 = np.float64(vertices[i1, 2])
            z2 = np.float64(vertices[i2, 2])
        else:
            z0 = z1 = z2 = 0.0
        for r in range(int(rmin), int(rmax) + 1):
            py = np.float64(r)
            for c in range(int(cmin), int(cmax) + 1):
                px = np.float64(c)
                w0 = f0 * (dx0 * (py - sy0) - dy0 * (px - sx0))
                if w0 < 0.0 or (w0 == 0.0 and not tie0):
                    continue
                w1 = f1 * (dx1 * (py - sy1) - dy1 * (px - sx1))
                if w1 < 0.0 or (w1 == 0.0 and not tie1):
                    continue
                w2 = f2 * (dx2 * (py - sy2) - dy2 * (px - sx2))
                if w2 < 0.0 or (w2 == 0.0 and not tie2):
                    continue
                b0 = w0 * inv_area
                b1 = w1 * inv_area
                b2 = w2 * inv_area
                z = np.float32(b0 * z0 + b1 * z1 + b2 * z2)
                if depth_test:
                    if not z > zbuffer[r, c]:
                        continue
                elif tri_index[r, c] >= 0:
                    continue
                zbuffer[r, c] = z
                tri_index[r, c] = t
                if record:
                    weights[r, c, 0] = b0
                    weights[r, c, 1] = b1
                    weights[r, c, 2] = b2
                else:
                    for k in range(channels):
                        image[r, c, k] = (b0 * attributes[i0, k] + b1 * attributes[i1, k]
                                          + b2 * attributes[i2, k])
    return -1


def as_vertices(vertices: np.ndarray) -> np.ndarray:
    v = np.asarray(vertices)
    if v.ndim != 2 or v.shape[1] not in (2, 3):
        raise InputError(f"vertices: expected an (n, 2) or (n, 3) array, got shape {v.shape}")
    return np.ascontiguousarray(v, dtype=np.float32)


def as_triangles(triangles: np.ndarray) -> np.ndarray:
    tri = np.asarray(triangles)
    if tri.ndim != 2 or tri.shape[1] != 3:
        raise InputError(f"triangles: expected a (T, 3) integer array, got shape {tri.shape}")
    if tri.size and not np.issubdtype(tri.dtype, np.integer):
        raise InputError(f"triangles: expected integer vertex indices, got dtype {tri.dtype}")
    return np.ascontiguousarray(tri, dtype=np.int32)


def as_attributes(attributes: np.ndarray, n: int) -> np.ndarray:
    attr = np.asarray(attributes)
    if attr.ndim == 1:
        attr = attr[:, None]
    if attr.ndim != 2 or attr.shape[0] != n:
        raise InputError(f"attributes: expected ({n}, C) (one row per vertex), got shape {attr.shape}")
    return np.ascontiguousarray(attr, dtype=np.float32)


def _check_size(height: int, width: int) -> tuple[int, int]:
    h, w = int(height), int(width)
    if h <= 0 or w <= 0:
        raise InputError(f"image size: expected positive height and width, got {height}x{width}")
    return h, w


def _run(v, tri, attr, h, w, depth_test, record=False):
    image = np.zeros((h, w, attr.shape[1]), np.float32)
    zbuf = np.full((h, w), -np.inf, np.float32)
    tri_index = np.full((h, w), -1, np.int32)
    weights = np.zeros((h, w, 3) if record else (1, 1, 3), np.float64)
    bad = _raster_kernel(v, v.shape[1] >= 3, tri, attr, image, zbuf, tri_index, weights, depth_test, record)
    if bad >= 0:
        raise InputError(f"triangles: row {bad} = {tri[bad].tolist()} indexes outside the {v.shape[0]} vertices")
    return image, zbuf, tri_index, weights


def rasterize(
    vertices: np.ndarray,
    triangles: np.ndarray,
    attributes: np.ndarray,
    height: int,
    width: int,
    depth_test: bool = True,
    background: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterise per-vertex ``attributes`` (n, C) of a mesh into an (H, W, C) image.

    vertices: (n, 3) image coordinates (x, y pixels, y down; z larger = nearer), or (n, 2)
    (z = 0). triangles: (T, 3) 0-based vertex indices. C may be 0 (coverage/depth only).
    Returns (image (H, W, C) float32, depth (H, W) float32, triangle index (H, W) int32,
    -1 where uncovered). Uncovered pixels hold ``background`` in image and depth.
    Without ``depth_test`` the first triangle to cover a pixel keeps it (UV-space renders,
    where triangles do not overlap).
    """
    v = as_vertices(vertices)
    tri = as_triangles(triangles)
    attr = as_attributes(attributes, v.shape[0])
    h, w = _check_size(height, width)
    image, zbuf, tri_index, _ = _run(v, tri, attr, h, w, bool(depth_test))
    empty = tri_index < 0
    zbuf[empty] = background
    if background != 0.0:
        image[empty] = background
    return image, zbuf, tri_index


def uv_pixel_coords(uv_coords: np.ndarray, resolution: int) -> np.ndarray:
    """(n, 2) UV in [0, 1] -> (n, 2) float32 UV-image pixels: col = u·(R-1), row = (R-1) - v·(R-1)."""
    uv = np.asarray(uv_coords, dtype=np.float32)
    if uv.ndim != 2 or uv.shape[1] < 2:
        raise InputError(f"uv_coords: expected (n, 2) texture coordinates, got shape {uv.shape}")
    r = np.float32(resolution - 1)
    return np.stack([uv[:, 0] * r, r - uv[:, 1] * r], 1)


# ---- UV render plans ---------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _plan_render(pixels, vidx, weights, attributes, out):
    # out: (R*R, C) zeroed; same float64 sums as the direct kernel -> bitwise equal maps.
    channels = out.shape[1]
    for p in range(pixels.shape[0]):
        i0 = vidx[p, 0]
        i1 = vidx[p, 1]
        i2 = vidx[p, 2]
        b0 = weights[p, 0]
        b1 = weights[p, 1]
        b2 = weights[p, 2]
        q = pixels[p]
        for k in range(channels):
            out[q, k] = b0 * attributes[i0, k] + b1 * attributes[i1, k] + b2 * attributes[i2, k]


@njit(cache=True, nogil=True)
def _digest(words_a, words_b):
    # Content fingerprint (4 independent multiply-xor lanes for speed), not cryptographic:
    # it only guards the plan cache against arrays changed in place.
    h = np.empty(4, np.uint64)
    h[0] = np.uint64(0x9E3779B97F4A7C15)
    h[1] = np.uint64(0xC2B2AE3D27D4EB4F)
    h[2] = np.uint64(0x165667B19E3779F9)
    h[3] = np.uint64(0x27D4EB2F165667C5)
    m = np.uint64(0x100000001B3)
    for words in (words_a, words_b):
        n = words.shape[0]
        n4 = n - n % 4
        for i in range(0, n4, 4):
            for j in range(4):
                h[j] = (h[j] ^ np.uint64(words[i + j])) * m
        for i in range(n4, n):
            h[0] = (h[0] ^ np.uint64(words[i])) * m
    return (h[0] ^ (h[1] * np.uint64(3)) ^ (h[2] * np.uint64(5)) ^ (h[3] * np.uint64(7)))


class UVRenderPlan:
    """Precomputed UV rasterisation of one (uv_pixels, triangles, resolution).

    pixels (P,) int64 flat indices row*R + col of the covered pixels; vidx (P, 3) int32 the
    covering triangle's vertices; weights (P, 3) float64 barycentric weights of the pixel
    centre. ``render(attributes (n, C)) -> (R, R, C) float32`` equals the direct
    :func:`rasterize` (no depth test) bit for bit.
    """

    def __init__(self, uv_pixels: np.ndarray, triangles: np.ndarray, resolution: int) -> None:
        v = as_vertices(uv_pixels)[:, :2].copy()
        tri = as_triangles(triangles)
        r, _ = _check_size(resolution, resolution)
        _, _, tri_index, weights = _run(v, tri, np.zeros((v.shape[0], 0), np.float32), r, r, False, record=True)
        flat = tri_index.reshape(-1)
        self.pixels = np.flatnonzero(flat >= 0)
        self.vidx = tri[flat[self.pixels]]
        self.weights = np.ascontiguousarray(weights.reshape(-1, 3)[self.pixels])
        self.resolution = r
        self.n_vertices = v.shape[0]
        self.mask = (flat >= 0).reshape(r, r)

    def render(self, attributes: np.ndarray) -> np.ndarray:
        """Per-vertex attributes (n, C) -> (R, R, C) float32 UV map, 0 outside the covered pixels."""
        attr = as_attributes(attributes, self.n_vertices)
        out = np.zeros((self.resolution * self.resolution, attr.shape[1]), np.float32)
        _plan_render(self.pixels, self.vidx, self.weights, attr, out)
        return out.reshape(self.resolution, self.resolution, attr.shape[1])


_PLAN_CACHE: OrderedDict[tuple, UVRenderPlan] = OrderedDict()
_PLAN_LOCK = threading.Lock()
_PLAN_CACHE_SIZE = 4


def uv_render_plan(uv_pixels: np.ndarray, triangles: np.ndarray, resolution: int) -> UVRenderPlan:
    """The cached :class:`UVRenderPlan` for these arrays (keyed by content, LRU of 4)."""
    v = as_vertices(uv_pixels)[:, :2]
    tri = as_triangles(triangles)
    key = (int(resolution), v.shape, tri.shape,
           int(_digest(np.ascontiguousarray(v).reshape(-1).view(np.uint32), tri.reshape(-1).view(np.uint32))))
    with _PLAN_LOCK:
        plan = _PLAN_CACHE.get(key)
        if plan is not None:
            _PLAN_CACHE.move_to_end(key)
            return plan
    plan = UVRenderPlan(v, tri, resolution)
    with _PLAN_LOCK:
        _PLAN_CACHE[key] = plan
        while len(_PLAN_CACHE) > _PLAN_CACHE_SIZE:
            _PLAN_CACHE.popitem(last=False)
    return plan


def render_uv_map(
    uv_pixels: np.ndarray, triangles: np.ndarray, attributes: np.ndarray, resolution: int, cache: bool = True
) -> np.ndarray:
    """Render per-vertex attributes (n, C) in UV space -> (R, R, C) float32, 0 outside.

    uv_pixels (n, 2) from :func:`uv_pixel_coords`. With attributes = crop-frame vertex
    positions this is the UV position map. Repeated calls with the same UV pixels and
    triangles reuse a cached :class:`UVRenderPlan` (``cache=False`` rasterises directly;
    both give identical maps).
    """
    if cache:
        return uv_render_plan(uv_pixels, triangles, resolution).render(attributes)
    image, _, _ = rasterize(as_vertices(uv_pixels)[:, :2], triangles, attributes, resolution, resolution,
                            depth_test=False)
    return image
