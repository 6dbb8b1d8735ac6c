"""Texture editing and face swapping (the official ``demo_texture`` feature set, extended).

    from prnet_keras.edit import swap_faces, replace_region
    from prnet_keras.inference import Predictor

    predictor = Predictor.from_path("run/model.keras")
    result = swap_faces("a.jpg", "b.jpg", predictor)                  # B's face onto A's
    eyes = replace_region("a.jpg", "b.jpg", predictor, region="eyes")  # only the eyes
    result.image                                                       # (h, w, 3) uint8 RGB

Steps per edited face: sample both UV textures with a confidence (visible and facing the
camera), match the source's Lab colour statistics to the target's visible skin, fill what
each face hides from its visible mirror side, then from the other face, mix the
source into the target texture by the region's UV weights, render the result with the
target's mesh (z-buffer, bilinear texture sampling) and blend it into the image inside the
face eroded by a few pixels (Poisson by default). Pixels outside that mask never change.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from prnet_keras.cancel import check_cancelled
from prnet_keras.edit.blend import BLENDS, blend, blend_mask, default_erode_px
from prnet_keras.edit.regions import uv_region_mask
from prnet_keras.edit.texture import (
    color_transfer as match_colors, complete_texture, face_texture, fill_hidden, lab_statistics, render_texture,
    resize_uv, skin_weights,
)
from prnet_keras.errors import InputError
from prnet_keras.inference.postprocess import Face

ImageLike = np.ndarray | str | os.PathLike
FaceIndex = int | str | None  # an index, "all" (every face: targets only) or None (the largest)


@dataclasses.dataclass
class EditResult:
    """What an edit produced.

    image (h, w, 3) uint8 RGB: the edited image (same size as the input);
    mask (h, w) bool: pixels the edit may have changed (all others are bit-exact);
    pairs [(target face index, source face index)] in the order applied;
    textures / source_textures: per pair, the target's new UV texture and the source texture
    as used (filled, colour-matched), (S, S, 3) uint8 RGB; uv_mask (S, S) float32 region weights.
    """

    image: np.ndarray
    mask: np.ndarray
    pairs: list[tuple[int, int]]
    textures: list[np.ndarray]
    source_textures: list[np.ndarray]
    uv_mask: np.ndarray


def _u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _source_texture(source: Face | np.ndarray, size: int | None, layout) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(source, Face):
        if source.layout != layout:
            raise InputError("source face: it uses another UV layout than the target face")
        return face_texture(source, size or 2 * layout.resolution)
    tex = np.asarray(source)
    if tex.ndim != 3 or tex.shape[2] != 3 or tex.shape[0] != tex.shape[1] or tex.shape[0] < 8:
        raise InputError(f"source texture: expected a square (S, S, 3) RGB UV texture, got shape {tex.shape}")
    tex = tex.astype(np.float32) / (255.0 if tex.dtype == np.uint8 else 1.0)
    return tex, resize_uv(layout.face_mask, tex.shape[0])


def _skin_weights(layout, size: int, src_conf: np.ndarray, tgt_conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each face's skin colour is measured: the skin both faces show when there is
    enough of it (5 % of the skin: like is compared with like), else what each shows, else
    all of its skin (a face seen too badly to measure)."""
    skin = skin_weights(layout, size)
    if skin.sum() < 1.0:  # a layout without skin outside its regions
        skin = resize_uv(layout.face_mask, size)
    both = skin * np.minimum(src_conf, tgt_conf)
    if both.sum() >= 0.05 * skin.sum():
        return both, both
    seen = [skin * c for c in (src_conf, tgt_conf)]
    return tuple(w if w.sum() >= 0.05 * skin.sum() else skin for w in seen)  # type: ignore[return-value]


