"""PRNet-keras-compatible API: request/response shapes, mesh .mat contents, fits, metrics."""

from __future__ import annotations

import base64
import io

import numpy as np
import scipy.io
from fastapi.testclient import TestClient

from prnet_keras.server.app import create_app
from prnet_keras.server.scoring import EVALUATION_TYPES

MESH_KEYS = {"vertices", "colors", "full_triangles", "vertex_normals", "kptIdxs", "bounding_box"}


def load_mesh(raw: str) -> dict:
    mat = scipy.io.loadmat(io.BytesIO(base64.b64decode(raw)))
    return {k: v for k, v in mat.items() if not k.startswith("__")}


def request(helpers, images, mats=None, mat_type=None):
    body = {"imageMatList": [{"rawImage": helpers.b64(im), "rawMats": [helpers.b64(m) if m else "" for m in ms]}
                             for im, ms in zip(images, mats or [[] for _ in images])]}
    if mat_type:
        body["matType"] = mat_type
    return body


def test_home_keeps_json_message_and_links_the_page(client):
    r = client.get("/")
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body["message"], str) and body["ui"] == "/ui"


def test_predict_response_shape_and_mesh_mat(client, helpers, layout):
    img = helpers.image_bytes(120, 160)
    r = client.post("/predict", json=request(helpers, [img]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == ["imageMeshList"] and len(body["imageMeshList"]) == 1
    faces = body["imageMeshList"][0]["faceMeshList"]
    assert len(faces) == 1 and set(faces[0]) == {"rawMesh", "faceBB"}
    cx, cy, size = faces[0]["faceBB"]
    assert all(isinstance(v, int) for v in faces[0]["faceBB"])
    # stub MTCNN box: 60 px wide, centred at (80, 60); MTCNN crop rule: centre 0.16 x side lower, side x 1.36
    assert (cx, cy, size) == (80, round(60 + 0.16 * 60), round(1.36 * 60))
    mesh = load_mesh(faces[0]["rawMesh"])
    assert set(mesh) == MESH_KEYS
    n = layout.n_vertices
    assert mesh["vertices"].shape == (n, 3) and mesh["colors"].shape == (n, 3)
    assert mesh["full_triangles"].shape == (len(layout.triangles), 3) and mesh["vertex_normals"].shape == (n, 3)
    assert mesh["kptIdxs"].size == 68 and mesh["bounding_box"].size == 6
    assert 0.0 <= mesh["colors"].min() and mesh["colors"].max() <= 1.0
    # y up: the native API's landmarks (y down) mirror the mesh keypoints about h-1.
    native = client.post("/v1/reconstruct", files={"image": ("a.jpg", img)}, data={"outputs": "landmarks"}).json()
    kp = np.asarray(native["faces"][0]["landmarks"])
    v = mesh["vertices"][mesh["kptIdxs"].reshape(-1)]
    np.testing.assert_allclose(v[:, 0], kp[:, 0], atol=1e-3)
    np.testing.assert_allclose(v[:, 1], 120 - 1 - kp[:, 1], atol=1e-3)
    # normals of a frontal dome face the viewer (+z) in the y-up frame
    assert np.mean(mesh["vertex_normals"][:, 2] > 0) > 0.9


def test_predict_dotnet_transposes_arrays(client, helpers, layout):
    r = client.post("/predict", json=request(helpers, [helpers.image_bytes()], mat_type="dotnet"))
    mesh = load_mesh(r.json()["imageMeshList"][0]["faceMeshList"][0]["rawMesh"])
    n = layout.n_vertices
    assert mesh["vertices"].shape == mesh["colors"].shape == mesh["vertex_normals"].shape == (3, n)
    assert mesh["full_triangles"].shape == (3, len(layout.triangles))


def test_no_face_is_200_with_empty_list(client, helpers):
    imgs = [helpers.image_bytes(uniform=True), helpers.image_bytes(seed=3)]
    r = client.post("/predict", json=request(helpers, imgs))
    assert r.status_code == 200
    lists = [im["faceMeshList"] for im in r.json()["imageMeshList"]]
    assert lists[0] == [] and len(lists[1]) == 1


def test_predict_with_fit_mat_crops_from_its_landmarks(client, helpers):
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(40, 100, 68), rng.uniform(30, 90, 68), rng.uniform(0, 20, 68)])  # (3, 68)
    fit = helpers.mat_bytes({"pt3d_68": pts.astype(np.float32), "Pose_Para": np.zeros((1, 7), np.float32)})
    r = client.post("/predict", json=request(helpers, [helpers.image_bytes()], [[fit, b""]]))
    assert r.status_code == 200, r.text
    faces = r.json()["imageMeshList"][0]["faceMeshList"]
    assert len(faces) == 1  # one per non-empty mat
    lo, hi = pts[:2].min(1), pts[:2].max(1)
    cx, cy, size = faces[0]["faceBB"]
    assert abs(cx - (lo[0] + hi[0]) / 2) <= 1 and abs(cy - (lo[1] + hi[1]) / 2) <= 1
    assert abs(size - 1.5 * ((hi - lo).sum() / 2)) <= 1  # training crop: 1.5 x keypoint box


