"""Triangle rasteriser (numba) with a z-buffer, and the renders built on it.

Conventions: image coordinates, pixel (row i, column j) has its centre at (x=j, y=i);
x right, y down, z larger = nearer the camera. A pixel is covered when its centre lies
inside the triangle; centres exactly on an edge follow the top-left rule, so a pixel on an
edge shared by two triangles is drawn exactly once and nothing is drawn outside the
triangles (no border dilation, unlike face3d). Attributes are interpolated with the
barycentric weights of the pixel centre. Degenerate (zero-area) triangles are skipped;
triangles partly or wholly outside the image are clipped to it. Everything is float32.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_EPS_AREA = 1e-12


@njit(cache=True, nogil=True)
def _edge_included(w: float, dx: float, dy: float) -> bool:
    # Top-left rule: on-edge centres (w == 0) belong to edges with dy < 0, or horizontal
    # edges with dx > 0. A shared edge runs opposite ways in its two triangles once both
    # are oriented alike, so exactly one of them owns it.
    if w > 0.0:
        return True
    if w < 0.0:
        return False
    return dy < 0.0 or (dy == 0.0 and dx > 0.0)


@njit(cache=True, nogil=True)
def _rasterize_kernel(vertices, triangles, attributes, image, zbuffer, tri_index, depth_test):
    height, width, channels = image.shape
    n_tri = triangles.shape[0]
    for t in range(n_tri):
        i0 = triangles[t, 0]
        i1 = triangles[t, 1]
        i2 = triangles[t, 2]
        x0 = np.float64(vertices[i0, 0]); y0 = np.float64(vertices[i0, 1])
        x1 = np.float64(vertices[i1, 0]); y1 = np.float64(vertices[i1, 1])
        x2 = np.float64(vertices[i2, 0]); y2 = np.float64(vertices[i2, 1])
        xmin = min(x0, min(x1, x2)); xmax = max(x0, max(x1, x2))
        ymin = min(y0, min(y1, y2)); ymax = max(y0, max(y1, y2))
        if not (xmax >= 0.0 and ymax >= 0.0 and xmin <= width - 1 and ymin <= height - 1):
            continue
        cmin = max(int(np.ceil(xmin)), 0); cmax = min(int(np.floor(xmax)), width - 1)
        rmin = max(int(np.ceil(ymin)), 0); rmax = min(int(np.floor(ymax)), height - 1)
        if cmin > cmax or rmin > rmax:
            continue
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if abs(area) < 1e-12:
            continue
        sign = 1.0 if area > 0 else -1.0
        inv_area = 1.0 / abs(area)
        # Edge k is opposite vertex k; w_k(p) = sign * cross(edge, p - edge start).
        ex0 = x2 - x1; ey0 = y2 - y1  # edge 1->2
        ex1 = x0 - x2; ey1 = y0 - y2  # edge 2->0
        ex2 = x1 - x0; ey2 = y1 - y0  # edge 0->1
        z0 = vertices[i0, 2]; z1 = vertices[i1, 2]; z2 = vertices[i2, 2]
        for r in range(rmin, rmax + 1):
            py = np.float64(r)
            for c in range(cmin, cmax + 1):
                px = np.float64(c)
                w0 = sign * (ex0 * (py - y1) - ey0 * (px - x1))
                if not _edge_included(w0, sign * ex0, sign * ey0):
                    continue
                w1 = sign * (ex1 * (py - y2) - ey1 * (px - x2))
                if not _edge_included(w1, sign * ex1, sign * ey1):
                    continue
                w2 = sign * (ex2 * (py - y0) - ey2 * (px - x0))
                if not _edge_included(w2, sign * ex2, sign * ey2):
                    continue
                b0 = w0 * inv_area; b1 = w1 * inv_area; b2 = w2 * inv_area
                z = b0 * z0 + b1 * z1 + b2 * z2
                if depth_test:
                    if tri_index[r, c] >= 0 and z <= zbuffer[r, c]:
                        continue
                elif tri_index[r, c] >= 0:
                    continue
                zbuffer[r, c] = z
                tri_index[r, c] = t
                for k in range(channels):
                    image[r, c, k] = b0 * attributes[i0, k] + b1 * attributes[i1, k] + b2 * attributes[i2, k]


def _prep(vertices: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.ascontiguousarray(vertices, dtype=np.float32)
    if v.ndim != 2 or v.shape[1] < 2:
        raise ValueError(f"vertices: expected (n, 2|3), got {v.shape}")
    if v.shape[1] == 2:
        v = np.concatenate([v, np.zeros((v.shape[0], 1), np.float32)], 1)
    tri = np.ascontiguousarray(triangles, dtype=np.int32)
    if tri.ndim != 2 or tri.shape[1] != 3:
        raise ValueError(f"triangles: expected (T, 3), got {tri.shape}")
    if tri.size and (tri.min() < 0 or tri.max() >= v.shape[0]):
        raise ValueError(f"triangles: indices must lie in [0, {v.shape[0]})")
    return v, tri


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

    vertices: (n, 3) image coordinates (x, y pixels, y down; z larger = nearer), or (n, 2).
    Returns (image (H, W, C) float32, depth (H, W) float32, triangle index (H, W) int32,
    -1 where uncovered). Uncovered pixels hold ``background`` in image and depth.
    Without ``depth_test`` the first triangle to cover a pixel keeps it (UV-space renders,
    where triangles do not overlap).
    """
    v, tri = _prep(vertices, triangles)
    attr = np.ascontiguousarray(attributes, dtype=np.float32)
    if attr.ndim == 1:
        attr = attr[:, None]
    if attr.shape[0] != v.shape[0]:
        raise ValueError(f"attributes: expected {v.shape[0]} rows (one per vertex), got {attr.shape[0]}")
    image = np.zeros((height, width, attr.shape[1]), np.float32)
    zbuf = np.zeros((height, width), np.float32)
    tri_index = np.full((height, width), -1, np.int32)
    _rasterize_kernel(v, tri, attr, image, zbuf, tri_index, depth_test)
    if background != 0.0:
        empty = tri_index < 0
        image[empty] = background
        zbuf[empty] = background
    return image, zbuf, tri_index


