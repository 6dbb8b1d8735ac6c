"""The procedural morphable model (issue 2 §2.3)."""

from __future__ import annotations

import glob

import numpy as np
import pytest
import scipy.io

from prnet_keras.errors import InputError
from prnet_keras.geometry import UVLayout, load_face3d_bfm, load_morphable_model, pose_vertices, save_face3d_bfm
from prnet_keras.geometry import synthetic
from prnet_keras.geometry.synthetic import build_synthetic_model, mirror_permutation

ARRAYS = ("shape_mu", "shape_pc", "shape_ev", "exp_mu", "exp_pc", "exp_ev", "tex_mu", "tex_pc", "tex_ev",
          "triangles", "mouth_triangles", "kpt_ind", "uv_coords")


@pytest.fixture(scope="module")
def model():
    return build_synthetic_model(seed=0)


def _fresh(seed: int, density="default"):
    synthetic._cached_arrays.cache_clear()  # really rebuild, not the per-process cache
    return build_synthetic_model(seed=seed, density=density)


def test_deterministic_for_a_seed_and_seeds_differ():
    a, b, c = _fresh(3), _fresh(3), _fresh(4)
    for key in ARRAYS:
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)
    assert not np.allclose(a.shape_pc[:, 0], c.shape_pc[:, 0])
    assert not np.allclose(a.tex_pc[:, 0], c.tex_pc[:, 0])
    np.testing.assert_array_equal(a.shape_mu, c.shape_mu)  # the mean face does not depend on the seed


def test_sizes_and_dimensions(model):
    assert model.n_vertices >= 10_000
    assert (model.n_shape, model.n_exp, model.n_tex) == (199, 29, 199)
    assert model.shape_pc.dtype == np.float32 and model.triangles.dtype == np.int32
    assert model.triangles.shape[0] > 1.9 * model.n_vertices
    assert np.array_equal(np.unique(model.all_triangles), np.arange(model.n_vertices))  # no stray vertices
    # BFM-like units: ~150,000 between the jaw keypoints, nose tip well in front.
    k = model.vertices()[model.kpt_ind]
    assert 120_000 < k[16, 0] - k[0, 0] < 180_000
    assert k[30, 2] == pytest.approx(k[:, 2].max())


@pytest.mark.parametrize("density,bad", [("huge", True), (10, True), (-5, True), (True, True), ("5000", False)])
def test_density_values(density, bad):
    if bad:
        with pytest.raises(InputError, match="density"):
            build_synthetic_model(0, density)
    else:
        assert 4000 < build_synthetic_model(0, density).n_vertices < 6000


def test_bad_seed():
    with pytest.raises(InputError, match="seed"):
        build_synthetic_model(-1)


@pytest.mark.slow
def test_bfm_density():
    m = build_synthetic_model(0, "bfm")
    assert abs(m.n_vertices - 53_215) / 53_215 < 0.05
    assert abs(len(m.all_triangles) - 105_954) / 105_954 < 0.05


def test_bases_orthonormal_with_documented_scaling(model):
    # Columns have squared norm c = n / 53215 (BFM-equivalent units), and are mutually orthogonal.
    c = model.n_vertices / 53215
    for pc in (model.shape_pc, model.tex_pc):
        gram = pc.T.astype(np.float64) @ pc.astype(np.float64)
        np.testing.assert_allclose(gram, c * np.eye(pc.shape[1]), atol=1e-4 * c)
    for ev in (model.shape_ev, model.exp_ev[4:], model.tex_ev):
        assert np.all(ev > 0) and np.all(np.diff(ev) <= 0)
    # Raw coefficients of one std dev move the surface by a few millimetres (thousands of units).
    rms = model.shape_ev[0] * np.sqrt(c / model.shape_pc.shape[0])
    assert 1_000 < rms < 5_000


def test_keypoints_are_anatomical(model):
    k = model.vertices()[model.kpt_ind]
    assert len(np.unique(model.kpt_ind)) == 68
    y = k[:, 1]
    assert y[17:27].min() > y[36:48].max()  # brows above eyes
    assert y[36:48].min() > y[30] > y[48:68].max()  # eyes above nose tip above mouth
    assert y[48:68].min() > y[8]  # mouth above chin
    assert np.all(k[[0, 17, 36, 39, 31, 48], 0] < 0) and np.all(k[[16, 26, 45, 42, 35, 54], 0] > 0)
    assert np.all(k[[27, 28, 29, 30, 33, 51, 57, 62, 66, 8], 0] == 0)
    assert y[62] > y[66]  # inner upper lip above inner lower lip: distinct slit rows


def test_left_right_symmetry(model):
    perm = mirror_permutation(model)
    v = model.vertices()
    np.testing.assert_allclose(v[perm] * [-1, 1, 1], v, atol=1.0)
    flip68 = np.array(list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30, 35, 34, 33, 32, 31]
                      + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
                      + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65])
    np.testing.assert_array_equal(perm[model.kpt_ind], model.kpt_ind[flip68])
    rng = np.random.default_rng(0)
    sp, ep = rng.standard_normal(199) * model.shape_ev, rng.standard_normal(29) * model.exp_ev
    w = model.vertices(sp, ep)
    np.testing.assert_allclose(w[perm] * [-1, 1, 1], w, atol=5.0)  # 5 µm of ~1e5: float32 rounding
    col = model.colors(rng.standard_normal(199) * model.tex_ev)
    np.testing.assert_allclose(col[perm], col, atol=1e-5)


