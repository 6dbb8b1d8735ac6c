"""MTCNN run by ``inference.mtcnn_stages`` (packed pyramid, numpy patches, OpenVINO or TensorFlow
graphs) finds the faces mtcnn's own ``detect_faces`` finds: boxes and points within a pixel,
scores within 1e-3; each replaced piece equals the TensorFlow op it replaces."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from prnet_keras.errors import InputError
from prnet_keras.inference import load_image
from prnet_keras.inference.pnet_packed import GAP, _area_pyramid, normalise, pack

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


def test_area_pyramid_equals_opencv_area_resizing():
    rng = np.random.default_rng(3)
    for h, w, sizes in ((450, 450, [(135, 135), (95, 95), (12, 12)]), (257, 500, [(77, 150), (54, 106), (13, 25)]),
                        (40, 30, [(40, 30), (20, 15), (13, 12)])):  # same size, exact halves, odd fractions
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        offsets, (ch, cw) = pack(sizes)
        canvas = np.full((ch, cw, 3), 7.0, np.float32)
        _area_pyramid(image, np.asarray(sizes), np.asarray(offsets), canvas)
        for (sh, sw), (y, x) in zip(sizes, offsets):
            want = cv2.resize(normalise(image), (sw, sh), interpolation=cv2.INTER_AREA)
            np.testing.assert_allclose(canvas[y:y + sh, x:x + sw], want, atol=2e-6)
        assert (canvas == 7.0).sum() == ch * cw * 3 - sum(a * b for a, b in sizes) * 3  # nothing else written


def test_crop_patches_equal_tensorflow_crop_and_resize():
    from mtcnn.utils.images import extract_patches

    from prnet_keras.inference.mtcnn_stages import crop_patches

    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    x1, y1 = rng.uniform(-40, 110, 64), rng.uniform(-40, 80, 64)
    side = rng.uniform(3, 90, 64)
    boxes = np.stack([np.zeros(64), x1, y1, x1 + side, y1 + side * rng.uniform(0.7, 1.3, 64)], axis=1)
    for size in (24, 48):
        want = extract_patches(normalise(image)[None], boxes, (size, size)).numpy()
        got = crop_patches(image, boxes[:, 1:5], size)
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-4)
        assert np.any(got == 0.0)  # some boxes reach outside: MTCNN's mid-grey there


def _images(synthetic_aflw_dir, reference_data_or_none):
    paths = sorted(synthetic_aflw_dir.glob("*.jpg"))[:4]
    if reference_data_or_none is not None:
        paths += sorted((reference_data_or_none / "photos").glob("*"))
    return [load_image(p) for p in paths]


@pytest.fixture(scope="module")
def reference_or_none():
    from prnet_keras.utils import reference_data_dir

    return reference_data_dir()


@pytest.mark.parametrize("engine", ["openvino", "keras"])
def test_stages_find_the_faces_of_the_mtcnn_package(engine, synthetic_aflw_dir, reference_or_none):
    from prnet_keras.inference.detect import MTCNNDetector

    if engine == "openvino":
        pytest.importorskip("openvino")
    # min face 20: the package's own pyramid is right only there (see detect._scale_pyramid)
    package, ours = MTCNNDetector(0.5, 20, engine="package"), MTCNNDetector(0.5, 20, engine=engine)
    assert (package.engine, ours.engine) == ("package", engine)
    found = 0
    for image in _images(synthetic_aflw_dir, reference_or_none):
        a, b = package(image), ours(image)
        assert len(a) == len(b)
        for da, db in zip(a, b):
            np.testing.assert_allclose(db.box, da.box, atol=1.0)
            assert abs(da.score - db.score) < 1e-3
            np.testing.assert_allclose(db.landmarks5, da.landmarks5, atol=1.0)
        found += len(a)
    assert found >= 4  # the comparison is about real detections


def test_openvino_conversions_are_cached_and_auto_falls_back(monkeypatch, tmp_path):
    pytest.importorskip("openvino")
    from prnet_keras.inference import mtcnn_stages
    from prnet_keras.inference.detect import MTCNNDetector
    from prnet_keras.model import engines

    monkeypatch.setenv("PRNET_CACHE_DIR", str(tmp_path))
    image = np.full((120, 160, 3), 128, np.uint8)
    first = MTCNNDetector(0.9, 20, engine="auto")
    assert first.engine == "openvino" and first(image) == []
    entries = sorted((tmp_path / "openvino-mtcnn").glob("*.xml"))
    assert len(entries) == 3  # one per stage network, beside (not among) the PRNet conversions
    before = {p: p.stat().st_mtime_ns for p in entries}
    MTCNNDetector(0.9, 20, engine="openvino")
    assert sorted((tmp_path / "openvino-mtcnn").glob("*.xml")) == entries  # read back, not made again
    assert all(p.stat().st_mtime_ns >= before[p] for p in entries)

    monkeypatch.setattr(engines, "openvino_unavailable_reason", lambda: "openvino is not installed")
    assert MTCNNDetector(0.9, 20, engine="auto").engine == "keras"
    with pytest.raises(InputError, match="engine 'openvino': openvino is not installed"):
        MTCNNDetector(0.9, 20, engine="openvino")
    with pytest.raises(InputError, match="detector engine"):
        MTCNNDetector(0.9, 20, engine="openvino-int8x")
    monkeypatch.setattr(mtcnn_stages, "stage_networks", lambda: None)  # a future mtcnn with other internals
    assert MTCNNDetector(0.9, 20, engine="auto").engine == "package"


def test_freshly_converted_networks_own_their_weights(monkeypatch, synthetic_aflw_dir):
    """A model converted in memory (not read back from the cache) and compiled after its trace
    is gone finds the package's faces: converted with shared weights it read freed buffers."""
    pytest.importorskip("openvino")
    import gc

    import tensorflow as tf

    from prnet_keras.inference.detect import MTCNNDetector

    monkeypatch.setenv("PRNET_CACHE_DIR", "off")
    fresh = MTCNNDetector(0.5, 20, engine="openvino")
    gc.collect()
    scratch = [tf.random.uniform((256, 256, 3)) for _ in range(64)]  # reuse freed memory
    package = MTCNNDetector(0.5, 20, engine="package")
    found = 0
    for path in sorted(synthetic_aflw_dir.glob("*.jpg"))[:4]:
        image = load_image(path)
        want, got = package(image), fresh(image)
        assert len(got) == len(want)
        for a, b in zip(want, got):
            np.testing.assert_allclose(b.box, a.box, atol=1.0)
        found += len(want)
    assert found >= 2
    del scratch
