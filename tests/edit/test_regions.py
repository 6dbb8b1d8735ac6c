"""UV regions: named regions from the morphable model's labels or the official PNG pair, the
weight-mask fallback for layouts saved without regions, and user mask images."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from prnet_keras.edit import uv_region_mask
from prnet_keras.errors import InputError
from prnet_keras.geometry import UVLayout, uv_pixel_coords
from prnet_keras.geometry.uv import REGION_CODES, regions_from_weight_mask


def _centroid_row(mask: np.ndarray) -> float:
    return float(np.nonzero(mask)[0].mean())


def test_named_regions_follow_the_model_labels(synthetic_layout, synthetic_model):
    lay, model = synthetic_layout, synthetic_model
    masks = {r: uv_region_mask(lay, r) for r in ("eyes", "nose", "mouth", "face")}
    np.testing.assert_array_equal(masks["face"], lay.face_mask.astype(np.float32))
    parts = {r: masks[r] > 0 for r in ("eyes", "nose", "mouth")}
    for name, m in parts.items():
        assert masks[name].dtype == np.float32 and set(np.unique(masks[name])) == {0.0, 1.0}
        assert m.sum() > 500 and not (m & ~lay.face_mask).any(), name
    assert not (parts["eyes"] & parts["nose"]).any() and not (parts["nose"] & parts["mouth"]).any()
    # UV rows grow downwards: eyes above nose above mouth
    assert _centroid_row(parts["eyes"]) < _centroid_row(parts["nose"]) < _centroid_row(parts["mouth"])
    # every vertex labelled eye / nose / mouth by the model lands in that region (UV pixel of the vertex,
    # ignoring the pixels on a region's border)
    px = np.rint(uv_pixel_coords(model.uv_coords, lay.resolution)).astype(int)
    labels = model.region_labels()
    for name, code in (("eyes", 2), ("nose", 1), ("mouth", 3)):
        inner = cv2.erode(parts[name].astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        outer = cv2.dilate(parts[name].astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        hit = outer[px[:, 1], px[:, 0]]
        assert hit[labels == code].mean() > 0.99, name
        assert (labels[inner[px[:, 1], px[:, 0]]] == code).mean() > 0.99, name


def test_regions_survive_save_load_and_fall_back_to_the_weight_mask(synthetic_layout, tmp_path):
    lay = synthetic_layout
    lay.save(tmp_path / "uv_layout.npz")
    back = UVLayout.load(tmp_path / "uv_layout.npz")
    np.testing.assert_array_equal(back.regions, lay.regions)
    assert back.hash() == lay.hash()  # regions annotate a layout, they are not part of its identity
    # a layout saved before regions existed: derived from the loss weight mask and the landmarks
    old = UVLayout(lay.resolution, lay.face_mask, lay.uv_kpt_ind, lay.weight_mask, lay.triangles,
                   lay.canonical_vertices, lay.source)
    assert old.regions is None and old == lay
    derived = old.region_labels()
    for name in ("eye", "nose", "mouth"):
        a, b = lay.regions == REGION_CODES[name], derived == REGION_CODES[name]
        assert (a & b).sum() / (a | b).sum() > 0.85, name
    assert uv_region_mask(old, "mouth").sum() > 500


def test_official_eyes_are_the_png_pair(official_layout, reference_data, tmp_path):
    from PIL import Image

    folder = reference_data / "prnet-uv-data"
    grey = [np.asarray(Image.open(folder / f).convert("L"), np.int16) for f in ("uv_face_eyes.png", "uv_face.png")]
    eyes = uv_region_mask(official_layout, "eyes") > 0
    np.testing.assert_array_equal(eyes, (grey[0] != grey[1]) & official_layout.face_mask)
    kc, kr = official_layout.uv_kpt_ind
    for name, idx in (("eyes", slice(36, 48)), ("nose", slice(27, 36)), ("mouth", slice(48, 68))):
        m = uv_region_mask(official_layout, name) > 0
        assert m.sum() > 300, name
        rows, cols = np.nonzero(m)
        # the region sits on its landmarks
        assert abs(rows.mean() - kr[idx].mean()) < 12 and abs(cols.mean() - kc[idx].mean()) < 12, name
    # an official folder without the two PNGs: eyes (with brows) from the weight mask instead
    partial = tmp_path / "uv-data"
    shutil.copytree(folder, partial, ignore=shutil.ignore_patterns("uv_face*.png"))
    other = UVLayout.from_prnet_folder(partial)
    assert (uv_region_mask(other, "eyes") > 0).sum() > 5 * eyes.sum()


def test_user_mask_images(synthetic_layout, tmp_path):
    lay = synthetic_layout
    grey = np.zeros((256, 256), np.uint8)
    grey[100:140, 60:200] = 255
    grey[150:160, 60:200] = 128
    path = tmp_path / "mask.png"
    cv2.imwrite(str(path), grey)
    w = uv_region_mask(lay, path)
    assert w.dtype == np.float32 and w.shape == (256, 256)
    np.testing.assert_allclose(w, np.where(lay.face_mask, grey / 255.0, 0.0), atol=1e-6)
    np.testing.assert_array_equal(uv_region_mask(lay, str(path)), w)
    np.testing.assert_array_equal(uv_region_mask(lay, grey / 255.0), w)

    cv2.imwrite(str(tmp_path / "small.png"), grey[:128, :100])
    with pytest.raises(InputError, match=r"small.png: expected a 256x256 mask \(the UV map's resolution\), "
                                         r"got 100x128"):
        uv_region_mask(lay, tmp_path / "small.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(InputError, match="notes.png: cannot read the mask image"):
        uv_region_mask(lay, tmp_path / "notes.png")
    with pytest.raises(InputError, match="'ears': not one of eyes, nose, mouth, face, and no such mask file"):
        uv_region_mask(lay, "ears")
    cv2.imwrite(str(tmp_path / "black.png"), np.zeros((256, 256), np.uint8))
    with pytest.raises(InputError, match="black.png: the mask selects no pixel of the face region"):
        uv_region_mask(lay, tmp_path / "black.png")
    with pytest.raises(InputError, match=r"expected a \(256, 256\) array"):
        uv_region_mask(lay, np.ones((64, 64)))
    with pytest.raises(InputError, match=r"weights in \[0, 1\]"):
        uv_region_mask(lay, np.full((256, 256), 2.0))


def test_layout_without_a_region(synthetic_layout):
    lay = synthetic_layout
    empty = UVLayout(lay.resolution, lay.face_mask, lay.uv_kpt_ind, lay.weight_mask, lay.triangles,
                     lay.canonical_vertices, "custom", regions=np.zeros((256, 256), np.int8))
    with pytest.raises(InputError, match="has no nose region; pass a mask PNG instead"):
        uv_region_mask(empty, "nose")
    with pytest.raises(InputError, match="regions must be"):
        UVLayout(lay.resolution, lay.face_mask, lay.uv_kpt_ind, lay.weight_mask, lay.triangles,
                 lay.canonical_vertices, "custom", regions=np.full((256, 256), 7, np.int8))
    # the weight-mask split needs region weights: a face-only weight mask has none
    assert not regions_from_weight_mask(np.where(lay.face_mask, 3 / 16, 0.0), lay.face_mask, lay.uv_kpt_ind).any()
