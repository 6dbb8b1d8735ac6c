"""Input normalisation (gray, RGBA, 16-bit, BGR, float) and face detection on real photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from prnet_keras.errors import InputError
from prnet_keras.inference import Predictor, decode_image, load_image, to_rgb_uint8
from prnet_keras.inference.detect import (
    Detection, crop_square, detections_from_boxes, detections_from_landmarks, get_detector,
)

# Observed with mtcnn 1.0 (min confidence 0.9): one face in each photo, scores 0.978-1.0
# (5.jpg, the cartoon, 0.978). Recorded 2026-11 on the reference photos.
PHOTO_FACES = {"1.jpg": 1, "2.jpg": 1, "3.jpg": 1, "4.jpg": 1, "5.jpg": 1}


def test_to_rgb_variants():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb_uint8(rgb[..., ::-1], "bgr"), rgb)
    gray = rgb[..., 0]
    assert to_rgb_uint8(gray).shape == (5, 7, 3) and (to_rgb_uint8(gray[..., None])[..., 2] == gray).all()
    rgba = np.concatenate([rgb, np.full((5, 7, 1), 9, np.uint8)], 2)
    np.testing.assert_array_equal(to_rgb_uint8(rgba), rgb)
    np.testing.assert_array_equal(to_rgb_uint8(rgb.astype(np.uint16) * 257), rgb)
    np.testing.assert_array_equal(to_rgb_uint8(rgb / 255.0), rgb)
    for bad in (np.zeros((4, 4, 2)), np.zeros((0, 3, 3)), np.zeros(5), np.full((2, 2), np.nan)):
        with pytest.raises(InputError):
            to_rgb_uint8(bad)
    with pytest.raises(InputError, match="color_order"):
        to_rgb_uint8(rgb, "rgba")


def test_decode_png16_gray_rgba(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", (rgb[..., ::-1].astype(np.uint16) * 257))
    np.testing.assert_array_equal(decode_image(buf.tobytes()), rgb)
    ok, buf = cv2.imencode(".png", np.dstack([rgb[..., ::-1], np.zeros((6, 8), np.uint8)]))
    np.testing.assert_array_equal(decode_image(buf.tobytes()), rgb)  # alpha dropped
    ok, buf = cv2.imencode(".png", rgb[..., 0])
    assert decode_image(buf.tobytes()).shape == (6, 8, 3)
    with pytest.raises(InputError, match="empty"):
        decode_image(b"")
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(InputError, match="x.jpg: cannot decode"):
        load_image(tmp_path / "x.jpg")
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "missing.png")


def test_crop_rules():
    box = np.array([100.0, 50.0, 200.0, 170.0])  # mean side 110
    c, s = crop_square(Detection(box, 0.9, "box"))  # a user's box: official, centred, 1.6x
    np.testing.assert_allclose(c, [150, 110])
    assert s == pytest.approx(1.6 * 110)
    c, s = crop_square(Detection(box, 0.9, "mtcnn"))  # detector boxes sit high on the face
    np.testing.assert_allclose(c, [150, 110 + 0.16 * 110])
    assert s == pytest.approx(1.36 * 110)
    c, s = crop_square(Detection(box, 0.9, "opencv"))
    np.testing.assert_allclose(c, [150, 110 + 0.15 * 110])
    assert s == pytest.approx(1.2 * 110)
    c, s = crop_square(Detection(box, None, "dlib"))
    np.testing.assert_allclose(c, [150, 110 + 0.14 * 110])
    assert s == pytest.approx(1.58 * 110)
    kpts = np.random.default_rng(0).uniform(100, 200, (68, 2))
    (det,) = detections_from_landmarks(kpts)
    c, s = crop_square(det)
    lo, hi = kpts.min(0), kpts.max(0)
    np.testing.assert_allclose(c, (lo + hi) / 2)
    assert s == pytest.approx(1.5 * ((hi - lo).sum() / 2))
    assert len(detections_from_landmarks(kpts.T[None])) == 1  # (K, 2, 68) .mat layout accepted


def test_user_box_validation():
    assert len(detections_from_boxes([[1, 2, 30, 40], [5, 5, 9, 9]], (50, 50, 3))) == 2
    for bad in ([1, 2, 3], [[10, 10, 5, 20]], [[100, 100, 200, 200]], [[np.nan, 0, 1, 1]]):
        with pytest.raises(InputError, match="boxes"):
            detections_from_boxes(bad, (50, 50, 3))
    with pytest.raises(InputError, match="landmarks"):
        detections_from_landmarks(np.zeros((67, 2)))


def test_unknown_and_missing_detectors():
    with pytest.raises(InputError, match="expected one of"):
        get_detector("yolo")
    try:
        import dlib  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="dlib package is not installed"):
            get_detector("dlib")


def test_opencv_detector_finds_the_face(reference_data):
    # requirements pin opencv-python-headless<5: OpenCV 5 wheels ship no Haar cascades
    det = get_detector("opencv")
    faces = det(load_image(reference_data / "aflw2000-3d" / "image00050.jpg"))
    assert len(faces) >= 1 and all(f.score is None for f in faces)


def test_mtcnn_finds_faces_in_photos(reference_data):
    det = get_detector("mtcnn", 0.9)
    for name, count in PHOTO_FACES.items():
        found = det(load_image(reference_data / "photos" / name))
        assert len(found) == count, name
        for d in found:
            assert type(d.score) is float and d.score >= 0.9
            assert all(type(v) is float for v in d.box.tolist()) and d.box.dtype == np.float64
            assert d.landmarks5.shape == (5, 2)
            assert d.to_dict()["box_ltrb"] == d.box.tolist()


def test_predictor_with_mtcnn_batches_all_faces(reference_data, posed_samples, bfm_layout):
    sizes = []

    def net(x):
        sizes.append(len(x))
        return np.repeat(posed_samples[0].gt_map[None], len(x), 0)

    pred = Predictor(net, bfm_layout)
    images = [reference_data / "photos" / n for n in PHOTO_FACES]
    faces = pred.predict_batch(images)
    assert [len(f) for f in faces] == list(PHOTO_FACES.values()) and sizes == [5]
    assert set(pred.last_timings) == {"load", "detect", "crop", "network", "postprocess"}
    for per_image in faces:
        d = per_image[0].detection
        cx, cy, size = per_image[0].crop_box
        side = ((d.box[2] - d.box[0]) + (d.box[3] - d.box[1])) / 2
        # MTCNN crop rule: centre moved down 0.16 x side, crop side 1.36 x side (docs/conventions.md)
        np.testing.assert_allclose([cx, cy], (d.box[:2] + d.box[2:]) / 2 + [0, 0.16 * side], atol=1e-6)
        assert size == pytest.approx(1.36 * side)


def test_mtcnn_large_image_is_searched_downscaled(reference_data):
    det = get_detector("mtcnn", 0.9)
    img = load_image(reference_data / "photos" / "1.jpg")
    (small,) = det(img)
    big = cv2.resize(img, None, fx=6, fy=6, interpolation=cv2.INTER_LINEAR)  # 1362² > max_side 1280
    (found,) = det(big)
    side = small.box[2] - small.box[0]
    np.testing.assert_allclose(found.box / 6, small.box, atol=0.1 * side)  # back in full-image pixels
    np.testing.assert_allclose(found.landmarks5 / 6, small.landmarks5, atol=0.1 * side)


def test_compiled_mtcnn_equals_the_eager_package(reference_data):
    from mtcnn import MTCNN

    det = get_detector("mtcnn", 0.9, min_face_size=20)  # the package's own default
    assert det.engine in ("openvino", "keras")  # inference.mtcnn_stages, not the package's own driver
    eager = MTCNN()
    for name in PHOTO_FACES:
        img = load_image(reference_data / "photos" / name)
        ref = [f for f in eager.detect_faces(img, box_format="xyxy") if f["confidence"] >= 0.9]
        got = det(img)
        assert len(got) == len(ref), name
        ref_boxes = sorted((np.array(f["box"], float) for f in ref), key=lambda b: b[0])
        for a, b in zip(sorted((d.box for d in got), key=lambda b: b[0]), ref_boxes):
            np.testing.assert_allclose(a, b, atol=1.0)


def test_mtcnn_min_face_size_is_honoured(reference_data):
    from prnet_keras.inference.detect import MTCNNDetector

    from prnet_keras.inference.detect import _scale_pyramid

    img = load_image(reference_data / "aflw2000-3d" / "image00050.jpg")  # one ~200 px face
    (ref,) = MTCNNDetector(0.9, min_face_size=20)(img)
    # mtcnn 1.0 itself returns no face for min_face_size=40 (its pyramid assumes 20)
    for size in (30, 40, 60, 100):
        (found,) = MTCNNDetector(0.9, min_face_size=size)(img)
        np.testing.assert_allclose(found.box, ref.box, atol=0.1 * (ref.box[2] - ref.box[0]))
        scales = _scale_pyramid(450, 450, size, 0.709)
        assert scales[0] == pytest.approx(12 / size) and 450 * scales[-1] >= 12 > 450 * scales[-1] * 0.709
    assert get_detector("mtcnn").min_face_size == 40  # packaged defaults: inference.min_face_size
    assert MTCNNDetector(0.9, min_face_size=500)(img) == []  # no 500 px face fits a 450 px image
    with pytest.raises(InputError, match="min_face_size"):
        MTCNNDetector(0.9, min_face_size=8)
