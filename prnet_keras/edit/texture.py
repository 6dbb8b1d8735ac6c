"""UV textures for editing: sampling with a confidence, filling what a face hides, colour
transfer, and rendering a texture back onto a face with our rasteriser.

Texture space: a texture of size S is the layout's UV grid (R × R) resampled to S × S with
OpenCV's pixel-centre convention, so UV pixel (row, col) of the layout sits at texel
((col + 0.5)·S/R − 0.5, (row + 0.5)·S/R − 0.5). Colours are float32 RGB in [0, 1] here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import cv2
import numpy as np

from prnet_keras.errors import InputError
from prnet_keras.geometry import UVLayout, rasterize, vertex_normals
from prnet_keras.geometry.uv import REGION_CODES
from prnet_keras.inference.postprocess import Face

# Facing (|n·view|) below which a visible texel counts for nothing, and above which in full:
# near the silhouette one image pixel smears over many texels.
_FACING_ZERO, _FACING_FULL = 0.15, 0.5


def texel_coords(layout: UVLayout, size: int) -> np.ndarray:
    """(N, 2) float32 texel (x, y) of each face vertex in a texture of ``size``² (module doc)."""
    r = layout.resolution
    rows, cols = np.divmod(layout.face_ind, r)
    scale = size / r
    return np.stack([(cols + 0.5) * scale - 0.5, (rows + 0.5) * scale - 0.5], 1).astype(np.float32)


def to_texture(values: np.ndarray, layout: UVLayout, size: int) -> np.ndarray:
    """Per-vertex values (N, C) -> (size, size, C) float32 texture, extended past the face edge
    (nearest face pixel) before resampling so the edge texels keep face values."""
    v = np.asarray(values, np.float32)
    v = v[:, None] if v.ndim == 1 else v
    r = layout.resolution
    grid = np.zeros((r * r, v.shape[1]), np.float32)
    grid[layout.face_ind] = v
    grid = grid[layout.nearest_face_index].reshape(r, r, v.shape[1])
    if size != r:
        grid = cv2.resize(grid, (size, size), interpolation=cv2.INTER_LINEAR).reshape(size, size, v.shape[1])
    return grid


def resize_uv(mask: np.ndarray, size: int) -> np.ndarray:
    """An (R, R) UV map (mask, weights) -> (size, size) float32, bilinear."""
    m = np.asarray(mask, np.float32)
    return m if m.shape[0] == size else cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR)


def vertex_confidence(face: Face) -> np.ndarray:
    """(N,) float32 in [0, 1]: how well the image shows each vertex's colour.

    0 when hidden (z-buffer visibility) or outside the image; for visible vertices it rises
    from 0 at grazing view (|n_z| ≤ 0.15) to 1 when facing the camera within 60°; a vertex
    next to a hidden one counts at most half (its texel mixes in the occluder's colour).
    """
    vis = face.visibility
    n_z = np.abs(vertex_normals(face.vertices, face.triangles)[:, 2])
    conf = vis * np.clip((n_z - _FACING_ZERO) / (_FACING_FULL - _FACING_ZERO), 0.0, 1.0)
    # Texels beside a hidden one sample the occluding edge: halve them (3x3 min over face pixels).
    r = face.layout.resolution
    grid = np.ones(r * r, np.float32)
    grid[face.layout.face_ind] = vis
    near_hidden = cv2.erode(grid.reshape(r, r), np.ones((3, 3), np.uint8)).reshape(-1)[face.layout.face_ind] < 0.5
    conf = np.where(near_hidden & vis, 0.5 * conf, conf)
    return conf.astype(np.float32)


def face_texture(face: Face, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(texture (S, S, 3) float32 RGB in [0, 1], confidence (S, S) float32) of one face.

    The texture is ``Face.texture`` (the image bilinearly sampled at the position map);
    confidence is :func:`vertex_confidence` as a texture (0 outside the face).
    """
    tex = face.texture(size).astype(np.float32) / np.float32(255.0)
    conf = to_texture(vertex_confidence(face), face.layout, size)[..., 0]
    return tex, conf * resize_uv(face.layout.face_mask, size)


_MIRROR_CACHE: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
_MIRROR_LOCK = threading.Lock()


def mirror_vertices(layout: UVLayout) -> tuple[np.ndarray, np.ndarray]:
    """((N,) int64 index of each vertex's left-right mirror image, (N,) bool: a mirror exists).

    Mirrors the layout's frontal canonical face about the plane x = mean x of its 68
    landmarks (a symmetric set) and takes the nearest vertex; a vertex whose mirror point
    lies farther than 3 grid spacings from any vertex has none. Cached per layout.
    """
    key = layout.hash()
    with _MIRROR_LOCK:
        if key in _MIRROR_CACHE:
            _MIRROR_CACHE.move_to_end(key)
            return _MIRROR_CACHE[key]
    from scipy.spatial import cKDTree

    canon = np.asarray(layout.canonical_vertices, np.float64)
    full = np.zeros((layout.resolution ** 2, 3))
    full[layout.face_ind] = canon
    x0 = full[layout.nearest_face_index][layout.kpt_flat, 0].mean()
    tree = cKDTree(canon)
    spacing = np.median(tree.query(canon, k=2)[0][:, 1])
    dist, idx = tree.query(canon * [-1.0, 1.0, 1.0] + [2.0 * x0, 0.0, 0.0])
    out = (idx.astype(np.int64), dist <= 3.0 * spacing)
    with _MIRROR_LOCK:
        _MIRROR_CACHE[key] = out
        while len(_MIRROR_CACHE) > 4:
            _MIRROR_CACHE.popitem(last=False)
    return out


def mirror_texture(texture: np.ndarray, confidence: np.ndarray, layout: UVLayout) -> tuple[np.ndarray, np.ndarray]:
    """The texture and confidence seen through the left-right mirror (0 where no mirror exists)."""
    size = texture.shape[0]
    idx, ok = mirror_vertices(layout)
    coords = texel_coords(layout, size)
    warp = to_texture(np.concatenate([coords[idx], ok[:, None]], 1), layout, size)
    mx, my = np.ascontiguousarray(warp[..., 0]), np.ascontiguousarray(warp[..., 1])
    tex = cv2.remap(texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    conf = cv2.remap(confidence, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return tex, conf * np.clip(warp[..., 2], 0.0, 1.0)


def fill_hidden(texture: np.ndarray, confidence: np.ndarray, layout: UVLayout) -> tuple[np.ndarray, np.ndarray]:
    """What the image shows of a face, completed from its left-right mirror.

    texture (S, S, 3) float32 in [0, 1]; confidence (S, S) in [0, 1] (:func:`face_texture`).
    Returns (filled (S, S, 3): own texels weighted by confidence, the visible mirror side for
    the rest; texels neither side shows are diffused in from around them, evidence (S, S)
    in [0, 1]: how much of each texel the image backs). The blend is per texel and soft, so
    no seam appears where visibility changes.
    """
    mir, mir_conf = mirror_texture(texture, confidence, layout)
    c = confidence[..., None]
    cm = ((1.0 - confidence) * mir_conf)[..., None]
    evidence = c + cm  # in [0, 1]
    seen = (c * texture + cm * mir) / np.maximum(evidence, 1e-6)
    holes = (evidence[..., 0] < 0.02) & (resize_uv(layout.face_mask, texture.shape[0]) > 0)
    if holes.any():
        seen = diffuse_fill(seen, ~holes)
    return np.clip(seen, 0.0, 1.0).astype(np.float32), evidence[..., 0]


def diffuse_fill(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill the unknown pixels of an (H, W, C) float image smoothly from the known ones
    (pull-push: weighted averages over an image pyramid, coarser levels filling the gaps of
    finer ones). Known pixels keep their values."""
    x = image.astype(np.float32) * known[..., None]
    w = known.astype(np.float32)
    levels = []
    while True:
        levels.append((x, w))
        if min(w.shape) <= 2 or w.min() > 0:
            break
        size = (max(1, (w.shape[1] + 1) // 2), max(1, (w.shape[0] + 1) // 2))
        x = cv2.resize(x, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)
        w = cv2.resize(w, size, interpolation=cv2.INTER_AREA)
    est = levels[-1][0] / np.maximum(levels[-1][1], 1e-6)[..., None]
    for x, w in reversed(levels[:-1]):
        up = cv2.resize(est, (w.shape[1], w.shape[0]), interpolation=cv2.INTER_LINEAR).reshape(x.shape)
        a = np.clip(w, 0.0, 1.0)[..., None]
        est = x / np.maximum(w, 1e-6)[..., None] * a + up * (1.0 - a)
    return np.where(known[..., None], image, est).astype(np.float32)


def complete_texture(filled: np.ndarray, evidence: np.ndarray, fallback: np.ndarray,
                     min_evidence: float = 0.25) -> np.ndarray:
    """Where a face's texture is backed by less than ``min_evidence`` of the image (both sides
    hidden), blend in ``fallback`` (a complete texture in this face's colours: the other face)."""
    trust = np.clip(evidence / min_evidence, 0.0, 1.0)[..., None]
    return np.clip(trust * filled + (1.0 - trust) * fallback, 0.0, 1.0).astype(np.float32)


def skin_weights(layout: UVLayout, size: int) -> np.ndarray:
    """(size, size) float32: the face without eyes (with brows) and mouth, where skin tone is measured."""
    labels = layout.region_labels()
    skin = layout.face_mask & ~np.isin(labels, [REGION_CODES["eye"], REGION_CODES["mouth"]])
    return resize_uv(skin, size)


def lab_statistics(texture: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (3,), std (3,)) of an RGB float texture in CIE Lab (L 0..100), weighted by (S, S) weights."""
    w = np.asarray(weight, np.float32).reshape(-1)
    if not w.sum() >= 1.0:
        raise InputError("colour transfer: no visible skin to measure in one of the faces")
    sel = w > 0
    lab = cv2.cvtColor(np.ascontiguousarray(texture, np.float32), cv2.COLOR_RGB2LAB)
    x = lab.reshape(-1, 3)[sel].astype(np.float64)
    w = w[sel].astype(np.float64)
    mean = w @ x / w.sum()
    std = np.sqrt(w @ (x - mean) ** 2 / w.sum())
    return mean, np.maximum(std, 1e-3)


def color_transfer(texture: np.ndarray, source_stats: tuple[np.ndarray, np.ndarray],
                   target_stats: tuple[np.ndarray, np.ndarray], max_ratio: float = 2.0) -> np.ndarray:
    """Give a texture the target's colour statistics: per channel in CIE Lab,
    (x − μ_s)·σ_t/σ_s + μ_t, with (μ, σ) from :func:`lab_statistics`; the σ ratio is clamped
    to [1/max_ratio, max_ratio] so a nearly flat region cannot blow up.

    texture (S, S, 3) float32 RGB in [0, 1]; returns the same, transformed.
    """
    (mu_s, sd_s), (mu_t, sd_t) = source_stats, target_stats
    ratio = np.clip(sd_t / sd_s, 1.0 / max_ratio, max_ratio).astype(np.float32)
    lab = cv2.cvtColor(np.ascontiguousarray(texture, np.float32), cv2.COLOR_RGB2LAB)
    lab = (lab - mu_s.astype(np.float32)) * ratio + mu_t.astype(np.float32)
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB), 0.0, 1.0)


def face_box(face: Face, margin: int = 2) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) integer pixel box around the face's vertices, clipped to the image (x1, y1 exclusive)."""
    h, w = face.image_size
    v = face.vertices
    x0 = int(np.clip(np.floor(v[:, 0].min()) - margin, 0, w))
    y0 = int(np.clip(np.floor(v[:, 1].min()) - margin, 0, h))
    x1 = int(np.clip(np.ceil(v[:, 0].max()) + margin + 1, 0, w))
    y1 = int(np.clip(np.ceil(v[:, 1].max()) + margin + 1, 0, h))
    return x0, y0, x1, y1


def render_texture(face: Face, texture: np.ndarray, uv_weight: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple[int, int, int, int]]:
    """Render a texture onto the face's mesh in its image: z-buffered rasterisation of the
    texel coordinates, then bilinear texture sampling.

    texture (S, S, C) float32; uv_weight optional (S, S) map sampled the same way (the edit
    region). Returns (rendered (bh, bw, C) float32, covered (bh, bw) bool, region
    (bh, bw) float32 or None, box (x0, y0, x1, y1)) for the face's box in the image.
    """
    size = texture.shape[0]
    x0, y0, x1, y1 = box = face_box(face)
    if x1 <= x0 or y1 <= y0:
        raise InputError("face: its mesh lies outside the image")
    v = face.vertices - np.array([x0, y0, 0.0], np.float32)
    uv, _, tri = rasterize(v, face.triangles, texel_coords(face.layout, size), y1 - y0, x1 - x0)
    covered = tri >= 0
    mx, my = np.ascontiguousarray(uv[..., 0]), np.ascontiguousarray(uv[..., 1])
    rendered = cv2.remap(texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    rendered = rendered.reshape(covered.shape + (-1,)) * covered[..., None]
    region = None
    if uv_weight is not None:
        region = cv2.remap(np.asarray(uv_weight, np.float32), mx, my, cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0) * covered
    return rendered, covered, region, box
