"""Property tests: rasteriser coverage equals an exact rational point-in-triangle reference."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from prnet_keras.geometry import raster

H = W = 8
# Vertices on a 1/8-pixel grid: float64 edge functions are then exact, and many pixel
# centres fall exactly on edges or vertices, which exercises the tie rule.
coord = st.integers(-16, 12 * 8).map(lambda k: k / 8.0)
triangle = st.lists(st.tuples(coord, coord), min_size=3, max_size=3)


def reference_coverage(pts: list[tuple[float, float]]) -> np.ndarray:
    """Centres strictly inside, or on an edge owned by the top-left rule; exact arithmetic."""
    p = [(Fraction(x), Fraction(y)) for x, y in pts]
    area = (p[1][0] - p[0][0]) * (p[2][1] - p[0][1]) - (p[2][0] - p[0][0]) * (p[1][1] - p[0][1])
    out = np.zeros((H, W), bool)
    if area == 0:
        return out
    sign = 1 if area > 0 else -1
    edges = [(p[1], p[2]), (p[2], p[0]), (p[0], p[1])]
    for r in range(H):
        for c in range(W):
            ok = True
            for a, b in edges:
                dx, dy = (b[0] - a[0]) * sign, (b[1] - a[1]) * sign
                w = dx * (r - a[1]) - dy * (c - a[0])
                owned = dy < 0 or (dy == 0 and dx > 0)
                ok &= w > 0 or (w == 0 and owned)
            out[r, c] = ok
    return out


@settings(max_examples=300, deadline=None)
@given(triangle)
def test_coverage_matches_exact_reference(pts):
    _, _, idx = raster.rasterize(np.array(pts), [[0, 1, 2]], np.zeros((3, 0)), H, W)
    np.testing.assert_array_equal(idx >= 0, reference_coverage(pts))


@settings(max_examples=150, deadline=None)
@given(triangle, coord, coord)
def test_two_triangles_sharing_an_edge_cover_once(pts, x, y):
    # Triangles (a, b, c) and (b, a, d) with d on the other side of ab: a centre is drawn by
    # both only if it is drawn twice -- never.
    a, b, c = pts
    d = (x, y)
    side = lambda q: (b[0] - a[0]) * (q[1] - a[1]) - (b[1] - a[1]) * (q[0] - a[0])  # noqa: E731
    if side(c) * side(d) >= 0:
        return  # not on opposite sides (or degenerate): nothing to check
    v = np.array([a, b, c, d])
    one = raster.rasterize(v, [[0, 1, 2]], np.zeros((4, 0)), H, W)[2] >= 0
    two = raster.rasterize(v, [[1, 0, 3]], np.zeros((4, 0)), H, W)[2] >= 0
    assert not np.any(one & two)
    both = raster.rasterize(v, [[0, 1, 2], [1, 0, 3]], np.zeros((4, 0)), H, W, depth_test=False)[2] >= 0
    np.testing.assert_array_equal(both, one | two)