def test_uv_in_unit_square_and_not_flipped(model):
    uv = model.uv_coords
    assert uv.min() >= 0.0 and uv.max() <= 1.0
    assert len(np.unique(uv, axis=0)) == model.n_vertices
    t = model.all_triangles
    e1, e2 = uv[t[:, 1]] - uv[t[:, 0]], uv[t[:, 2]] - uv[t[:, 0]]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    assert np.all(area > 0)  # every UV triangle has the same orientation: no fold-overs


def test_winding_points_out_of_the_face(model):
    v = model.vertices().astype(np.float64)
    t = model.triangles
    n = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    centre = v[t].mean(1)
    frontal = np.abs(centre[:, 0]) < 20_000
    assert np.mean(n[frontal, 2] > 0) > 0.97  # front of the face looks at +z


def test_regions_and_mouth(model):
    for name, kp in (("nose", 30), ("eye", 37), ("mouth", 51)):
        assert model.regions[name].dtype == bool and model.regions[name][model.kpt_ind[kp]]
    assert len(model.mouth_triangles) > 10
    slit = np.unique(model.mouth_triangles)
    assert np.isin(model.kpt_ind[[62, 66]], slit).all()


def test_semantic_expressions(model):
    k0 = model.vertices()[model.kpt_ind]

    def kp(i, val):
        ep = np.zeros(29)
        ep[i] = val
        return model.vertices(None, ep)[model.kpt_ind]

    jaw = kp(0, 3.0)
    assert k0[8, 1] - jaw[8, 1] > 10_000  # chin drops > 1 cm
    assert (jaw[62, 1] - jaw[66, 1]) - (k0[62, 1] - k0[66, 1]) > 8_000  # lips part
    assert np.allclose(jaw[17:48], k0[17:48])  # eyes and brows stay
    smile = kp(1, 2.0)
    assert smile[48, 1] - k0[48, 1] > 4_000 and smile[54, 0] - k0[54, 0] > 2_000
    brow = kp(2, 2.0)
    assert np.all(brow[17:27, 1] - k0[17:27, 1] > 3_000)
    eyes = kp(3, 3.0)
    assert np.all((eyes[[37, 38], 1] - eyes[[41, 40], 1]) < 0.3 * (k0[[37, 38], 1] - k0[[41, 40], 1]))


def test_mean_texture_has_features(model):
    c = model.colors()
    lum = c.mean(1)
    k = model.kpt_ind
    skin = np.median(lum[model.regions["nose"]])
    pupil = np.argmin(np.linalg.norm(model.vertices() - model.vertices()[k[[37, 38, 40, 41]]].mean(0), axis=1))
    assert lum[pupil] < 0.35 * skin  # dark iris / pupil
    assert c[k[51], 0] > c[k[51], 1] + 0.15  # red lips
    brow = model.vertices()[k[19]]
    near = np.linalg.norm(model.vertices() - brow, axis=1) < 2_500
    assert lum[near].mean() < 0.7 * skin


def test_round_trip_through_face3d_mat(model, tmp_path):
    path = tmp_path / "BFM.mat"
    save_face3d_bfm(model, path)
    back = load_face3d_bfm(path)
    for key in ARRAYS:
        np.testing.assert_array_equal(getattr(back, key), getattr(model, key), err_msg=key)
    for name, mask in model.regions.items():
        np.testing.assert_array_equal(back.regions[name], mask)
    raw = scipy.io.loadmat(path)["model"][0, 0]
    assert raw["shapePC"].shape == (3 * model.n_vertices, 199) and raw["expPC"].shape[1] == 29
    assert raw["tri"].shape[0] == 3 and raw["tri"].min() == 1  # face3d: 3 x T, 1-based
    assert load_morphable_model(path).n_vertices == model.n_vertices


def test_uv_layout_from_model(model):
    layout = UVLayout.from_model(model)
    assert 25_000 < layout.n_vertices < 60_000
    assert len({tuple(p) for p in layout.uv_kpt_ind.T}) == 68
    assert set(np.unique(layout.weight_mask).round(4)) == {0.0, 0.1875, 0.25, 1.0}
    assert layout.canonical_vertices.shape == (layout.n_vertices, 3)
    assert load_morphable_model("synthetic").n_vertices == model.n_vertices


def test_real_poses_give_real_faces(model, reference_data):
    """BFM scale and axes: a real AFLW2000-3D Pose_Para puts the synthetic mean's 68 points near pt3d_68."""
    v = model.vertices()
    for f in sorted(glob.glob(str(reference_data / "aflw2000-3d" / "*.mat"))):
        mat = scipy.io.loadmat(f)
        gt = mat["pt3d_68"][:2].T
        k = pose_vertices(v, mat["Pose_Para"], 450)[model.kpt_ind, :2]
        norm = np.sqrt(np.prod(gt.max(0) - gt.min(0)))
        assert np.linalg.norm(k - gt, axis=1).mean() / norm < 0.10, f
