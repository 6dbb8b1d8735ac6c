"""Server test fixtures: a cheap but real Predictor (hand-made dome layout + closed-form network).

The network is a callable that returns, for every crop, the same analytic position map
(a dome filling the crop), so all the server code paths (crop, inverse transform, colours,
pose, mesh files) run for real in a few milliseconds per face without TensorFlow. The
stub detector finds one centred face, none on a uniform image, and 40 on a very wide image
(to exercise the faces-per-image cap).
"""

from __future__ import annotations

import base64
import io
import os

import warnings

import numpy as np
import pytest

from prnet_keras.geometry import UVLayout, grid_triangles

with warnings.catch_warnings():
    # Starlette deprecates its httpx-based TestClient in favour of "httpx2" (not packaged here);
    # importing it once, quietly, keeps that notice out of every test run.
    warnings.simplefilter("ignore")
    import fastapi.testclient  # noqa: F401

R = 256
DISC = 36  # radius (UV pixels) of the toy face region: ~4k vertices keeps tests fast


def dome_layout() -> UVLayout:
    rows, cols = np.mgrid[0:R, 0:R]
    d2 = (rows - 128.0) ** 2 + (cols - 128.0) ** 2
    mask = d2 <= DISC**2
    ang = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    rad = np.where(np.arange(68) % 2 == 0, 0.5 * DISC, 0.8 * DISC)
    kpt = np.stack([128 + np.rint(rad * np.cos(ang)), 128 + np.rint(rad * np.sin(ang))]).astype(int)
    weight = np.where(mask, 3 / 16, 0).astype(np.float32)
    weight[kpt[1], kpt[0]] = 1.0
    r_, c_ = rows[mask], cols[mask]
    z = np.sqrt(np.maximum(DISC**2 - ((r_ - 128.0) ** 2 + (c_ - 128.0) ** 2), 0))
    canonical = np.stack([c_ - 128.0, 128.0 - r_, z], 1).astype(np.float32)
    return UVLayout(R, mask, kpt, weight, grid_triangles(mask), canonical, source="test-dome")


def dome_network(crops: np.ndarray) -> np.ndarray:
    """(B, R, R, 3) crops -> (B, R, R, 3) crop-pixel maps: x = col·s, y = row·s around the centre, z a dome."""
    rows, cols = np.mgrid[0:R, 0:R].astype(np.float32)
    s = 2.0  # the toy face spans 2x the UV disc inside the crop
    x = 128 + s * (cols - 128)
    y = 128 + s * (rows - 128)
    z = s * np.sqrt(np.maximum(DISC**2 - ((rows - 128) ** 2 + (cols - 128) ** 2), 0))
    pm = np.stack([x, y, z], -1).astype(np.float32)
    return np.broadcast_to(pm, (len(crops), R, R, 3)).copy()


def stub_detector(image: np.ndarray):
    from prnet_keras.inference.detect import Detection

    h, w = image.shape[:2]
    if float(image.std()) < 1.0:
        return []
    if w >= 3 * h:
        side = h / 3
        return [Detection(np.array([k * w / 40, h / 3, k * w / 40 + side, 2 * h / 3]), 0.9, "mtcnn") for k in range(40)]
    side = 0.5 * min(h, w)
    box = np.array([w / 2 - side / 2, h / 2 - side / 2, w / 2 + side / 2, h / 2 + side / 2])
    return [Detection(box, 0.99, "mtcnn")]


@pytest.fixture(scope="session")
def layout() -> UVLayout:
    return dome_layout()


@pytest.fixture(scope="session")
def predictor(layout):
    from prnet_keras.inference import Predictor

    return Predictor(dome_network, layout, detector=stub_detector)


def make_settings(**kw):
    from prnet_keras.server.settings import ServerSettings

    base = dict(max_request_bytes=2_000_000, max_image_pixels=1_000_000, max_faces_per_image=4,
                max_images_per_request=3, workers=2, queue_size=4, timeout_s=30.0, model_name="test-dome")
    base.update(kw)
    return ServerSettings(**base)


@pytest.fixture
def client(predictor):
    from fastapi.testclient import TestClient

    from prnet_keras.server.app import create_app

    with TestClient(create_app(predictor, make_settings())) as c:
        yield c


def image_bytes(h: int = 120, w: int = 160, fmt: str = "JPEG", seed: int = 0, uniform: bool = False) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    if uniform:
        arr = np.full((h, w, 3), 128, np.uint8)
    else:
        yy, xx = np.mgrid[0:h, 0:w]
        channels = [xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), rng.integers(0, 255, (h, w))]
        arr = np.stack(channels, -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def mat_bytes(d: dict) -> bytes:
    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(buf, d)
    return buf.getvalue()


def synthetic_fit(yaw: float = 0.3) -> bytes:
    """A fit .mat for the synthetic model (mean shape and expression) placing the face near (100, 95) y-up."""
    from prnet_keras.geometry import make_pose_para

    pose = make_pose_para(np.array([0.05, yaw, -0.02]), np.array([100.0, 95.0, 0.0]), 5e-4)
    return mat_bytes({"Pose_Para": pose, "Shape_Para": np.zeros((199, 1)), "Exp_Para": np.zeros((29, 1))})


@pytest.fixture(scope="session")
def synthetic_client(synthetic_model, synthetic_layout):
    """Server with the synthetic model's UV layout, so /extract and /evaluate of fits work."""
    from fastapi.testclient import TestClient

    from prnet_keras.inference import Predictor
    from prnet_keras.server.app import create_app

    pred = Predictor(dome_network, synthetic_layout, detector=stub_detector)
    with TestClient(create_app(pred, make_settings(max_request_bytes=20_000_000), morphable=synthetic_model)) as c:
        yield c


@pytest.fixture(scope="session")
def chromium_paths() -> tuple[str, str]:
    chrome = os.environ.get("PRNET_CHROMIUM", "/usr/bin/chromium")
    driver = os.environ.get("PRNET_CHROMEDRIVER", "/usr/bin/chromedriver")
    if not (os.path.exists(chrome) and os.path.exists(driver)):
        pytest.skip(f"headless browser test needs chromium and chromedriver ({chrome}, {driver} not found)")
    return chrome, driver


@pytest.fixture(scope="session")
def helpers():
    """Helper functions for the test modules (importlib mode: tests cannot import conftest)."""
    import types

    return types.SimpleNamespace(image_bytes=image_bytes, b64=b64, mat_bytes=mat_bytes, make_settings=make_settings,
                                 dome_layout=dome_layout, dome_network=dome_network, stub_detector=stub_detector,
                                 synthetic_fit=synthetic_fit)
