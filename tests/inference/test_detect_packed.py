"""MTCNN's first stage on the packed image pyramid (inference.pnet_packed) finds the same faces
as mtcnn's one-call-per-scale pyramid: boxes within a pixel, scores within 1e-3."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from prnet_keras.inference import load_image
from prnet_keras.inference.pnet_packed import GAP, pack

pytest.importorskip("mtcnn")


def test_pack_places_every_scale_apart_on_even_offsets():
    from prnet_keras.inference.detect import _scale_pyramid

    for w, h, face in ((450, 450, 40), (640, 480, 40), (1280, 720, 20), (160, 120, 12), (500, 257, 40)):
        scales = _scale_pyramid(w, h, face, 0.709)
        sizes = [(int(h * s), int(w * s)) for s in scales]
        offsets, (ch, cw) = pack(sizes)
        for (y, x), (sh, sw) in zip(offsets, sizes):
            assert y % 2 == 0 and x % 2 == 0 and y + sh <= ch and x + sw <= cw
        for ((y1, x1), (h1, w1)), ((y2, x2), (h2, w2)) in itertools.combinations(zip(offsets, sizes), 2):
            apart = x1 + w1 + GAP <= x2 or x2 + w2 + GAP <= x1 or y1 + h1 + GAP <= y2 or y2 + h2 + GAP <= y1
            assert apart, (w, h, (y1, x1, h1, w1), (y2, x2, h2, w2))
        assert ch * cw < 2.2 * sum(a * b for a, b in sizes)  # not wasteful


def _images(synthetic_aflw_dir, reference_data_or_none):
    paths = sorted(synthetic_aflw_dir.glob("*.jpg"))[:4]
    if reference_data_or_none is not None:
        paths += sorted((reference_data_or_none / "photos").glob("*"))
    return [load_image(p) for p in paths]


@pytest.fixture(scope="module")
def reference_or_none():
    from prnet_keras.utils import reference_data_dir

    return reference_data_dir()


def test_packed_pyramid_finds_the_same_faces(synthetic_aflw_dir, reference_or_none):
    from prnet_keras.inference.detect import MTCNNDetector

    per_scale, packed = MTCNNDetector(0.5, 20, packed=False), MTCNNDetector(0.5, 20, packed=True)
    assert packed.compiled and type(packed._mtcnn.stages[0]).__name__ == "_PackedPNet"
    found = 0
    for image in _images(synthetic_aflw_dir, reference_or_none):
        a, b = per_scale(image), packed(image)
        assert len(a) == len(b)
        for da, db in zip(a, b):
            np.testing.assert_allclose(db.box, da.box, atol=1.0)
            assert abs(da.score - db.score) < 1e-3
            np.testing.assert_allclose(db.landmarks5, da.landmarks5, atol=1.0)
        found += len(a)
    assert found >= 4  # the comparison is about real detections
