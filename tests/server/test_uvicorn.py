"""A real uvicorn process on 127.0.0.1 at a free port, driven over HTTP; the client library and CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int, env: dict | None = None, wait_s: float = 90.0) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early ({proc.returncode}):\n{proc.stdout.read()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    stop(proc)
    raise AssertionError(f"server did not come up on port {port} within {wait_s} s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture(scope="module")
def server():
    port = free_port()
    proc = start([sys.executable, "tests/server/dome_server.py", "--port", str(port), "--api-key-env",
                  "PRNET_TEST_KEY"],
                 port, env={"PRNET_TEST_KEY": "k-123"})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def test_http_end_to_end(server, helpers):
    key = {"X-API-Key": "k-123"}
    assert httpx.get(f"{server}/healthz").json()["status"] == "ok"
    assert httpx.get(f"{server}/").status_code == 401
    assert httpx.get(f"{server}/", headers=key).json()["ui"] == "/ui"
    img = helpers.b64(helpers.image_bytes())
    r = httpx.post(f"{server}/predict", headers=key, timeout=60,
                   json={"matType": "dotnet", "imageMatList": [{"rawImage": img, "rawMats": []}]})
    assert r.status_code == 200 and len(r.json()["imageMeshList"][0]["faceMeshList"]) == 1
    r = httpx.post(f"{server}/predict", headers=key, json={"imageMatList": [{"rawImage": "@@", "rawMats": []}]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "imageMatList[0].rawImage"


def test_concurrent_requests(server, helpers):
    data = helpers.image_bytes()

    def one(_):
        return httpx.post(f"{server}/v1/reconstruct", headers={"X-API-Key": "k-123"}, files={"image": ("a.jpg", data)},
                          timeout=60).status_code

    with ThreadPoolExecutor(8) as ex:
        codes = list(ex.map(one, range(8)))
    assert codes == [200] * 8  # 2 workers + 8 queued: 8 concurrent clients all admitted


def test_client_cli_both_apis(server, helpers, tmp_path, monkeypatch, capsys):
    from prnet_keras.cli.client import main

    monkeypatch.setenv("PRNET_API_KEY", "k-123")
    photo = tmp_path / "in" / "face.jpg"
    photo.parent.mkdir()
    photo.write_bytes(helpers.image_bytes())
    out = tmp_path / "out"
    assert main(["--image", str(photo), "--serverurl", server, "--api", "native", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"face_face0.obj", "face_face0.ply", "face_face0.json"}
    assert main(["--imagedir", str(photo.parent), "--serverurl", server, "--out", str(out)]) == 0
    assert (out / "face_face0.mat").stat().st_size > 1000
    assert "1 face(s)" in capsys.readouterr().out
    monkeypatch.setenv("PRNET_API_KEY", "wrong")
    assert main(["--image", str(photo), "--serverurl", server]) == 2
    assert capsys.readouterr().err.startswith("error: /predict: HTTP 401")


def test_client_cli_user_errors(tmp_path, capsys):
    from prnet_keras.cli.client import main

    assert main(["--image", str(tmp_path / "missing.jpg")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --image")
    (tmp_path / "a.jpg").write_bytes(b"x")
    assert main(["--image", str(tmp_path / "a.jpg"), "--serverurl", f"http://127.0.0.1:{free_port()}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "cannot reach" in err and err.count("\n") == 1


def test_serve_cli_bad_model_is_one_line_error(capsys):
    from prnet_keras.cli.serve import main

    assert main(["--model", "/nonexistent/model.keras"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --model /nonexistent/model.keras") and err.count("\n") == 1


def test_wrapper_script_help():
    r = subprocess.run([sys.executable, "load_model_client.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "--serverurl" in r.stdout and "--imagedir" in r.stdout


@pytest.mark.slow
def test_prnet_serve_untrained_light_model(helpers):
    """The real CLI: TensorFlow light network (random weights) + synthetic UV layout, given boxes."""
    port = free_port()
    proc = start([sys.executable, "-m", "prnet_keras.cli.serve", "--model", "untrained:light", "--detector", "opencv",
                  "--port", str(port), "--log-level", "warning"], port, env={"PRNET_API_KEY": ""}, wait_s=240)
    try:
        base = f"http://127.0.0.1:{port}"
        info = httpx.get(f"{base}/v1/info").json()
        assert info["model"]["untrained"] is True and info["uv_layout"]["resolution"] == 256
        body = {"image": helpers.b64(helpers.image_bytes(200, 200)), "boxes": [[50, 50, 150, 150]],
                "outputs": ["landmarks", "mesh_ply"]}
        r = httpx.post(f"{base}/v1/reconstruct", json=body, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["faces"][0]["mesh"]["n_vertices"] == info["uv_layout"]["n_vertices"]
        assert info["model"]["engine"] == "openvino"  # TensorFlow CPU + openvino installed: the default engine
        # Ctrl-C: uvicorn shuts down, then re-raises the signal -> one line and exit 130, no traceback
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 130, out[-3000:]
        assert out.rstrip().endswith("prnet-serve: stopped") and "Traceback" not in out
    finally:
        if proc.poll() is None:
            stop(proc)


@pytest.mark.slow
def test_serve_loads_a_saved_keras_model(tmp_path, helpers):
    """prnet-serve's model path: a .keras file with its uv_layout.npz beside it, through model.io."""
    from fastapi.testclient import TestClient

    from prnet_keras.cli.serve import build_predictor
    from prnet_keras.model import build_model
    from prnet_keras.server.app import create_app
    from prnet_keras.server.batching import batched_predictor

    path = tmp_path / "tiny.keras"
    build_model("light", width=0.25).save(path)
    helpers.dome_layout().save(tmp_path / "uv_layout.npz")
    predictor, info = build_predictor(str(path), None, "synthetic", "opencv")
    assert info == {"untrained": False, "engine": "openvino"} and predictor.layout.source == "test-dome"
    app = create_app(batched_predictor(predictor, 2), helpers.make_settings(model_name="tiny.keras"))
    with TestClient(app) as c:
        r = c.post("/v1/reconstruct", json={"image": helpers.b64(helpers.image_bytes()), "boxes": [[40, 20, 120, 100]],
                                            "outputs": ["landmarks", "mesh_obj"]})
    assert r.status_code == 200, r.text
    face = r.json()["faces"][0]
    assert face["mesh"]["n_vertices"] == predictor.layout.n_vertices
    # a sigmoid network maps into the crop: landmarks land near the given box
    kp = face["landmarks"]
    assert all(-200 < x < 400 and -200 < y < 400 for x, y, _ in kp)
