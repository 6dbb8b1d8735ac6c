"""Which part of the UV texture an edit replaces: named facial regions or a user's mask image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from prnet_keras.errors import InputError
from prnet_keras.geometry import UVLayout
from prnet_keras.geometry.uv import REGION_CODES

# Region names users type -> the layout's region label ("face" is the whole face mask).
REGIONS = {"eyes": "eye", "nose": "nose", "mouth": "mouth", "face": None}


def uv_region_mask(layout: UVLayout, region: str | os.PathLike | np.ndarray) -> np.ndarray:
    """(R, R) float32 weights in [0, 1]: how much of each UV texel the edit replaces.

    region: "eyes" | "nose" | "mouth" (the layout's regions: the morphable model's region
    labels, or the official ``uv_face_eyes.png`` / ``uv_face.png`` eye mask, see
    ``UVLayout.region_labels``), "face" (the whole face), a path to a grey PNG/JPEG mask at the
    layout's resolution (white = replace, black = keep, grey = partly), or an (R, R) array of
    weights in [0, 1]. Texels outside the face are always 0.

    >>> mask = uv_region_mask(layout, "eyes")   # doctest: +SKIP
    """
    r = layout.resolution
    face = layout.face_mask
    if isinstance(region, str) and region in REGIONS:
        label = REGIONS[region]
        if label is None:
            return face.astype(np.float32)
        mask = (layout.region_labels() == REGION_CODES[label]) & face
        if not mask.any():
            raise InputError(f"region {region!r}: the UV layout ({layout.source}) has no {region} region; "
                             "pass a mask PNG instead")
        return mask.astype(np.float32)
    if isinstance(region, (str, os.PathLike)):
        weights = _read_mask_image(Path(region), r)
        name = str(region)
    else:
        weights = np.asarray(region, np.float32)
        name = "mask"
        if weights.shape != (r, r):
            raise InputError(f"{name}: expected a ({r}, {r}) array (the UV map's resolution), "
                             f"got shape {weights.shape}")
        if not np.all(np.isfinite(weights)) or weights.min() < 0.0 or weights.max() > 1.0:
            raise InputError(f"{name}: expected weights in [0, 1]")
    weights = np.where(face, weights, 0.0).astype(np.float32)
    if not weights.any():
        raise InputError(f"{name}: the mask selects no pixel of the face region (white = replace, black = keep)")
    return weights


def _read_mask_image(path: Path, resolution: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        names = ", ".join(REGIONS)
        raise InputError(f"region {str(path)!r}: not one of {names}, and no such mask file")
    try:
        with Image.open(path) as im:
            grey = np.asarray(im.convert("L"), np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"{path}: cannot read the mask image ({exc})") from None
    if grey.shape != (resolution, resolution):
        raise InputError(f"{path}: expected a {resolution}x{resolution} mask (the UV map's resolution), "
                         f"got {grey.shape[1]}x{grey.shape[0]}")
    return grey