def test_extract_ground_truth_mesh_from_fit(synthetic_client, helpers, synthetic_layout):
    img = helpers.image_bytes(200, 200)
    r = synthetic_client.post("/extract", json=request(helpers, [img], [[helpers.synthetic_fit(), b""]]))
    assert r.status_code == 200, r.text
    faces = r.json()["imageMeshList"][0]["faceMeshList"]
    assert faces[1] == {"rawMesh": "", "faceBB": []}
    mesh = load_mesh(faces[0]["rawMesh"])
    assert mesh["vertices"].shape == (synthetic_layout.n_vertices, 3)
    cx, cy, _ = faces[0]["faceBB"]
    assert abs(cx - 100) < 15 and abs(cy - (199 - 95)) < 15  # the fit put the face around (100, 95) y-up


def test_evaluate_ground_truth_against_itself_is_zero(synthetic_client, helpers):
    img, fit = helpers.image_bytes(200, 200), helpers.synthetic_fit()
    gt_mesh = synthetic_client.post("/extract", json=request(helpers, [img], [[fit]])).json()
    raw = gt_mesh["imageMeshList"][0]["faceMeshList"][0]["rawMesh"]
    body = {"imageMatList": [{"rawImage": helpers.b64(img), "rawOrgMats": [helpers.b64(fit)], "rawPredictMats": [raw]}]}
    r = synthetic_client.post("/evaluate", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["evaluationTypes"] == EVALUATION_TYPES and len(EVALUATION_TYPES) == 6
    values = out["evaluationDataList"][0]["imageEvalValues"][0]["evalValues"]
    assert len(values) == 6
    assert max(values) < 1e-3


def test_evaluate_prediction_gives_positive_finite_errors(synthetic_client, helpers):
    img, fit = helpers.image_bytes(200, 200), helpers.synthetic_fit(yaw=0.0)
    pred = synthetic_client.post("/predict", json=request(helpers, [img], [[fit]])).json()
    raw = pred["imageMeshList"][0]["faceMeshList"][0]["rawMesh"]
    body = {"imageMatList": [{"rawImage": helpers.b64(img), "rawOrgMats": [helpers.b64(fit)], "rawPredictMats": [raw]}]}
    answer = synthetic_client.post("/evaluate", json=body).json()
    values = answer["evaluationDataList"][0]["imageEvalValues"][0]["evalValues"]
    assert all(v is not None and np.isfinite(v) and v > 0 for v in values)
    # ICP can only reduce the error of the dense 3D comparison
    assert values[5] < values[3] * 5


def test_evaluate_rejects_unpaired_lists(client, helpers):
    body = {"imageMatList": [{"rawImage": helpers.b64(helpers.image_bytes()), "rawOrgMats": ["", ""],
                              "rawPredictMats": [""]}]}
    r = client.post("/evaluate", json=body)
    assert r.status_code == 422 and r.json()["error"]["field"] == "imageMatList[0].rawPredictMats"


def test_bad_mat_names_the_field(client, helpers):
    r = client.post("/predict", json=request(helpers, [helpers.image_bytes()], [[b"not a mat file at all"]]))
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_mat" and err["field"] == "imageMatList[0].rawMats[0]"


def test_reference_photo_and_aflw_fit(reference_data, mean_bfm, official_layout, helpers):
    """Real AFLW2000-3D sample: /extract of its fit and /predict cropped from its pt3d_68."""
    from prnet_keras.inference import Predictor

    jpg = sorted((reference_data / "aflw2000-3d").glob("*.jpg"))[0]
    fit = jpg.with_suffix(".mat").read_bytes()
    pred = Predictor(helpers.dome_network, official_layout, detector=helpers.stub_detector)
    with TestClient(create_app(pred, helpers.make_settings(max_request_bytes=5_000_000), morphable=mean_bfm)) as c:
        r = c.post("/extract", json=request(helpers, [jpg.read_bytes()], [[fit]]))
        assert r.status_code == 200, r.text
        mesh = load_mesh(r.json()["imageMeshList"][0]["faceMeshList"][0]["rawMesh"])
        assert mesh["vertices"].shape == (official_layout.n_vertices, 3)
        pt3d = scipy.io.loadmat(io.BytesIO(fit))["pt3d_68"]
        kp = mesh["vertices"][mesh["kptIdxs"].reshape(-1)]
        # mean-shape GT keypoints land within a few % of the annotated ones (the missing identity)
        err = np.linalg.norm(kp[:, 0:1] - pt3d[0][:, None], axis=1).mean()
        assert err < 0.1 * (pt3d[0].max() - pt3d[0].min())


def test_predict_with_fit_without_landmarks_uses_projected_keypoints(synthetic_client, helpers):
    """A 300W-LP-style fit whose pt2d is not 68 points: the crop comes from the fit's model keypoints."""
    import scipy.io as sio

    fit = sio.loadmat(io.BytesIO(helpers.synthetic_fit(yaw=0.0)))
    fit["pt2d"] = np.zeros((2, 21))  # AFLW's 21 points: unusable for the 68-point crop
    raw = helpers.mat_bytes({k: v for k, v in fit.items() if not k.startswith("__")})
    r = synthetic_client.post("/predict", json=request(helpers, [helpers.image_bytes(200, 200)], [[raw]]))
    assert r.status_code == 200, r.text
    cx, cy, size = r.json()["imageMeshList"][0]["faceMeshList"][0]["faceBB"]
    assert abs(cx - 100) < 15 and abs(cy - (199 - 95)) < 15 and 30 < size < 250
