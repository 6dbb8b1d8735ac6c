"""POST /v1/swap on the real app (TestClient) with the ground-truth predictor: the image it
answers is the library's result; no face / bad indices / bad masks are 422 naming the field;
limits (413) and the API key (401) hold as on the other native routes."""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
import pytest

from prnet_keras.edit import swap_faces

with warnings.catch_warnings():  # Starlette's notice about its httpx-based TestClient, once, quietly
    warnings.simplefilter("ignore")
    import fastapi.testclient  # noqa: F401


def _png(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _settings(**kw):
    from prnet_keras.server.settings import ServerSettings

    base = {"max_request_bytes": 2_000_000, "max_image_pixels": 200_000, "max_faces_per_image": 4,
            "workers": 2, "queue_size": 4, "timeout_s": 60.0, "model_name": "oracle"}
    base.update(kw)
    return ServerSettings(**base)


@pytest.fixture(scope="module")
def client(edit_predictor):
    from fastapi.testclient import TestClient

    from prnet_keras.server.app import create_app

    with TestClient(create_app(edit_predictor, _settings())) as c:
        yield c


@pytest.fixture(scope="module")
def photos(scenes):
    out = {k: _png(scenes[k].image) for k in ("a", "b", "g", "p", "q")}
    out["blank"] = _png(np.full((100, 120, 3), 90, np.uint8))
    return out


def _post(client, photos, image="p", ref="q", **data):
    files = {"image": ("a.png", photos[image], "image/png")}
    if ref:
        files["ref"] = ("b.png", photos[ref], "image/png")
    if "mask" in data:
        files["mask"] = ("mask.png", data.pop("mask"), "image/png")
    return client.post("/v1/swap", files=files, data=data)


def _error(r, status: int, field: str, code: str | None = None) -> str:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field and (code is None or err["code"] == code), err
    return err["message"]


def test_swap_answers_the_library_result(client, photos, scenes, edit_predictor):
    r = _post(client, photos, format="png")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.headers["x-swap-pairs"] == "0<-0"
    want = swap_faces(scenes["p"].image, scenes["q"].image, edit_predictor)
    np.testing.assert_array_equal(_decode(r.content), want.image)
    assert int(r.headers["x-changed-pixels"]) == int(want.mask.sum())
    # a part, JPEG (the default), no colour transfer, another blend
    r = _post(client, photos, image="a", ref="b", region="eyes", color_transfer="false", blend="alpha")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    got = _decode(r.content)
    assert got.shape == scenes["a"].image.shape
    assert 0 < int(r.headers["x-changed-pixels"]) < 0.2 * (scenes["a"].coverage == 0).sum()
    # no ref: two faces of one photo trade places; "all" with a ref
    r = _post(client, photos, image="g", ref=None)
    assert r.status_code == 200 and r.headers["x-swap-pairs"] == "1<-0,0<-1"
    r = _post(client, photos, image="g", ref="p", face="all")
    assert r.status_code == 200 and r.headers["x-swap-pairs"] == "0<-0,1<-0"
    # a user mask: the whole face region as a PNG
    mask = _png(np.repeat(np.full((256, 256, 1), 255, np.uint8), 3, axis=2))
    assert _post(client, photos, mask=mask).status_code == 200


def test_swap_errors_name_the_field(client, photos):
    assert "no face found" in _error(_post(client, photos, ref="blank"), 422, "ref", "no_face")
    assert "no face found" in _error(_post(client, photos, image="blank"), 422, "image", "no_face")
    assert "needs two faces, found 1" in _error(_post(client, photos, ref=None), 422, "image", "no_face")
    assert "face index 5 out of range: image has 2 face(s)" in _error(
        _post(client, photos, image="g", face="5"), 422, "face")
    assert "face index 3 out of range: ref has 2 face(s)" in _error(
        _post(client, photos, ref="g", ref_face="3"), 422, "ref_face")
    assert "expected a face index or all" in _error(_post(client, photos, face="left"), 422, "face")
    assert "expected a face index, got 'all'" in _error(_post(client, photos, ref_face="all"), 422, "ref_face")
    assert "expected one of eyes, nose, mouth, face" in _error(_post(client, photos, region="ears"), 422, "region")
    assert "expected one of poisson, alpha, none" in _error(_post(client, photos, blend="soft"), 422, "blend")
    small = _png(np.full((128, 100, 3), 255, np.uint8))
    assert "expected a 256x256 UV mask" in _error(_post(client, photos, mask=small), 422, "mask", "invalid_mask")
    black = _png(np.zeros((256, 256, 3), np.uint8))
    assert "selects no pixel" in _error(_post(client, photos, mask=black), 422, "mask")
    both = _png(np.full((256, 256, 3), 255, np.uint8))
    assert "either region or a mask" in _error(_post(client, photos, mask=both, region="eyes"), 422, "region")
    r = client.post("/v1/swap", files={"ref": ("b.png", photos["q"], "image/png")})
    assert "no file field 'image'" in _error(r, 422, "image", "missing_field")
    r = client.post("/v1/swap", files={"image": ("a.png", b"not an image", "image/png")})
    _error(r, 422, "image", "invalid_image")
    r = client.post("/v1/swap", json={"image": "aGVsbG8="})
    _error(r, 415, "Content-Type", "unsupported_media_type")


def test_swap_limits_and_api_key(edit_predictor, photos):
    from fastapi.testclient import TestClient

    from prnet_keras.server.app import create_app

    with TestClient(create_app(edit_predictor, _settings(max_request_bytes=120_000, max_image_pixels=30_000,
                                                          api_key="s3cret"))) as c:
        files = {"image": ("a.png", photos["p"], "image/png"), "ref": ("b.png", photos["q"], "image/png")}
        r = c.post("/v1/swap", files=files)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        key = {"X-API-Key": "s3cret"}
        r = c.post("/v1/swap", files=files, headers=key)  # 200x200 photos: over the 30,000-pixel limit
        assert r.status_code == 413 and r.json()["error"]["field"] == "image", r.text
        big = {"image": ("a.png", np.random.default_rng(0).bytes(130_000), "image/png")}
        r = c.post("/v1/swap", files=big, headers=key)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        assert "/v1/swap" in c.get("/openapi.json").json()["paths"]
    with TestClient(create_app(edit_predictor, _settings(max_response_bytes=20_000))) as c:
        r = c.post("/v1/swap", data={"format": "png"}, files={"image": ("a.png", photos["p"], "image/png"),
                                                              "ref": ("b.png", photos["q"], "image/png")})
        assert r.status_code == 413 and r.json()["error"]["field"] == "format", r.text