def uv_pixel_coords(uv_coords: np.ndarray, resolution: int) -> np.ndarray:
    """(n, 2) UV in [0, 1] -> (n, 2) UV-image pixels: col = u·(R-1), row = (R-1) - v·(R-1)."""
    uv = np.asarray(uv_coords, dtype=np.float32)
    r = np.float32(resolution - 1)
    return np.stack([uv[:, 0] * r, r - uv[:, 1] * r], 1)


def render_uv_map(uv_pixels: np.ndarray, triangles: np.ndarray, attributes: np.ndarray, resolution: int) -> np.ndarray:
    """Render per-vertex attributes (n, C) in UV space -> (R, R, C) float32, 0 outside.

    With attributes = crop-frame vertex positions this is the UV position map.
    """
    image, _, _ = rasterize(uv_pixels, triangles, attributes, resolution, resolution, depth_test=False)
    return image


def render_depth(vertices: np.ndarray, triangles: np.ndarray, height: int, width: int) -> np.ndarray:
    """Z-buffer of the mesh (H, W) float32: nearest surface z per pixel, 0 where empty."""
    v, tri = _prep(vertices, triangles)
    _, zbuf, _ = rasterize(v, tri, v[:, 2:3], height, width)
    return zbuf


def vertex_visibility(
    vertices: np.ndarray, triangles: np.ndarray, height: int, width: int, tolerance: float | None = None
) -> np.ndarray:
    """(n,) bool: vertex inside the image and not behind the rendered surface.

    A vertex is visible when its z is within ``tolerance`` (default: 1 % of the mesh's z
    range, at least 0.5 px) of the z-buffer at its rounded pixel.
    """
    v, tri = _prep(vertices, triangles)
    depth = render_depth(v, tri, height, width)
    _, _, tri_index = rasterize(v, tri, np.zeros((v.shape[0], 1), np.float32), height, width)
    cols = np.rint(v[:, 0]).astype(np.int64)
    rows = np.rint(v[:, 1]).astype(np.int64)
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    if tolerance is None:
        tolerance = max(0.5, 0.01 * float(np.ptp(v[:, 2])) if v.shape[0] else 0.5)
    vis = np.zeros(v.shape[0], bool)
    rc, cc = rows[inside], cols[inside]
    covered = tri_index[rc, cc] >= 0
    vis[np.flatnonzero(inside)] = covered & (v[inside, 2] >= depth[rc, cc] - tolerance)
    return vis


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted per-vertex unit normals (n, 3) float32 (orientation from triangle winding)."""
    v = np.asarray(vertices, dtype=np.float64)
    tri = np.asarray(triangles, dtype=np.int64)
    face_n = np.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]])
    normals = np.zeros_like(v)
    for k in range(3):
        np.add.at(normals, tri[:, k], face_n)
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    return (normals / np.maximum(norm, 1e-12)).astype(np.float32)


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

    Normals are flipped per vertex to face the camera (+z) so the winding does not matter.
    ``colors=None`` shades a uniform light grey.
    """
    v, tri = _prep(vertices, triangles)
    n = vertex_normals(v, tri)
    n[n[:, 2] < 0] *= -1.0
    light = np.asarray(light_dir, np.float32)
    light = light / np.linalg.norm(light)
    # Image y points down; flip so a light "from above" means +y up as people expect.
    lambert = np.clip(n[:, 0] * light[0] - n[:, 1] * light[1] + n[:, 2] * light[2], 0.0, 1.0)
    shade = ambient + (1.0 - ambient) * lambert
    base = np.full((v.shape[0], 3), 0.8, np.float32) if colors is None else np.asarray(colors, np.float32)
    image, _, _ = rasterize(v, tri, base * shade[:, None], height, width, background=background)
    return np.clip(image, 0.0, 1.0)