def edit_texture(
    target_face: Face,
    source: Face | np.ndarray,
    mask: Any = "face",
    color_transfer: bool = True,
    *,
    image: np.ndarray | None = None,
    blend_mode: str = "poisson",
    erode_px: int | None = None,
    texture_size: int | None = None,
) -> EditResult:
    """Replace (part of) one face's texture and render it back into its image.

    target_face: a :class:`Face` with its image; source: another Face (its texture is
    sampled) or a UV texture (S, S, 3) (uint8, or float in [0, 1]: e.g. an edited texture
    file, taken as fully visible). mask: a region name, a mask PNG path or (R, R) weights
    (:func:`uv_region_mask`). color_transfer: match the source's skin colour statistics
    to the target's. image: the image to draw into (default the face's own; pass the
    running result when editing several faces). blend_mode: "poisson" | "alpha" | "none".
    erode_px: how far inside the face the blend mask ends (default 3 % of sqrt(face area),
    2..15 px). texture_size: texture side S (default twice the layout's resolution, or the
    source texture's own size). The result's ``pairs`` is empty (no face indices here).
    """
    layout = target_face.layout
    if blend_mode not in BLENDS:
        raise InputError(f"blend: expected one of {', '.join(BLENDS)}, got {blend_mode!r}")
    if texture_size is not None and not 8 <= int(texture_size) <= 4096:
        raise InputError(f"texture size: expected 8..4096 pixels, got {texture_size}")
    if not isinstance(source, Face) and texture_size is None:
        texture_size = np.asarray(source).shape[0]
    size = int(texture_size or 2 * layout.resolution)
    weights = uv_region_mask(layout, mask)
    src_tex, src_conf = _source_texture(source, size, layout)
    if src_tex.shape[0] != size:
        src_tex = cv2.resize(src_tex, (size, size), interpolation=cv2.INTER_LINEAR)
        src_conf = resize_uv(src_conf, size)
    tgt_tex, tgt_conf = face_texture(target_face, size)
    src_w, tgt_w = _skin_weights(layout, size, src_conf, tgt_conf)
    src_stats, tgt_stats = lab_statistics(src_tex, src_w), lab_statistics(tgt_tex, tgt_w)
    if color_transfer:
        src_tex = match_colors(src_tex, src_stats, tgt_stats)
        src_stats = tgt_stats
    # Each face completes what both its sides hide from the other face, in its own colours.
    own_t, ev_t = fill_hidden(tgt_tex, tgt_conf, layout)
    own_s, ev_s = fill_hidden(src_tex, src_conf, layout)
    tgt_full = complete_texture(own_t, ev_t, match_colors(own_s, src_stats, tgt_stats))
    src_full = complete_texture(own_s, ev_s, match_colors(own_t, tgt_stats, src_stats))
    w = resize_uv(weights, size)[..., None]
    new_tex = tgt_full * (1.0 - w) + src_full * w
    check_cancelled()

    out = np.array(target_face.image if image is None else image, copy=True)
    if out.shape[:2] != tuple(target_face.image_size) or out.ndim != 3 or out.dtype != np.uint8:
        raise InputError(f"image: expected ({target_face.image_size[0]}, {target_face.image_size[1]}, 3) uint8 RGB, "
                         f"got {out.shape} {out.dtype}")
    region_only = not (isinstance(mask, str) and mask == "face")
    # The source alone is rendered: the image keeps the target's own pixels outside the core.
    rendered, covered, region, (x0, y0, x1, y1) = render_texture(target_face, src_full,
                                                                 w[..., 0] if region_only else None)
    px = default_erode_px(covered) if erode_px is None else int(erode_px)
    if px < 0:
        raise InputError(f"erode_px: expected >= 0, got {erode_px}")
    crop = out[y0:y1, x0:x1]
    pasted = np.where(covered[..., None], _u8(rendered), crop)
    inner = blend_mask(covered, None, px)
    core = inner if region is None else blend_mask(covered, region, px)
    out[y0:y1, x0:x1], changed = blend(crop, pasted, core, blend_mode, valid=inner)
    full_mask = np.zeros(out.shape[:2], bool)
    full_mask[y0:y1, x0:x1] = changed
    face = resize_uv(layout.face_mask, size)[..., None] > 0.5  # texels outside the face hold no face colour
    return EditResult(out, full_mask, [], [_u8(new_tex * face)], [_u8(src_full * face)], w[..., 0])


# ---- faces from images ---------------------------------------------------------------------------
def _name(image: ImageLike, default: str) -> str:
    return str(image) if isinstance(image, (str, os.PathLike)) else default


def face_order(faces: Sequence[Face]) -> list[int]:
    """Indices of the faces from the largest (crop box size) to the smallest."""
    return sorted(range(len(faces)), key=lambda i: -faces[i].crop_box[2])


def select_faces(faces: Sequence[Face], index: FaceIndex, name: str, allow_all: bool = False) -> list[int]:
    """Face indices chosen by ``index``: None = the largest, an int (detection order), or "all"."""
    if not faces:
        raise InputError(f"{name}: no face found")
    if index is None:
        return [face_order(faces)[0]]
    if isinstance(index, str) and index.strip().lower() == "all":
        if not allow_all:
            raise InputError(f"{name}: 'all' selects target faces only; pick one source face by index")
        return list(range(len(faces)))
    try:
        i = int(index)
    except (TypeError, ValueError):
        what = "an integer or all" if allow_all else "an integer"
        raise InputError(f"{name}: face index must be {what}, got {index!r}") from None
    if not 0 <= i < len(faces):
        raise InputError(f"{name}: face index {i} out of range: {len(faces)} face(s) found "
                         f"(indices 0..{len(faces) - 1})")
    return [i]


