"""prnet-serve --config FILE: every inference and crop value of the file takes effect.

The real console script under uvicorn on loopback (OpenCV detector, Keras engine, the
untrained light network) is checked through what a client sees: /v1/info, the detections
(equal to the library's with the file's values, different from the defaults'), the crop
boxes of detections, given boxes, given landmarks and /extract's ground truth. The MTCNN
values (min_confidence, min_face_size) are checked in-process through the same start-up
code (``cli.serve.build_server``), and the dlib crop values on the predictor it builds.
texture_size is not used by the server (prnet-predict's test covers it); the training
jitters only by builds (prnet-build-dataset's test covers them).
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_uvicorn import free_port, start, stop  # noqa: E402  (same folder; importlib mode)

CROP = {"train_scale": 1.3, "center_jitter": 0.05, "size_jitter": [0.95, 1.05], "detector_box_scale": 1.9,
        "dlib_center_shift": 0.2, "dlib_box_scale": 1.7, "mtcnn_center_shift": 0.1, "mtcnn_box_scale": 1.5,
        "opencv_center_shift": -0.05, "opencv_box_scale": 2.0}


def _defaults() -> dict:
    from prnet_keras.config import load_config

    return load_config()


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")  # lossless: the server sees the test's pixels
    return buf.getvalue()


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> dict:
    """Near-frontal synthetic faces (seed 3), alone and two per image (a smaller copy beside)."""
    import cv2

    from prnet_keras.data.sources import list_samples, parse_fit, read_sample
    from prnet_keras.data.synth import generate_dataset

    out = tmp_path_factory.mktemp("serve_config_faces")
    generate_dataset(out, layout="aflw2000", count=4, seed=3, occluders=False, near_frontal_fraction=1.0)
    samples = [read_sample(ref) for ref in list_samples(out)]
    images = [img for img, _ in samples]
    pairs = []
    for scale in (0.45, 0.6):
        n = int(450 * scale)
        for i in range(4):
            small = cv2.resize(images[(i + 1) % 4], (n, n), interpolation=cv2.INTER_AREA)
            canvas = np.zeros((450, 450 + n, 3), np.uint8)
            canvas[:, :450] = images[i]
            canvas[(450 - n) // 2:(450 - n) // 2 + n, 450:] = small
            pairs.append(canvas)
    return {"images": images + pairs, "fits": [parse_fit(mat, "fit") for _, mat in samples],
            "mats": [mat for _, mat in samples]}


def _first_differing(images: list, configured, default) -> tuple[np.ndarray, list]:
    """The first image whose detections differ between the two detectors, and the configured ones."""
    for image in images:
        want = configured(image)
        if [d.box.tolist() for d in want] != [d.box.tolist() for d in default(image)]:
            return image, want
    raise AssertionError("no test image tells the configured detector from the default one")


def _crop_of(face: dict) -> tuple[float, float, float]:
    c = face["crop_box"]
    return c["cx"], c["cy"], c["size"]


def test_prnet_serve_config_file_takes_effect(tmp_path, faces, helpers):
    from prnet_keras.geometry import CropConfig, detector_crop, training_crop
    from prnet_keras.inference.detect import get_detector

    defaults = _defaults()
    port = free_port()
    config = {
        "inference": {"detector": "opencv", "min_confidence": 0.5, "min_face_size": 100, "engine": "keras",
                      "texture_size": 128},
        "crop": CROP,
        "server": {"port": port, "workers": 3, "queue_size": 5, "timeout_s": 45, "max_faces_per_image": 5,
                   "max_json_depth": 12, "max_mesh_vertices": 90_000},
        "evaluate": {"icp": "scipy", "icp_method": "point_to_point"},
        "data": {"max_image_pixels": 1_500_000},  # the one image limit, shared with builds and prnet-predict
    }
    for section in ("inference", "crop"):  # the file changes every value of both sections
        assert sorted(config[section]) == sorted(defaults[section])
        assert all(config[section][k] != defaults[section][k] for k in defaults[section]), section
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(config))
    script = Path(sys.executable).with_name("prnet-serve")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "prnet_keras.cli.serve"]
    proc = start(cmd + ["--model", "untrained:light", "--config", str(path), "--log-level", "warning"], port,
                 env={"PRNET_API_KEY": ""}, wait_s=240)
    base = f"http://127.0.0.1:{port}"
    try:
        info = httpx.get(f"{base}/v1/info", timeout=30).json()
        assert info["model"]["engine"] == "keras"
        assert info["detector"] == "opencv"
        assert info["inference"] == {"detector": "opencv", "min_confidence": 0.5, "min_face_size": 100}
        assert info["crop"] == CROP
        assert (info["icp_backend"], info["icp_method"]) == ("scipy", "point_to_point")
        limits = info["limits"]
        got = (limits["workers"], limits["queue_size"], limits["timeout_s"], limits["max_faces_per_image"])
        assert got == (3, 5, 45, 5)
        assert (limits["max_json_depth"], limits["max_mesh_vertices"], limits["max_image_pixels"]) == (
            12, 90_000, 1_500_000)
        big = np.zeros((1000, 1600, 3), np.uint8)  # 1.6 MP: over the file's data.max_image_pixels
        r = httpx.post(f"{base}/v1/reconstruct", files={"image": ("big.png", _png(big))}, timeout=60)
        assert (r.status_code, r.json()["error"]["code"]) == (413, "image_too_large"), r.text

        # detections: the library's OpenCV detector with min_face_size 100, not with the default 40
        image, want = _first_differing(faces["images"], get_detector("opencv", min_face_size=100),
                                       get_detector("opencv", min_face_size=defaults["inference"]["min_face_size"]))
        r = httpx.post(f"{base}/v1/reconstruct", files={"image": ("faces.png", _png(image))}, timeout=120)
        assert r.status_code == 200, r.text
        got = r.json()["faces"]
        assert [f["detection"]["box_ltrb"] for f in got] == [d.box.tolist() for d in want]  # integer pixels
        assert all(f["detection"]["kind"] == "opencv" for f in got)
        for f, d in zip(got, want):  # crop of an OpenCV box: the file's opencv_center_shift, opencv_box_scale
            centre, size = detector_crop(d.box, scale=2.0, center_shift=-0.05)
            assert _crop_of(f) == pytest.approx((*centre, size))

        # a given box: detector_box_scale; given landmarks: train_scale
        box = [50.0, 60.0, 250.0, 240.0]
        r = httpx.post(f"{base}/v1/reconstruct", json={"image": helpers.b64(_png(faces["images"][0])), "boxes": [box]},
                       timeout=120)
        assert _crop_of(r.json()["faces"][0]) == pytest.approx((150.0, 150.0, 1.9 * 190.0))
        landmarks = faces["fits"][0].pt3d_68[:, :2]
        r = httpx.post(f"{base}/v1/reconstruct", timeout=120,
                       json={"image": helpers.b64(_png(faces["images"][0])), "landmarks": [landmarks.tolist()]})
        centre, size = training_crop(landmarks, rng=None, scale=1.3)
        assert _crop_of(r.json()["faces"][0]) == pytest.approx((*centre, size), abs=1e-3)

        # /extract: the ground truth of a fit is cropped with train_scale too (faceBB = [cx, cy, size])
        mat = {k: faces["mats"][0][k] for k in ("Pose_Para", "Shape_Para", "Exp_Para")}
        r = httpx.post(f"{base}/extract", timeout=120, json={"imageMatList": [
            {"rawImage": helpers.b64(_png(faces["images"][0])), "rawMats": [helpers.b64(helpers.mat_bytes(mat))]}]})
        assert r.status_code == 200, r.text
        face_bb = r.json()["imageMeshList"][0]["faceMeshList"][0]["faceBB"]
        from prnet_keras.data.gt import GroundTruthMaker
        from prnet_keras.geometry import UVLayout, load_morphable_model

        model = load_morphable_model("synthetic")
        maker = GroundTruthMaker(model, UVLayout.from_model(model), CropConfig.from_dict(CROP))
        fit = faces["fits"][0]
        kpts = maker.keypoints(maker.model_vertices([fit])[0], fit, 450)
        centre, size = training_crop(kpts, rng=None, scale=1.3)
        assert face_bb == [round(centre[0]), round(centre[1]), round(size)]
        default_size = training_crop(kpts, rng=None, scale=defaults["crop"]["train_scale"])[1]
        assert round(size) != round(default_size)
    finally:
        stop(proc)


def test_serve_start_up_applies_mtcnn_and_dlib_values(tmp_path, faces):
    """The MTCNN values (and dlib's crop values) through prnet-serve's start-up code, in-process."""
    from fastapi.testclient import TestClient

    from prnet_keras.cli.serve import build_parser, build_server
    from prnet_keras.geometry import detector_crop
    from prnet_keras.inference.detect import Detection, crop_square, get_detector

    defaults = _defaults()["inference"]
    mtcnn = {"min_confidence": 0.99, "min_face_size": 150}
    config = {"inference": {"detector": "mtcnn", "engine": "keras", **mtcnn}, "crop": CROP}
    path = tmp_path / "mtcnn.json"
    path.write_text(json.dumps(config))
    image, want = _first_differing(faces["images"], get_detector("mtcnn", **mtcnn),
                                   get_detector("mtcnn", defaults["min_confidence"], defaults["min_face_size"]))
    app, settings = build_server(build_parser().parse_args(
        ["--model", "untrained:light", "--config", str(path), "--batch-window-ms", "0", "--api-key-env",
         "UNSET_KEY_VAR"]))
    with TestClient(app) as client:
        info = client.get("/v1/info").json()
        assert info["inference"] == {"detector": "mtcnn", **mtcnn}
        r = client.post("/v1/reconstruct", files={"image": ("faces.png", _png(image))})
        assert r.status_code == 200, r.text
        got = r.json()["faces"]
    assert len(got) == len(want) > 0
    np.testing.assert_allclose([f["detection"]["box_ltrb"] + [f["detection"]["score"]] for f in got],
                               [d.box.tolist() + [d.score] for d in want], atol=1e-3)
    assert all(f["detection"]["score"] >= 0.99 for f in got)
    for f in got:  # MTCNN boxes: the file's mtcnn_center_shift and mtcnn_box_scale
        centre, size = detector_crop(np.array(f["detection"]["box_ltrb"]), scale=1.5, center_shift=0.1)
        assert _crop_of(f) == pytest.approx((*centre, size), abs=1e-3)
    # dlib boxes (dlib is optional): the predictor the server built crops them with the file's values
    predictor = app.state.service.predictor
    box = np.array([100.0, 100.0, 200.0, 220.0])
    centre, size = crop_square(Detection(box, None, "dlib"), predictor.crop_config)
    assert size == pytest.approx(1.7 * 110.0) and centre == pytest.approx([150.0, 160.0 + 0.2 * 110.0])
