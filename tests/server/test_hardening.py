"""Limits, auth, CORS, errors naming fields, saturation (503), time-outs (504), no file writes."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from prnet_keras.server.app import create_app
from prnet_keras.server.pool import InferencePool, PoolSaturated, PoolTimeout


def app_client(predictor, helpers, **kw):
    return TestClient(create_app(predictor, helpers.make_settings(**kw)))


def compat_body(helpers, raw_image, mats=()):
    return {"imageMatList": [{"rawImage": raw_image, "rawMats": list(mats)}]}


@pytest.mark.parametrize("raw, code", [
    ("%%%not-base64%%%", "invalid_base64"),
    ("aGVsbG8gd29ybGQ=", "invalid_image"),  # "hello world": valid base64, not an image
    ("", "invalid_image"),
])
def test_bad_images_are_422_naming_the_field(client, helpers, raw, code):
    r = client.post("/predict", json=compat_body(helpers, raw))
    assert r.status_code == 422
    assert r.json()["error"] == {"code": code, "field": "imageMatList[0].rawImage",
                                 "message": r.json()["error"]["message"]}
    assert "imageMatList[0].rawImage" in r.json()["error"]["message"]


def test_truncated_jpeg_is_422(client, helpers):
    data = helpers.image_bytes(200, 200)
    r = client.post("/v1/reconstruct", files={"image": ("t.jpg", data[: len(data) // 3])})
    assert r.status_code == 422 and r.json()["error"]["field"] == "image"


def test_wrong_types_name_the_field(client, helpers):
    r = client.post("/predict", json={"imageMatList": [{"rawImage": 5, "rawMats": []}]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "imageMatList[0].rawImage"
    r = client.post("/predict", json={"matType": "xml", "imageMatList": []})
    assert r.status_code == 422 and r.json()["error"]["field"] == "matType"
    r = client.post("/v1/reconstruct", json={"image": helpers.b64(helpers.image_bytes()), "outputs": ["mesh_stl"]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "outputs"
    r = client.post("/v1/reconstruct", json={"image": helpers.b64(helpers.image_bytes()), "boxes": [[1, 2, 3]]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "boxes"
    r = client.post("/v1/reconstruct", json={"image": helpers.b64(helpers.image_bytes()), "boxes": [[50, 50, 10, 10]]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "boxes"
    r = client.post("/v1/reconstruct", content=b"\x00\x01", headers={"content-type": "application/octet-stream"})
    assert r.status_code == 415


def test_request_size_limit(predictor, helpers):
    with app_client(predictor, helpers, max_request_bytes=10_000) as c:
        r = c.post("/predict", json=compat_body(helpers, "A" * 20_000))
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"

        def chunks():  # no Content-Length: the streamed count must stop it
            for _ in range(20):
                yield b"x" * 1000

        r = c.post("/v1/reconstruct", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_image_pixel_limit(predictor, helpers):
    with app_client(predictor, helpers, max_image_pixels=50 * 50) as c:
        r = c.post("/v1/reconstruct", files={"image": ("big.png", helpers.image_bytes(60, 60, fmt="PNG"))})
        assert r.status_code == 413 and r.json()["error"]["code"] == "image_too_large"


def test_images_and_mats_per_request_limits(client, helpers):
    img = helpers.b64(helpers.image_bytes())
    r = client.post("/predict", json={"imageMatList": [{"rawImage": img, "rawMats": []}] * 4})
    assert r.status_code == 413 and r.json()["error"]["field"] == "imageMatList"
    r = client.post("/predict", json=compat_body(helpers, img, [""] * 5))
    assert r.status_code == 413 and r.json()["error"]["field"] == "imageMatList[0].rawMats"


def test_api_key(predictor, helpers):
    with app_client(predictor, helpers, api_key="s3cret") as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/ui").status_code == 200  # the page itself holds no data
        for path in ("/", "/v1/info"):
            r = c.get(path)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert c.get("/v1/info", headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.get("/v1/info", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/v1/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        r = c.post("/predict", json=compat_body(helpers, helpers.b64(helpers.image_bytes())))
        assert r.status_code == 401
        schema = c.get("/openapi.json").json()  # public, and it documents the key for /docs "Authorize"
        assert schema["components"]["securitySchemes"]["ApiKey"]["name"] == "X-API-Key"
        assert schema["paths"]["/predict"]["post"]["security"] == [{"ApiKey": []}]
        assert "security" not in schema["paths"]["/healthz"]["get"]


def test_api_key_from_environment(monkeypatch):
    from prnet_keras.server.settings import ServerSettings

    monkeypatch.setenv("MY_KEY", "abc")
    assert ServerSettings.from_config(api_key_env="MY_KEY").api_key == "abc"
    monkeypatch.setenv("MY_KEY", "")
    assert ServerSettings.from_config(api_key_env="MY_KEY").api_key is None


def test_cors_off_by_default_and_on_when_configured(predictor, helpers):
    origin = {"Origin": "https://example.org"}
    with app_client(predictor, helpers) as c:
        assert "access-control-allow-origin" not in c.get("/healthz", headers=origin).headers
    with app_client(predictor, helpers, cors_origins=("https://example.org",)) as c:
        assert c.get("/healthz", headers=origin).headers["access-control-allow-origin"] == "https://example.org"


class SlowPredictor:
    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay, self.layout = inner, delay, inner.layout

    def predict(self, *a, **k):
        time.sleep(self.delay)
        return self.inner.predict(*a, **k)


def test_saturated_pool_answers_503(predictor, helpers):
    slow = SlowPredictor(predictor, 0.6)
    body = compat_body(helpers, helpers.b64(helpers.image_bytes()))
    with app_client(slow, helpers, workers=1, queue_size=0) as c:
        results = []
        threads = [threading.Thread(target=lambda: results.append(c.post("/predict", json=body))) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.status_code for r in results)
        assert codes.count(200) >= 1 and 503 in codes
        busy = next(r for r in results if r.status_code == 503)
        assert busy.headers["retry-after"] == "1" and busy.json()["error"]["code"] == "busy"


def test_timeout_answers_504(predictor, helpers):
    with app_client(SlowPredictor(predictor, 1.0), helpers, timeout_s=0.2) as c:
        r = c.post("/predict", json=compat_body(helpers, helpers.b64(helpers.image_bytes())))
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"


def test_pool_bounds_and_releases_slots():
    pool = InferencePool(workers=1, queue_size=1, timeout_s=5)
    gate = threading.Event()
    f1, _ = pool.submit(gate.wait)
    f2, _ = pool.submit(lambda: 2)
    with pytest.raises(PoolSaturated):
        pool.submit(lambda: 3)
    assert pool.in_flight == 2 and pool.rejected == 1
    gate.set()
    f1.result(5), f2.result(5)
    time.sleep(0.05)
    assert pool.in_flight == 0
    assert asyncio.run(pool.run(lambda: 7)) == 7
    pool.shutdown()


def test_pool_cancels_timed_out_and_abandoned_work():
    """A job past its time-out stops at its next check and gives its slot back; so does one
    whose client left, and every job when the server stops (cancel_all)."""
    from prnet_keras.cancel import Cancelled, check_cancelled
    from prnet_keras.server.pool import ClientGone

    stopped = []

    def busy() -> None:
        try:
            while True:
                check_cancelled()
                time.sleep(0.005)
        except Cancelled as exc:
            stopped.append(str(exc))
            raise

    pool = InferencePool(workers=1, queue_size=0, timeout_s=0.1)
    with pytest.raises(PoolTimeout):
        asyncio.run(pool.run(busy))
    deadline = time.monotonic() + 2
    while pool.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.in_flight == 0 and stopped == ["timed out after 0.1 s"]

    async def client_leaves() -> None:
        await asyncio.sleep(0.02)

    pool.timeout_s = 30
    with pytest.raises(ClientGone):
        asyncio.run(pool.run(busy, disconnected=client_leaves))
    while pool.in_flight and time.monotonic() < deadline + 2:
        time.sleep(0.01)
    assert stopped[-1] == "client disconnected"
    future, _ = pool.submit(busy)
    time.sleep(0.05)
    assert pool.cancel_all("server stopping") == 1
    with pytest.raises(Cancelled, match="server stopping"):
        future.result(2)
    with pytest.raises(PoolSaturated):  # a stopping pool admits nothing new
        pool.submit(lambda: 1)
    pool.shutdown()


def test_responses_are_plain_json(client, helpers):
    r = client.post("/v1/reconstruct", files={"image": ("a.jpg", helpers.image_bytes())},
                    data={"outputs": "landmarks,pose"})
    assert r.headers["content-type"].startswith("application/json")
    assert "NaN" not in r.text and "Infinity" not in r.text


def test_requests_never_write_files(client, helpers, tmp_path, monkeypatch):
    """Multipart uploads are parsed in memory: no temp files appear while serving."""
    import tempfile

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    big = helpers.image_bytes(1000, 1000, fmt="PNG")  # > 1 MB: Starlette would spool this to disk
    assert len(big) > 1_000_000
    with TestClient(create_app(client.app.state.service.predictor,
                               helpers.make_settings(max_request_bytes=5_000_000, max_image_pixels=2_000_000))) as c:
        r = c.post("/v1/reconstruct", files={"image": ("big.png", big)},
                   data={"outputs": "landmarks,mesh_obj,mesh_ply"})
    assert r.status_code == 200
    assert os.listdir(tmp_path) == []
    assert np.isfinite(r.json()["faces"][0]["landmarks"]).all()


def test_settings_validation():
    from prnet_keras.errors import InputError
    from prnet_keras.server.settings import ServerSettings

    with pytest.raises(InputError, match="workers"):
        ServerSettings(workers=0)
    with pytest.raises(InputError, match="unknown keys"):
        ServerSettings.from_config({"max_faces": 3}, api_key_env=None)
    s = ServerSettings.from_config(api_key_env=None, port=1234)
    assert s.port == 1234 and s.max_faces_per_image == 16  # the packaged "server" section
    assert s.workers == ServerSettings().workers == 8  # the dataclass and the packaged defaults agree
    assert s.max_image_pixels == 50_000_000  # data.max_image_pixels' default (prnet-serve passes the configured one)


def test_serve_cli_bad_flag_fails_fast(capsys):
    from prnet_keras.cli.serve import main

    assert main(["--model", "untrained:light", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: server setting workers") and err.count("\n") == 1


def test_render_json_is_plain_and_nan_safe():
    from prnet_keras.server.responses import render_json

    assert render_json({"b": np.float32(1.5), "c": np.arange(3),
                        "d": [np.int64(2)]}) == b'{"b":1.5,"c":[0,1,2],"d":[2]}'
    assert render_json({"a": float("nan"), "e": [np.float64("inf"), 1.0]}) == b'{"a":null,"e":[null,1.0]}'
