"""Hypothesis fuzzing of every endpoint: malformed bodies never produce a 5xx (>= 500 bodies in all).

Each test draws ``EXAMPLES`` bodies; the predictor is the cheap dome network, so the
whole module runs in well under a minute.
"""

from __future__ import annotations

import base64
import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prnet_keras.server.app import create_app

EXAMPLES = 130  # x 5 tests = 650 malformed requests
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=12,
)
b64_junk = st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode())


def _tiny_png() -> str:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.arange(48 * 40 * 3) % 251).astype(np.uint8).reshape(40, 48, 3)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


VALID = _tiny_png()  # a real image, so malformed boxes/landmarks/mats reach the predictor
strings = st.one_of(st.text(max_size=40), b64_junk, st.just(""), st.just("data:image/png;base64,AAAA"), st.just(VALID))
mat_lists = st.lists(st.one_of(strings, st.integers(), st.none()), max_size=3)
image_items = st.fixed_dictionaries({
    "rawImage": st.one_of(strings, st.integers(), st.none()),
    "rawMats": st.one_of(mat_lists, st.text(max_size=5)),
    "rawOrgMats": mat_lists,
    "rawPredictMats": mat_lists,
})
compat_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"matType": st.one_of(st.sampled_from(["normal", "dotnet", "x"]), st.integers()),
                           "imageMatList": st.one_of(st.lists(image_items, max_size=3), json_values)}),
)
native_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({
        "image": st.one_of(strings, st.integers()),
        "outputs": st.one_of(st.lists(st.sampled_from(["landmarks", "pose", "mesh_obj", "bogus"]), max_size=3),
                             json_values),
        "boxes": st.one_of(st.none(), json_values,
                           st.lists(st.lists(st.floats(allow_nan=True), max_size=5), max_size=3),
                           st.lists(st.lists(st.floats(-1e6, 1e6), min_size=4, max_size=4), min_size=1, max_size=6)),
        "landmarks": st.one_of(st.none(), json_values, st.lists(st.lists(st.floats(-1e4, 1e4), min_size=2, max_size=3),
                                                                 min_size=68, max_size=68)),
    }),
)


@pytest.fixture(scope="module")
def fuzz_client(predictor):
    from prnet_keras.server.settings import ServerSettings

    s = ServerSettings(max_request_bytes=200_000, max_image_pixels=1_000_000, max_faces_per_image=4,
                       max_images_per_request=3, workers=2, queue_size=64, timeout_s=30)
    with TestClient(create_app(predictor, s)) as c:
        yield c


def no_5xx(r) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    if r.status_code >= 400:
        assert isinstance(r.json()["error"]["message"], str)


@FUZZ
@given(path=st.sampled_from(["/predict", "/extract", "/evaluate"]), body=compat_bodies)
def test_compat_endpoints_json(fuzz_client, path, body):
    no_5xx(fuzz_client.post(path, content=json.dumps(body, allow_nan=True),
                            headers={"content-type": "application/json"}))


@FUZZ
@given(body=native_bodies)
def test_reconstruct_json(fuzz_client, body):
    no_5xx(fuzz_client.post("/v1/reconstruct", content=json.dumps(body, allow_nan=True),
                            headers={"content-type": "application/json"}))


@FUZZ
@given(image=st.binary(max_size=300), outputs=st.text(max_size=30), boxes=st.text(max_size=30),
       filename=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters='"\\'),
                        max_size=10))
def test_reconstruct_multipart(fuzz_client, image, outputs, boxes, filename):
    no_5xx(fuzz_client.post("/v1/reconstruct", files={"image": (filename or "f", image)},
                            data={"outputs": outputs, "boxes": boxes}))


@FUZZ
@given(path=st.sampled_from(["/predict", "/extract", "/evaluate", "/v1/reconstruct"]), raw=st.binary(max_size=300),
       ctype=st.sampled_from(["application/json", "multipart/form-data; boundary=xyz", "multipart/form-data",
                              "text/plain", "", "application/x-www-form-urlencoded"]))
def test_raw_bytes_any_content_type(fuzz_client, path, raw, ctype):
    headers = {"content-type": ctype} if ctype else {}
    no_5xx(fuzz_client.post(path, content=raw, headers=headers))


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
       path=st.sampled_from(["/", "/healthz", "/v1/info", "/ui", "/docs", "/nope", "/v1/reconstruct",
                             "/ui/static/../app.py"]),
       query=st.text(alphabet="abc=&%01", max_size=12))
def test_methods_and_paths(fuzz_client, method, path, query):
    r = fuzz_client.request(method, f"{path}?{query}" if query else path)
    assert r.status_code < 500, (r.status_code, r.text[:200])
