"""Putting a rendered face into an image: Poisson (``cv2.seamlessClone``), feathered alpha or a
hard paste, all confined to a mask so every pixel outside it stays bit-exact."""

from __future__ import annotations

import cv2
import numpy as np

from prnet_keras.errors import InputError

BLENDS = ("poisson", "alpha", "none")
_PAD = 16  # keeps seamlessClone's working rectangle off the image border


def default_erode_px(covered: np.ndarray) -> int:
    """A few pixels, growing with the face: 3 % of sqrt(face area), 2..15 px."""
    return int(np.clip(round(0.03 * np.sqrt(max(int(covered.sum()), 1))), 2, 15))


def disk(px: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))


def blend_mask(covered: np.ndarray, region: np.ndarray | None, erode_px: int) -> np.ndarray:
    """(h, w) bool core of the edit: where the new texture replaces the image.

    The face (``covered``) eroded by ``erode_px`` so seams fall inside the face; for a
    region edit, the region (weight > 0.5) within that.
    """
    inner = cv2.erode(covered.astype(np.uint8), disk(erode_px), borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    return inner if region is None else inner & (region > 0.5)


def _ramp(mask: np.ndarray, px: float) -> np.ndarray:
    """(h, w) float32 weight: 0 outside the mask, rising to 1 at ``px`` pixels inside."""
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    return np.clip(dist / max(px, 1.0), 0.0, 1.0).astype(np.float32)


# seamlessClone erodes its mask by 3 px (3 passes of a 3x3 kernel) before taking the pasted
# gradients: the mask it gets is the core grown by that much, so the pasted gradients reach
# the core's edge and the ring outside keeps the image's own.
_CLONE_GROW = 3


def blend(image: np.ndarray, pasted: np.ndarray, core: np.ndarray, method: str = "poisson",
          valid: np.ndarray | None = None, band_px: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Blend ``pasted`` into ``image`` over the mask ``core``.

    image, pasted: (h, w, 3) uint8; core (h, w) bool; valid (h, w) bool: the most the blend
    may change (default everywhere; the face eroded a few pixels). method: "poisson" (``cv2.seamlessClone``
    NORMAL_CLONE: the pasted gradients inside the core, the image's colours at its edge;
    a ``band_px`` ramp back to the image at the edge of the solved area hides the solver's
    small error there), "alpha" (weights ramp from 0 at the core's edge to 1 at 2·band_px
    inside) or "none" (hard paste of the core).
    Returns (blended image, (h, w) bool: the pixels that may differ; all others are ``image``).
    """
    if method not in BLENDS:
        raise InputError(f"blend: expected one of {', '.join(BLENDS)}, got {method!r}")
    core = np.asarray(core, bool)
    out = image.copy()
    if not core.any():
        return out, core
    if method == "none":
        out[core] = pasted[core]
        return out, core
    if method == "poisson":
        mask = cv2.dilate(core.astype(np.uint8), disk(_CLONE_GROW)) > 0
        if valid is not None:
            mask &= valid
        p = _PAD
        img_p = cv2.copyMakeBorder(image, p, p, p, p, cv2.BORDER_REFLECT)
        src_p = cv2.copyMakeBorder(pasted, p, p, p, p, cv2.BORDER_REFLECT)
        m_p = cv2.copyMakeBorder(mask.astype(np.uint8) * 255, p, p, p, p, cv2.BORDER_CONSTANT, value=0)
        x, y, w, h = cv2.boundingRect(m_p)
        # seamlessClone puts the mask's box at centre - size // 2: this centre keeps it in place.
        source = cv2.seamlessClone(src_p, img_p, m_p, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)[p:-p, p:-p]
        weight = _ramp(mask, band_px)
    else:
        mask = core
        weight = _ramp(core, 2 * band_px)
        source = pasted
    mixed = image.astype(np.float32) * (1.0 - weight[..., None]) + source.astype(np.float32) * weight[..., None]
    out[mask] = np.clip(np.rint(mixed[mask]), 0, 255).astype(np.uint8)
    return out, mask
