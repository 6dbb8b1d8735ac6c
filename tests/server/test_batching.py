"""Cross-request micro-batching: correct slices per caller, merged calls, errors released, same faces."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from prnet_keras.server.app import create_app
from prnet_keras.server.batching import BatchingForward, batched_predictor


def test_concurrent_calls_are_merged_and_sliced_back():
    calls = []

    def forward(x):
        calls.append(len(x))
        time.sleep(0.05)  # long enough for the other threads to queue behind the first batch
        return x * 2.0 + 1.0

    b = BatchingForward(forward, max_batch=16, window_s=0.01)
    inputs = [np.full((k % 3 + 1, 4, 4, 3), float(k), np.float32) for k in range(10)]
    with ThreadPoolExecutor(10) as ex:
        outs = list(ex.map(b, inputs))
    for x, y in zip(inputs, outs):
        np.testing.assert_array_equal(y, x * 2.0 + 1.0)
    assert sum(calls) == sum(len(x) for x in inputs)
    assert len(calls) < len(inputs)  # at least some calls were merged
    assert max(calls) <= 16 + 2  # a batch closes once it holds max_batch crops
    b.close()


def test_errors_reach_every_waiting_caller():
    def forward(x):
        time.sleep(0.02)
        raise RuntimeError("boom")

    b = BatchingForward(forward, window_s=0.02)
    errors = []

    def call():
        try:
            b(np.zeros((1, 2, 2, 3), np.float32))
        except RuntimeError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert errors == ["boom"] * 4
    b.close()


def test_batched_predictor_gives_the_same_faces(predictor, helpers):
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(helpers.image_bytes(120, 160))).convert("RGB"))
    bp = batched_predictor(predictor, window_ms=2, max_batch=8)
    a = predictor.predict(img, boxes=[[20, 20, 80, 80], [60, 30, 140, 110]])
    b = bp.predict(img, boxes=[[20, 20, 80, 80], [60, 30, 140, 110]])
    assert len(a) == len(b) == 2
    for fa, fb in zip(a, b):
        np.testing.assert_allclose(fa.vertices, fb.vertices, atol=1e-3)
    bp.network.close()


@pytest.mark.parametrize("workers", [6])
def test_server_with_batching_under_concurrency(predictor, helpers, workers):
    bp = batched_predictor(predictor, window_ms=5, max_batch=8)
    data = helpers.image_bytes()
    with TestClient(create_app(bp, helpers.make_settings(workers=workers, queue_size=8))) as c:
        def one(_):
            r = c.post("/v1/reconstruct", files={"image": ("a.jpg", data)})
            return r.status_code, r.json()["faces"][0]["landmarks"] if r.status_code == 200 else None

        with ThreadPoolExecutor(12) as ex:
            results = list(ex.map(one, range(12)))
    assert [s for s, _ in results] == [200] * 12
    first = np.asarray(results[0][1])
    for _, lm in results[1:]:
        np.testing.assert_allclose(np.asarray(lm), first, atol=1e-4)
    assert bp.network.items == 12
    bp.network.close()
