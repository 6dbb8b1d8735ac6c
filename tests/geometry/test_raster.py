"""Rasteriser: coverage against hand-computed pixels, z-buffer, interpolation, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from prnet_keras.errors import InputError
from prnet_keras.geometry import raster, render
from tests.geometry.conftest import grid_mesh


def covered(vertices, triangles, h, w, **kw):
    _, _, idx = raster.rasterize(np.asarray(vertices, float), np.asarray(triangles), np.zeros((len(vertices), 0)),
                                 h, w, **kw)
    return idx >= 0


def test_single_triangle_hand_computed_pixels():
    # Right triangle (0.5, 0.5), (4.5, 0.5), (0.5, 4.5): centres (c, r) with c, r >= 1 and
    # c + r < 5 are inside; c + r = 5 lies on the hypotenuse, a bottom-right edge (not
    # drawn by the top-left rule); nothing on row/column 0 (outside by 0.5).
    tri = [[0, 1, 2]]
    v = [[0.5, 0.5], [4.5, 0.5], [0.5, 4.5]]
    expect = np.zeros((6, 6), bool)
    for r in range(6):
        for c in range(6):
            expect[r, c] = r >= 1 and c >= 1 and r + c <= 4
    np.testing.assert_array_equal(covered(v, tri, 6, 6), expect)
    # Reversed winding covers exactly the same pixels.
    np.testing.assert_array_equal(covered(v, [[0, 2, 1]], 6, 6), expect)


def test_quad_two_triangles_cover_each_pixel_once():
    # Square with corners on pixel centres (1,1)-(4,4): 16 centres, half on edges.
    v = np.array([[1.0, 1.0], [4.0, 1.0], [1.0, 4.0], [4.0, 4.0]])
    tris = np.array([[0, 1, 2], [1, 3, 2]])
    count = sum(covered(v, tris[i:i + 1], 6, 6).astype(int) for i in range(2))
    assert count.max() == 1  # the shared diagonal (1,4)-(4,1) is drawn once
    union = count > 0
    # Top-left style rule: of the square's border, only the top and left edges are kept.
    expect = np.zeros((6, 6), bool)
    expect[1:4, 1:4] = True
    np.testing.assert_array_equal(union, expect)
    np.testing.assert_array_equal(covered(v, tris, 6, 6), expect)


def test_shared_edges_watertight_on_random_mesh(rng):
    # A jittered grid mesh: every pixel centre strictly inside the mesh hull is covered by
    # exactly one triangle (no holes, no double draws), even with centres on edges.
    nx = ny = 9
    gx, gy = np.meshgrid(np.arange(nx) * 4.0, np.arange(ny) * 4.0)
    v = np.stack([gx, gy], -1).reshape(-1, 2)
    inner = (gx[..., None] > 0) & (gx[..., None] < 32) & (gy[..., None] > 0) & (gy[..., None] < 32)
    # Jitter by multiples of 0.5 (many centres land exactly on edges), small enough that no
    # triangle folds over.
    v = v + np.where(inner.reshape(-1, 1), rng.integers(-2, 3, size=v.shape) * 0.5, 0.0)
    tri = grid_mesh(nx, ny)
    e1, e2 = v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]]
    assert np.all(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0] < 0)
    on_edge = 0
    count = np.zeros((33, 33), int)
    for t in tri:
        count += covered(v, t[None], 33, 33)
        a, b = v[t[0]], v[t[1]]  # centres exactly on edge 0-1 (checked for test strength)
        rr, cc = np.mgrid[0:33, 0:33]
        on_edge += int(np.sum((b[0] - a[0]) * (rr - a[1]) - (b[1] - a[1]) * (cc - a[0]) == 0))
    assert on_edge > 100
    assert count.max() == 1
    # The hull is the square [0, 32]²: inside centres plus top/left border rows.
    assert count[0:32, 0:32].min() == 1
    assert count[32, :].sum() == 0 and count[:, 32].sum() == 0


def test_no_pixels_outside_triangle_no_border_dilation():
    v = np.array([[2.2, 2.2], [7.7, 2.2], [2.2, 7.7]])
    img, depth, idx = raster.rasterize(v, [[0, 1, 2]], np.ones(3), 10, 10)
    ys, xs = np.nonzero(idx >= 0)
    # Exactly the centres inside: x >= 3, y >= 3, x + y <= 9 (4 + 3 + 2 + 1 of them).
    assert np.all(xs >= 3) and np.all(ys >= 3) and np.all(xs + ys <= 9)
    assert len(xs) == 10
    assert img[idx < 0].sum() == 0


def test_attribute_interpolation_is_exact_for_linear_functions():
    v = np.array([[0.3, 0.7, 1.0], [15.2, 2.1, 3.0], [4.4, 13.9, 2.0]])
    coef = np.array([[0.5, -1.25, 3.0], [2.0, 0.0, -1.0]])  # attr_k = a·x + b·y + c
    attr = np.stack([v[:, 0] * a + v[:, 1] * b + c for a, b, c in coef], 1)
    img, depth, idx = raster.rasterize(v, [[0, 1, 2]], attr, 16, 16)
    assert img.dtype == np.float32 and depth.dtype == np.float32 and idx.dtype == np.int32
    rr, cc = np.nonzero(idx >= 0)
    assert len(rr) > 40
    for k, (a, b, c) in enumerate(coef):
        np.testing.assert_allclose(img[rr, cc, k], a * cc + b * rr + c, atol=1e-4)
    # z is interpolated the same way (plane through the three z values).
    plane = np.linalg.solve(np.c_[v[:, :2], np.ones(3)], v[:, 2])
    np.testing.assert_allclose(depth[rr, cc], plane[0] * cc + plane[1] * rr + plane[2], atol=1e-4)


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_zbuffer_nearer_triangle_wins_in_any_order(order):
    # Two overlapping triangles, z larger = nearer; red at z=5 over blue at z=1.
    far = [[0, 0, 1.0], [9, 0, 1.0], [0, 9, 1.0]]
    near = [[1, 1, 5.0], [8, 1, 5.0], [1, 8, 5.0]]
    v = np.array(far + near)
    attr = np.array([[0, 0, 1]] * 3 + [[1, 0, 0]] * 3, float)
    tris = np.array([[0, 1, 2], [3, 4, 5]])[order]
    img, depth, idx = raster.rasterize(v, tris, attr, 10, 10)
    np.testing.assert_array_equal(img[3, 3], [1, 0, 0])
    assert depth[3, 3] == 5.0
    np.testing.assert_array_equal(img[0, 5], [0, 0, 1])
    assert depth[0, 5] == 1.0
    # Crossing planes: each pixel shows the locally nearer one.
    tilted = np.array([[0, 0, 0.0], [9, 0, 9.0], [0, 9, 0.0], [0, 0, 4.0], [9, 0, 4.0], [0, 9, 4.0]])
    _, d2, i2 = raster.rasterize(tilted, tris, np.zeros((6, 0)), 10, 10)
    assert d2[2, 2] == 4.0 and d2[1, 7] == 7.0


def test_no_depth_test_keeps_first_triangle():
    v = np.array([[0, 0, 1.0], [9, 0, 1.0], [0, 9, 1.0], [0, 0, 5.0], [9, 0, 5.0], [0, 9, 5.0]])
    _, _, idx = raster.rasterize(v, [[0, 1, 2], [3, 4, 5]], np.zeros((6, 1)), 10, 10, depth_test=False)
    assert set(np.unique(idx)) == {-1, 0}


def test_degenerate_nonfinite_and_offscreen_triangles():
    v = np.array([[1, 1, 0], [5, 5, 0], [3, 3, 0],  # collinear
                  [1, 1, 0], [1, 1, 0], [6, 2, 0],  # repeated vertex
                  [-50, -50, 0], [-10, -50, 0], [-50, -10, 0],  # off-screen
                  [np.nan, 1, 0], [5, 1, 0], [1, 5, 0],  # NaN
                  [-5.0, 2, 1], [20.0, 2, 1], [-5.0, 27, 1]], float)  # partly outside
    tris = np.arange(15).reshape(5, 3)
    img, depth, idx = raster.rasterize(v, tris, np.ones((15, 2)), 8, 8)
    assert set(np.unique(idx)) == {-1, 4}
    # Clipped: covered centres are exactly the in-image ones inside the big triangle.
    rr, cc = np.mgrid[0:8, 0:8]
    inside = rr >= 2  # top edge y = 2 is owned; the hypotenuse x + y = 22 is off-image
    np.testing.assert_array_equal(idx == 4, inside)
    assert np.all(np.isfinite(img))


def test_channel_counts_background_and_2d_vertices():
    v = np.array([[0.0, 0.0], [7.0, 0.0], [0.0, 7.0]])
    for c in (0, 1, 5):
        img, _, _ = raster.rasterize(v, [[0, 1, 2]], np.ones((3, c)), 8, 8)
        assert img.shape == (8, 8, c)
    img, depth, idx = raster.rasterize(v, [[0, 1, 2]], np.ones(3), 8, 8, background=-1.0)
    assert np.all(img[idx < 0] == -1.0) and np.all(depth[idx < 0] == -1.0)
    assert np.all(img[idx >= 0] == 1.0) and np.all(depth[idx >= 0] == 0.0)


def test_bad_input_raises_input_error():
    v = np.zeros((3, 3))
    with pytest.raises(InputError, match="triangles"):
        raster.rasterize(v, [[0, 1, 3]], np.zeros((3, 1)), 4, 4)
    with pytest.raises(InputError, match="triangles"):
        raster.rasterize(v, [[0, -1, 2]], np.zeros((3, 1)), 4, 4)
    with pytest.raises(InputError, match="attributes"):
        raster.rasterize(v, [[0, 1, 2]], np.zeros((4, 1)), 4, 4)
    with pytest.raises(InputError, match="vertices"):
        raster.rasterize(np.zeros((3, 4)), [[0, 1, 2]], np.zeros((3, 1)), 4, 4)
    with pytest.raises(InputError, match="triangles"):
        raster.rasterize(v, [[0.0, 1.0, 2.0]], np.zeros((3, 1)), 4, 4)
    with pytest.raises(InputError, match="image size"):
        raster.rasterize(v, [[0, 1, 2]], np.zeros((3, 1)), 0, 4)


def test_uv_pixel_coords_flip_v():
    px = raster.uv_pixel_coords(np.array([[0.0, 0.0], [1.0, 1.0], [0.5, 0.25]]), 256)
    np.testing.assert_allclose(px, [[0, 255], [255, 0], [127.5, 191.25]])


def test_uv_plan_matches_direct_and_cache_tracks_content(tiny_model):
    uv = raster.uv_pixel_coords(tiny_model.uv_coords, 64)
    tri = tiny_model.triangles
    attr = tiny_model.vertices()
    direct = raster.render_uv_map(uv, tri, attr, 64, cache=False)
    cached = raster.render_uv_map(uv, tri, attr, 64)
    np.testing.assert_array_equal(direct, cached)
    assert (direct != 0).any(-1).sum() > 1000
    plan = raster.uv_render_plan(uv, tri, 64)
    assert raster.uv_render_plan(uv.copy(), tri.copy(), 64) is plan  # same content -> same plan
    assert not ((direct != 0).any(-1) & ~plan.mask).any()
    # Changing the UV coordinates in place must not reuse the stale plan.
    uv2 = uv.copy()
    uv2[:, 0] *= 0.5
    half = raster.render_uv_map(uv2, tri, attr, 64)
    np.testing.assert_array_equal(half, raster.render_uv_map(uv2, tri, attr, 64, cache=False))
    assert not np.array_equal(half, cached)
    with pytest.raises(InputError, match="attributes"):
        plan.render(attr[:-1])


def test_render_depth_and_visibility_occlusion():
    # A big near square in front of a small far triangle whose vertices it hides, and one
    # far vertex outside the square's shadow.
    v = np.array([[2, 2, 10.0], [17, 2, 10.0], [2, 17, 10.0], [17, 17, 10.0],
                  [5, 5, 1.0], [9, 5, 1.0], [5, 9, 1.0], [18.0, 18.0, 1.0], [-3.0, 4.0, 1.0]])
    tri = np.array([[0, 1, 2], [1, 3, 2], [4, 5, 6]])
    depth = render.render_depth(v, tri, 20, 20)
    assert depth[6, 6] == 10.0 and depth[0, 0] == 0.0
    vis = render.vertex_visibility(v, tri, 20, 20)
    np.testing.assert_array_equal(vis, [True, True, True, True, False, False, False, True, False])


def test_vertex_normals_plane_and_isolated_vertex():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5.0]])
    n = render.vertex_normals(v, [[0, 1, 2]])
    np.testing.assert_allclose(n[:3], [[0, 0, 1]] * 3)
    np.testing.assert_array_equal(n[3], [0, 0, 0])


def test_render_shaded_lambert_and_ambient():
    v = np.array([[0, 0, 0], [9, 0, 0], [0, 9, 0.0]])
    col = np.array([[1.0, 0.5, 0.0]] * 3)
    img = render.render_shaded(v, [[0, 1, 2]], col, 10, 10, light_dir=(0, 0, 1), ambient=0.3)
    np.testing.assert_allclose(img[2, 2], [1.0, 0.5, 0.0], atol=1e-6)  # facing the light: full
    side = render.render_shaded(v, [[0, 1, 2]], col, 10, 10, light_dir=(1, 0, 0), ambient=0.3)
    np.testing.assert_allclose(side[2, 2], [0.3, 0.15, 0.0], atol=1e-6)  # grazing: ambient only
    assert img.dtype == np.float32 and img[9, 9].sum() == 0
    with pytest.raises(InputError, match="colors"):
        render.render_shaded(v, [[0, 1, 2]], np.ones((3, 4)), 10, 10)
    with pytest.raises(InputError, match="light_dir"):
        render.render_shaded(v, [[0, 1, 2]], None, 10, 10, light_dir=(0, 0, 0))


def test_uv_maps_from_threads_match_serial(tiny_model):
    # Kernels release the GIL (nogil) and the plan cache is locked: threaded dataset
    # builders get the same maps as a serial loop.
    from concurrent.futures import ThreadPoolExecutor

    uv = raster.uv_pixel_coords(tiny_model.uv_coords, 48)
    rng = np.random.default_rng(5)
    attrs = [tiny_model.vertices(rng.normal(size=3), rng.normal(size=2)) for _ in range(8)]
    serial = [raster.render_uv_map(uv, tiny_model.triangles, a, 48, cache=False) for a in attrs]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda a: raster.render_uv_map(uv, tiny_model.triangles, a, 48), attrs))
    for s, t in zip(serial, threaded):
        np.testing.assert_array_equal(s, t)
