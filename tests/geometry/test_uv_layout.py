"""UV layout: derivation from a model, grid triangulation, weights, serialisation, loaders."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from prnet_keras.errors import InputError
from prnet_keras.geometry import UVLayout, grid_triangles, load_uv_layout, render_uv_map, uv_pixel_coords
from prnet_keras.geometry.uv import WEIGHT_FACE, WEIGHT_KPT, WEIGHT_REGION


def test_grid_triangles_counts_and_winding():
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True  # 3x3 pixels -> 4 quads -> 8 triangles
    mask[0, 0] = True  # isolated pixel: no triangle
    tri = grid_triangles(mask)
    assert tri.shape == (8, 3) and tri.dtype == np.int32
    rows, cols = np.nonzero(mask)  # face_ind order (row-major)
    pts = np.stack([cols, rows], 1).astype(float)
    e1, e2 = pts[tri[:, 1]] - pts[tri[:, 0]], pts[tri[:, 2]] - pts[tri[:, 0]]
    cross = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    # Clockwise in image coordinates (y down) = counter-clockwise for a y-up viewer.
    assert np.all(cross < 0)
    assert 0 not in tri  # the isolated pixel is index 0
    # A half-quad is kept when its three corners are present.
    m2 = np.array([[1, 1], [1, 0]], bool)
    assert grid_triangles(m2).shape == (1, 3)
    assert grid_triangles(np.array([[0, 1], [1, 1]], bool)).shape == (1, 3)
    assert grid_triangles(np.array([[1, 0], [0, 1]], bool)).shape == (0, 3)


def test_layout_from_model(tiny_model):
    lay = UVLayout.from_model(tiny_model, resolution=64)
    uv = uv_pixel_coords(tiny_model.uv_coords, 64)
    # Face mask = UV footprint of the triangles: the UV grid spans [0.1, 0.9] -> pixels
    # 6.3 .. 56.7 in both axes, so centres 7..56 are inside.
    expect = np.zeros((64, 64), bool)
    expect[7:57, 7:57] = True
    np.testing.assert_array_equal(lay.face_mask, expect)
    assert lay.n_vertices == 50 * 50 == lay.face_ind.size
    np.testing.assert_array_equal(lay.uv_kpt_ind, np.rint(uv[tiny_model.kpt_ind]).astype(int).T)
    np.testing.assert_array_equal(lay.kpt_flat, lay.uv_kpt_ind[1] * 64 + lay.uv_kpt_ind[0])
    # Weights: 16 : 4 : 3 : 0 (stored / 16).
    w = lay.weight_mask
    assert set(np.unique(w)) == {0.0, WEIGHT_FACE, WEIGHT_REGION, WEIGHT_KPT}
    assert WEIGHT_KPT / WEIGHT_FACE == pytest.approx(16 / 3) and WEIGHT_KPT / WEIGHT_REGION == 4
    assert np.all(w[lay.uv_kpt_ind[1], lay.uv_kpt_ind[0]] == WEIGHT_KPT)
    assert np.all(w[~lay.face_mask] == 0) and np.all(w[lay.face_mask] > 0)
    # Canonical vertices: the mean face (centred) at the face pixels, y up.
    mean = tiny_model.vertices()
    pm = render_uv_map(uv, tiny_model.triangles, mean - mean.mean(0), 64)
    np.testing.assert_allclose(lay.canonical_vertices, pm.reshape(-1, 3)[lay.face_ind], atol=1e-4)
    assert lay.triangles.shape == (2 * 49 * 49, 3)


def test_layout_maps_read_back(tiny_model):
    lay = UVLayout.from_model(tiny_model, resolution=64)
    pm = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    v = lay.vertices_from_map(pm)
    assert v.shape == (2, lay.n_vertices, 3)
    np.testing.assert_array_equal(v[1], pm[1].reshape(-1, 3)[lay.face_ind])
    k = lay.keypoints_from_map(pm[0])
    np.testing.assert_array_equal(k, pm[0, lay.uv_kpt_ind[1], lay.uv_kpt_ind[0]])


def test_layout_with_user_mask_png(tiny_model, tmp_path):
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 10:50] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    lay = UVLayout.from_model(tiny_model, resolution=64, face_mask=tmp_path / "mask.png")
    assert lay.n_vertices == 20 * 40
    # A mask wider than the footprint (covered: columns 7..56) takes the nearest covered
    # pixel's canonical vertex.
    wide = np.zeros((64, 64), bool)
    wide[30, 0:64] = True
    lay2 = UVLayout.from_model(tiny_model, resolution=64, face_mask=wide)
    full = UVLayout.from_model(tiny_model, resolution=64)
    row30 = full.canonical_vertices[full.face_ind // 64 == 30]  # columns 7..56
    np.testing.assert_array_equal(lay2.canonical_vertices[:7], np.repeat(row30[:1], 7, 0))
    np.testing.assert_array_equal(lay2.canonical_vertices[7:57], row30)
    np.testing.assert_array_equal(lay2.canonical_vertices[57:], np.repeat(row30[-1:], 7, 0))
    with pytest.raises(InputError, match="expected \\(64, 64\\)"):
        UVLayout.from_model(tiny_model, resolution=64, face_mask=np.ones((32, 32)))
    with pytest.raises(InputError, match="cannot read"):
        UVLayout.from_model(tiny_model, resolution=64, face_mask=tmp_path / "missing.png")


def test_layout_hash_save_load_round_trip(tiny_model, tmp_path):
    lay = UVLayout.from_model(tiny_model, resolution=64)
    h = lay.hash()
    assert len(h) == 16 and h == UVLayout.from_model(tiny_model, resolution=64).hash()
    path = tmp_path / "layout.npz"
    lay.save(path)
    back = UVLayout.load(path)
    assert back == lay and hash(back) == hash(lay) and back.hash() == h
    assert back.source == lay.source
    for key, arr in lay.arrays().items():
        np.testing.assert_array_equal(getattr(back, key) if key != "resolution" else back.resolution, arr)
    assert UVLayout.from_bytes(lay.to_bytes()) == lay
    assert load_uv_layout(path) == lay
    # Any change of content changes the hash.
    other = UVLayout.from_bytes(lay.to_bytes())
    other.weight_mask[0, 0] = 0.5
    assert other.hash() != h and other != lay
    assert {lay: 1}[back] == 1


def test_layout_load_errors(tmp_path, tiny_model):
    with pytest.raises(InputError, match="not found"):
        UVLayout.load(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a UV layout"):
        UVLayout.load(tmp_path / "junk.npz")
    data = UVLayout.from_model(tiny_model, resolution=64).to_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.npz: not a UV layout"):
        UVLayout.load(tmp_path / "cut.npz")
    with pytest.raises(InputError, match="--uv-data or a morphable model"):
        load_uv_layout(None)
    assert load_uv_layout(None, tiny_model, resolution=64).n_vertices == 2500
    with pytest.raises(InputError, match="uv_kpt_ind"):
        UVLayout(64, np.ones((64, 64), bool), np.zeros((2, 67)), np.zeros((64, 64)), np.zeros((0, 3)),
                 np.zeros((4096, 3)))
    with pytest.raises(InputError, match="canonical_vertices"):
        UVLayout(64, np.ones((64, 64), bool), np.zeros((2, 68)), np.zeros((64, 64)), np.zeros((0, 3)),
                 np.zeros((10, 3)))


def _write_prnet_folder(folder, lay: UVLayout, shuffle: bool = False):
    folder.mkdir()
    order = np.arange(lay.n_vertices)
    if shuffle:
        order = np.random.default_rng(0).permutation(order)
    np.savetxt(folder / "uv_kpt_ind.txt", lay.uv_kpt_ind, fmt="%d")
    np.savetxt(folder / "face_ind.txt", lay.face_ind[order], fmt="%d")
    Image.fromarray(np.rint(lay.weight_mask * 255).astype(np.uint8)).save(folder / "uv_weight_mask.png")
    # Official files are in image orientation (y down).
    np.save(folder / "canonical_vertices.npy", lay.canonical_vertices[order] * np.array([1, -1, 1], np.float32))


def test_prnet_folder_loader_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    mask = np.zeros((256, 256), bool)
    mask[60:200, 50:210] = True
    kpt = np.stack([rng.integers(50, 210, 68), rng.integers(60, 200, 68)])
    weight = np.where(mask, 48 / 255, 0).astype(np.float32)
    canon = rng.normal(size=(int(mask.sum()), 3)).astype(np.float32)
    lay = UVLayout(256, mask, kpt, weight, grid_triangles(mask), canon)
    _write_prnet_folder(tmp_path / "uv", lay, shuffle=True)
    back = UVLayout.from_prnet_folder(tmp_path / "uv")
    np.testing.assert_array_equal(back.face_mask, mask)
    np.testing.assert_array_equal(back.uv_kpt_ind, kpt)
    np.testing.assert_allclose(back.canonical_vertices, canon)  # reordered to row-major, y up
    np.testing.assert_array_equal(back.triangles, grid_triangles(mask))
    np.testing.assert_allclose(back.weight_mask, weight, atol=1e-6)
    assert load_uv_layout(tmp_path / "uv") == back
    # triangles.txt, when present, is used as is.
    np.savetxt(tmp_path / "uv" / "triangles.txt", back.triangles[:10], fmt="%d")
    assert UVLayout.from_prnet_folder(tmp_path / "uv").triangles.shape == (10, 3)


def test_prnet_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="missing uv_kpt_ind.txt"):
        UVLayout.from_prnet_folder(tmp_path / "empty")
    mask = np.zeros((256, 256), bool)
    mask[100:110, 100:110] = True
    lay = UVLayout(256, mask, np.full((2, 68), 105), mask * 0.1875, grid_triangles(mask), np.zeros((100, 3)))
    _write_prnet_folder(tmp_path / "bad", lay)
    (tmp_path / "bad" / "face_ind.txt").write_text("1 2 x\n")
    with pytest.raises(InputError, match="face_ind.txt"):
        UVLayout.from_prnet_folder(tmp_path / "bad")
    np.savetxt(tmp_path / "bad" / "face_ind.txt", lay.face_ind[:50], fmt="%d")
    with pytest.raises(InputError, match="canonical_vertices.npy"):
        UVLayout.from_prnet_folder(tmp_path / "bad")
