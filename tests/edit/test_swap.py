"""Face swap and region edits on synthetic scenes with ground-truth maps in place of the network:
what lands where, what stays bit-exact, colour transfer, several faces, errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from prnet_keras.edit import blend, edit_texture, replace_region, swap_faces, uv_region_mask
from prnet_keras.errors import InputError
from prnet_keras.geometry import rasterize


def _luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.asarray(rgb, np.float32), cv2.COLOR_RGB2GRAY)


def _corr(a: np.ndarray, b: np.ndarray, sel: np.ndarray) -> float:
    return float(np.corrcoef(_luma(a)[sel], _luma(b)[sel])[0, 1])


def _lab(rgb_u8: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb_u8.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask.astype(np.uint8), k) > 0


# No blending and no colour transfer: the edited pixels are the source texture resampled onto the
# target's mesh, nothing else, so they must match the ground truth almost exactly.
EXACT = {"blend_mode": "none", "color_transfer": False}


@pytest.mark.parametrize("options", [{}, EXACT], ids=["defaults", "exact"])
def test_swap_puts_the_source_texture_on_the_target_geometry(scenes, edit_predictor, synthetic_model, edit_helpers,
                                                             options):
    p, q = scenes["p"], scenes["q"]  # stripes (yaw 20) <- checker (yaw -35: its far side comes from the mirror)
    r = swap_faces(p.image, q.image, edit_predictor, **options)
    assert r.image.shape == p.image.shape and r.image.dtype == np.uint8 and r.pairs == [(0, 0)]
    face = p.coverage == 0
    # only A's face changes: everything outside it is bit-exact, and so is every pixel outside result.mask
    assert not (r.mask & ~face).any()
    np.testing.assert_array_equal(r.image[~face], p.image[~face])
    np.testing.assert_array_equal(r.image[~r.mask], p.image[~r.mask])
    assert r.mask.sum() > 0.85 * face.sum()
    # B's checker painted on A's geometry is what the edited face shows; A's stripes are gone
    expected, _ = edit_helpers.render_colors(p.faces[0], scenes["colors"]["checker"], synthetic_model,
                                             p.image.shape[:2])
    with_b = _corr(r.image / 255.0, expected, r.mask)
    with_a = _corr(r.image / 255.0, p.image / 255.0, r.mask)
    assert with_b > (0.99 if options else 0.8) and with_a < 0.3, (with_b, with_a)
    if options:  # colours too, up to 8-bit rounding and texture resampling
        assert np.abs(r.image[r.mask] / 255.0 - expected[r.mask]).mean() < 0.02
    assert r.textures[0].shape == (512, 512, 3) and r.source_textures[0].shape == (512, 512, 3)
    assert r.uv_mask.shape == (512, 512) and r.uv_mask.max() == 1.0


def test_eyes_change_only_the_projected_eye_region(scenes, edit_predictor, synthetic_layout):
    p, q = scenes["p"], scenes["q"]
    r = replace_region(p.image, q.image, edit_predictor, region="eyes")
    (face,) = edit_predictor.predict(p.image)
    eyes_uv = uv_region_mask(synthetic_layout, "eyes").reshape(-1)[synthetic_layout.face_ind]
    img, _, tri = rasterize(face.vertices, face.triangles, eyes_uv, *p.image.shape[:2])
    eyes = (img[..., 0] > 0.5) & (tri >= 0)
    changed = np.any(r.image != p.image, axis=-1)
    band = _dilate(eyes, 4)  # the blend band: seamlessClone's 3 px ring around the region, +1 for rounding
    assert changed.sum() > 0.6 * eyes.sum()
    assert not (changed & ~band).any() and not (r.mask & ~band).any()
    np.testing.assert_array_equal(r.image[~r.mask], p.image[~r.mask])
    # a part edit: the rest of the face keeps its own pixels
    assert changed[(p.coverage == 0) & ~band].sum() == 0


def test_color_transfer_keeps_the_target_skin(scenes, edit_predictor):
    a, b = scenes["a"], scenes["b"]  # light skin <- dark skin
    skins_apart = np.linalg.norm(_lab(a.image)[a.coverage == 0].mean(0) - _lab(b.image)[b.coverage == 0].mean(0))
    assert skins_apart > 30

    def distance(target, source, **kw):
        r = swap_faces(target.image, source.image, edit_predictor, **kw)
        got, orig = _lab(r.image)[r.mask], _lab(target.image)[r.mask]
        return float(np.linalg.norm(got.mean(0) - orig.mean(0))), abs(float(got[:, 0].std() - orig[:, 0].std()))

    for blend_mode in ("poisson", "alpha"):
        assert distance(a, b, blend_mode=blend_mode)[0] < 2.5, blend_mode
    # without colour transfer the pasted skin keeps its own tone...
    assert distance(a, b, blend_mode="alpha", color_transfer=False)[0] > 25
    assert distance(b, a, blend_mode="none", color_transfer=False)[0] > 25
    # ...except that Poisson blending alone pulls the mean toward the target's edge colours; the
    # contrast (std of L) still shows the source's skin
    with_ct, without = distance(b, a), distance(b, a, color_transfer=False)
    assert with_ct[1] < 1.0 and without[1] > 1.5 and with_ct[0] < without[0], (with_ct, without)


def test_several_faces(scenes, edit_predictor, synthetic_model, edit_helpers):
    g, p = scenes["g"], scenes["p"]  # g: face 0 light skin (small, left), face 1 checker (larger, right)
    colors = scenes["colors"]

    def changed_faces(img):
        changed = np.any(img != g.image, axis=-1)
        return [int(changed[g.coverage == k].sum()) for k in (0, 1)], changed

    r = swap_faces(g.image, p.image, edit_predictor)  # default: the largest face
    (n0, n1), changed = changed_faces(r.image)
    assert r.pairs == [(1, 0)] and n0 == 0 and n1 > 1000 and not (changed & (g.coverage < 0)).any()
    r = swap_faces(g.image, p.image, edit_predictor, face=0)
    (n0, n1), _ = changed_faces(r.image)
    assert r.pairs == [(0, 0)] and n0 > 500 and n1 == 0
    r = swap_faces(g.image, p.image, edit_predictor, face="all", **EXACT)
    assert r.pairs == [(0, 0), (1, 0)] and len(r.textures) == 2
    for k in (0, 1):
        want, _ = edit_helpers.render_colors(g.faces[k], colors["stripes"], synthetic_model, g.image.shape[:2])
        sel = r.mask & (g.coverage == k)
        assert sel.sum() > 0.8 * (g.coverage == k).sum() and _corr(r.image / 255.0, want, sel) > 0.99, k
    # two faces of one image trade textures
    r = swap_faces(g.image, None, edit_predictor, **EXACT)
    assert r.pairs == [(1, 0), (0, 1)]
    for k, other in ((0, "checker"), (1, "light")):
        want, _ = edit_helpers.render_colors(g.faces[k], colors[other], synthetic_model, g.image.shape[:2])
        sel = r.mask & (g.coverage == k)
        assert _corr(r.image / 255.0, want, sel) > 0.97, k
        assert np.abs(r.image[sel] / 255.0 - want[sel]).mean() < 0.04, k  # small faces: resampling blurs the edges
    r = swap_faces(g.image, None, edit_predictor)  # with the defaults, too
    assert r.pairs == [(1, 0), (0, 1)] and np.any(r.image != g.image, axis=-1)[g.coverage >= 0].mean() > 0.8
    # a source face picked by index in a reference with several faces
    r = swap_faces(p.image, g.image, edit_predictor, ref_face=1, **EXACT)
    want, _ = edit_helpers.render_colors(p.faces[0], colors["checker"], synthetic_model, p.image.shape[:2])
    assert r.pairs == [(0, 1)] and _corr(r.image / 255.0, want, r.mask) > 0.99


def test_face_choice_errors(scenes, edit_predictor):
    g, p = scenes["g"], scenes["p"]
    with pytest.raises(InputError, match=r"^image: face index 5 out of range: 2 face\(s\) found \(indices 0..1\)$"):
        swap_faces(g.image, p.image, edit_predictor, face=5)
    with pytest.raises(InputError, match=r"^B.jpg: face index 1 out of range: 1 face\(s\) found \(indices 0..0\)$"):
        swap_faces(g.image, p.image, edit_predictor, ref_face=1, names=("A.jpg", "B.jpg"))
    with pytest.raises(InputError, match="'all' selects target faces only"):
        swap_faces(g.image, p.image, edit_predictor, ref_face="all")
    with pytest.raises(InputError, match="face index must be an integer or all, got 'left'"):
        swap_faces(g.image, p.image, edit_predictor, face="left")
    with pytest.raises(InputError, match="swapping within one image needs two faces, found 1"):
        swap_faces(p.image, None, edit_predictor)
    with pytest.raises(InputError, match="both 1: pick two different faces"):
        swap_faces(g.image, None, edit_predictor, face=1, ref_face=1)
    blank = np.full((120, 120, 3), 90, np.uint8)
    with pytest.raises(InputError, match="^reference image: no face found$"):
        swap_faces(p.image, blank, edit_predictor)
    with pytest.raises(InputError, match="^A.jpg: no face found$"):
        swap_faces(blank, p.image, edit_predictor, names=("A.jpg", "B.jpg"))


def test_edit_with_a_texture_array_and_bad_arguments(scenes, edit_predictor):
    p, q = scenes["p"], scenes["q"]
    (face_p,) = edit_predictor.predict(p.image)
    (face_q,) = edit_predictor.predict(q.image)
    swapped = edit_texture(face_p, face_q, "face")
    # the texture it made, given back as a plain (processed) texture: the same swap again
    again = edit_texture(face_p, swapped.source_textures[0], "face", color_transfer=False)
    assert again.image.shape == p.image.shape
    assert np.abs(again.image.astype(int) - swapped.image.astype(int))[swapped.mask].mean() < 6
    half = edit_texture(face_p, swapped.source_textures[0][::2, ::2], "face")  # any texture size
    assert half.textures[0].shape == (256, 256, 3)
    with pytest.raises(InputError, match=r"source texture: expected a square \(S, S, 3\)"):
        edit_texture(face_p, np.zeros((64, 32, 3), np.uint8))
    with pytest.raises(InputError, match="blend: expected one of poisson, alpha, none, got 'soft'"):
        edit_texture(face_p, face_q, blend_mode="soft")
    with pytest.raises(InputError, match="texture size: expected 8..4096"):
        edit_texture(face_p, face_q, texture_size=5000)
    with pytest.raises(InputError, match="erode_px: expected >= 0"):
        edit_texture(face_p, face_q, erode_px=-1)


def test_blend_stays_inside_its_mask_even_at_the_image_border():
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8), (5, 5), 0)
    pasted = 255 - image
    core = np.zeros((90, 120), bool)
    core[0:40, 0:50] = True  # touches two borders
    for method in ("poisson", "alpha", "none"):
        out, changed = blend(image, pasted, core, method)
        np.testing.assert_array_equal(out[~changed], image[~changed])
        assert changed[core].all() if method != "alpha" else changed[core].sum() == core.sum()
        assert np.any(out[core] != image[core]), method
    out, changed = blend(image, pasted, np.zeros_like(core))
    assert not changed.any() and np.array_equal(out, image)
