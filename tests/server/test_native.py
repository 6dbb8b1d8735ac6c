"""Native API: /v1/reconstruct (multipart and JSON, every output), /v1/info, /healthz, OpenAPI, /ui."""

from __future__ import annotations

import base64
import io

import numpy as np
import scipy.io

from prnet_keras.server.meshes import ply_counts

ALL = "landmarks,pose,mesh_obj,mesh_ply,mesh_json,mesh_mat,position_map"


def test_multipart_all_outputs(client, helpers, layout):
    img = helpers.image_bytes(120, 160, fmt="PNG")
    r = client.post("/v1/reconstruct", files={"image": ("x.png", img, "image/png")}, data={"outputs": ALL})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image"] == {"width": 160, "height": 120} and body["n_faces"] == 1 and body["truncated"] is False
    face = body["faces"][0]
    n, t = layout.n_vertices, len(layout.triangles)
    assert np.asarray(face["landmarks"]).shape == (68, 3)
    assert {"pitch_deg", "yaw_deg", "roll_deg", "rotation", "scale"} <= set(face["pose"])
    mesh = face["mesh"]
    assert mesh["n_vertices"] == n and mesh["n_triangles"] == t
    obj = base64.b64decode(mesh["obj"]).decode()
    assert obj.count("\nv ") + obj.startswith("v ") == n and obj.count("\nf ") == t
    assert ply_counts(base64.b64decode(mesh["ply"])) == (n, t)
    mat = scipy.io.loadmat(io.BytesIO(base64.b64decode(mesh["mat"])))
    assert mat["vertices"].shape == (n, 3)
    js = mesh["json"]
    assert len(js["vertices"]) == 3 * n and len(js["colors"]) == 3 * n and len(js["triangles"]) == 3 * t
    pm = np.load(io.BytesIO(base64.b64decode(face["position_map"]["data"])))
    assert pm.shape == (256, 256, 3) and pm.dtype == np.float32
    # the image-frame position map and the landmarks agree
    kp = np.asarray(face["landmarks"])
    np.testing.assert_allclose(pm[layout.uv_kpt_ind[1], layout.uv_kpt_ind[0]], kp, atol=1e-3)


def test_json_body_with_boxes_and_default_outputs(client, helpers):
    img = helpers.image_bytes(100, 100)
    r = client.post("/v1/reconstruct", json={"image": helpers.b64(img), "boxes": [[10, 10, 50, 50], [40, 40, 90, 90]]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n_faces"] == 2 and body["outputs"] == ["landmarks", "pose"]
    assert body["faces"][0]["detection"]["box_ltrb"] == [10.0, 10.0, 50.0, 50.0]
    assert "mesh" not in body["faces"][0]


def test_data_url_prefix_is_accepted(client, helpers):
    url = "data:image/jpeg;base64," + helpers.b64(helpers.image_bytes())
    assert client.post("/v1/reconstruct", json={"image": url}).status_code == 200


def test_faces_per_image_cap_truncates(client, helpers):
    wide = helpers.image_bytes(40, 200)  # stub detector: 40 faces on a very wide image
    body = client.post("/v1/reconstruct", files={"image": ("w.jpg", wide)}).json()
    assert body["n_faces"] == 4 and body["truncated"] is True
    compat = client.post("/predict", json={"imageMatList": [{"rawImage": helpers.b64(wide), "rawMats": []}]}).json()
    assert len(compat["imageMeshList"][0]["faceMeshList"]) == 4


def test_no_face_native(client, helpers):
    body = client.post("/v1/reconstruct", files={"image": ("u.jpg", helpers.image_bytes(uniform=True))}).json()
    assert body["n_faces"] == 0 and body["faces"] == []


def test_info_health_docs_and_page(client):
    info = client.get("/v1/info").json()
    assert info["model"]["name"] == "test-dome"
    assert info["uv_layout"]["source"] == "test-dome" and info["uv_layout"]["resolution"] == 256
    assert info["limits"]["max_faces_per_image"] == 4 and info["versions"]["prnet_keras"]
    assert client.get("/healthz").json()["status"] == "ok"
    schema = client.get("/openapi.json").json()
    for path in ("/", "/predict", "/extract", "/evaluate", "/v1/reconstruct", "/v1/info", "/healthz"):
        assert path in schema["paths"]
    assert "multipart/form-data" in schema["paths"]["/v1/reconstruct"]["post"]["requestBody"]["content"]
    page = client.get("/ui")
    assert page.status_code == 200 and "<canvas id=\"mesh\"" in page.text
    js = client.get("/ui/static/app.js")
    assert js.status_code == 200 and "WebGL" in js.text and "import " not in js.text
    # no third-party code or CDN: the page loads only its own files
    assert "cdn" not in page.text.lower() and "<script src=\"/ui/static/app.js\">" in page.text