def swap_faces(
    image_a: ImageLike,
    image_b: ImageLike | None,
    predictor: Any,
    *,
    region: Any = "face",
    face: FaceIndex = None,
    ref_face: FaceIndex = None,
    color_transfer: bool = True,
    blend_mode: str = "poisson",
    detector: str | Callable | None = None,
    boxes_a: Sequence | None = None,
    boxes_b: Sequence | None = None,
    texture_size: int | None = None,
    erode_px: int | None = None,
    names: tuple[str, str] | None = None,
) -> EditResult:
    """Put face ``ref_face`` of image B onto face ``face`` of image A (``region``: the whole
    face or a part, see :func:`uv_region_mask`) and return A edited.

    image_a, image_b: paths or RGB uint8 arrays; predictor: a ``Predictor``. face: None
    (the largest), an index in detection order, or "all" (every face of A gets B's face).
    ref_face: None (the largest) or an index. image_b None swaps two faces *within* A:
    ``face`` and ``ref_face`` (default the two largest) trade textures both ways.
    boxes_a / boxes_b: face boxes [l, t, r, b] (skip detection for that image).
    names: what error messages call the two images (default their paths, or "image" and
    "reference image" for arrays). Raises InputError when an image has no face or an index
    is out of range.
    """
    name_a = names[0] if names else _name(image_a, "image")
    name_b = names[1] if names else ("" if image_b is None else _name(image_b, "reference image"))
    uv_region_mask(predictor.layout, region)  # a bad region or mask fails before the network runs
    if image_b is None:
        (faces_a,) = predictor.predict_batch([image_a], boxes=None if boxes_a is None else [boxes_a], detector=detector)
        faces_b = None
    else:
        boxes = None if boxes_a is None and boxes_b is None else [boxes_a, boxes_b]
        faces_a, faces_b = predictor.predict_batch([image_a, image_b], boxes=boxes, detector=detector)
    plan = plan_swap(faces_a, faces_b, face, ref_face, (name_a, name_b))
    return apply_swap(plan, region, color_transfer=color_transfer, blend_mode=blend_mode, texture_size=texture_size,
                      erode_px=erode_px)


SwapPlan = list[tuple[int, Face, Face, int]]  # (target index, target face, source face, source index)


def plan_swap(faces_a: Sequence[Face], faces_b: Sequence[Face] | None, face: FaceIndex = None,
              ref_face: FaceIndex = None, names: tuple[str, str] = ("image", "reference image")) -> SwapPlan:
    """Which face goes onto which, as :func:`swap_faces` chooses them (see there); ``faces_b``
    None swaps two faces of A both ways. Raises InputError naming the image (``names``)."""
    name_a, name_b = names
    if faces_b is None:
        if len(faces_a) < 2:
            raise InputError(f"{name_a}: swapping within one image needs two faces, found {len(faces_a)}")
        order = face_order(faces_a)
        i = select_faces(faces_a, face, name_a)[0] if face is not None else order[0]
        j = select_faces(faces_a, ref_face, name_a)[0] if ref_face is not None else next(k for k in order if k != i)
        if i == j:
            raise InputError(f"{name_a}: the face and the reference face are both {i}: pick two different faces")
        return [(i, faces_a[i], faces_a[j], j), (j, faces_a[j], faces_a[i], i)]
    src = select_faces(faces_b, ref_face, name_b)[0]
    return [(t, faces_a[t], faces_b[src], src) for t in select_faces(faces_a, face, name_a, allow_all=True)]


def apply_swap(plan: SwapPlan, region: Any = "face", **options: Any) -> EditResult:
    """Run the edits of a plan one after the other on the first target's image (each source
    texture sampled from its own, unedited image). ``options``: those of :func:`edit_texture`."""
    out, result, mask = None, None, None
    pairs, textures, sources = [], [], []
    for t, target, source, s in plan:
        check_cancelled()  # a server request that timed out or lost its client stops between faces
        result = edit_texture(target, source, region, image=out, **options)
        out = result.image
        mask = result.mask if mask is None else mask | result.mask
        pairs.append((t, s))
        textures += result.textures
        sources += result.source_textures
    if result is None or mask is None:
        raise InputError("swap: nothing to do (no face pairs)")
    return EditResult(out, mask, pairs, textures, sources, result.uv_mask)


def replace_region(image: ImageLike, ref: ImageLike | None, predictor: Any, region: Any = "eyes",
                   **kwargs: Any) -> EditResult:
    """Replace one region (default the eyes; any :func:`uv_region_mask` value) of a face in
    ``image`` by the same region of the face in ``ref`` (the official demo's mode 0).
    Keyword arguments as :func:`swap_faces`."""
    return swap_faces(image, ref, predictor, region=region, **kwargs)
