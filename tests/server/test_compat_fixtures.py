"""Request/response fixtures of the PRNet-keras API (tests/server/fixtures/compat_requests.json).

The response models below restate the PRNet-keras API strictly (no extra keys, exact types) so any
drift from what PRNet-keras clients parse fails here.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
import scipy.io
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "compat_requests.json"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FaceMeshData(Strict):
    rawMesh: StrictStr
    faceBB: list[StrictInt]


class ImageMeshData(Strict):
    faceMeshList: list[FaceMeshData]


class OutputData(Strict):
    imageMeshList: list[ImageMeshData]


class MeshEvalResult(Strict):
    evalValues: list[float | None]


class ImageEvalResult(Strict):
    imageEvalValues: list[MeshEvalResult]


class OutputEvalData(Strict):
    evaluationTypes: list[StrictStr]
    evaluationDataList: list[ImageEvalResult]


class ErrorBody(Strict):
    code: StrictStr
    field: StrictStr | None
    message: StrictStr


class Error(Strict):
    error: ErrorBody


MODELS = {"OutputData": OutputData, "OutputEvalData": OutputEvalData, "Error": Error}
CASES = json.loads(FIXTURES.read_text())["cases"]


@pytest.fixture(scope="module")
def placeholders(synthetic_client, helpers) -> dict[str, str]:
    image = helpers.image_bytes(200, 200)
    fit = helpers.synthetic_fit(yaw=0.2)
    body = {"imageMatList": [{"rawImage": helpers.b64(image), "rawMats": [helpers.b64(fit)]}]}
    mesh = synthetic_client.post("/predict", json=body).json()["imageMeshList"][0]["faceMeshList"][0]["rawMesh"]
    return {"<IMAGE>": helpers.b64(image), "<FIT>": helpers.b64(fit), "<MESH>": mesh}


def _fill(obj, table):
    if isinstance(obj, dict):
        return {k: _fill(v, table) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fill(v, table) for v in obj]
    return table.get(obj, obj) if isinstance(obj, str) else obj


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_fixture_case(synthetic_client, placeholders, case):
    r = synthetic_client.post(case["path"], json=_fill(case["body"], placeholders))
    assert r.status_code == case["status"], r.text[:300]
    parsed = MODELS[case["response"]].model_validate(r.json())
    if isinstance(parsed, OutputData):
        images = case["body"]["imageMatList"]
        assert len(parsed.imageMeshList) == len(images)
        for item, out in zip(images, parsed.imageMeshList):
            given = [m for m in item["rawMats"] if m]
            if case["path"] == "/extract":
                assert len(out.faceMeshList) == len(item["rawMats"])
            elif given:
                assert len(out.faceMeshList) == len(given)
            for face in out.faceMeshList:
                if face.rawMesh:
                    mat = scipy.io.loadmat(io.BytesIO(base64.b64decode(face.rawMesh)))
                    assert {"vertices", "colors", "full_triangles", "vertex_normals", "kptIdxs",
                            "bounding_box"} <= set(mat)
                    assert len(face.faceBB) == 3
                    expect_rows = 3 if case["body"].get("matType") == "dotnet" else mat["vertices"].shape[0]
                    assert mat["vertices"].shape[0] == expect_rows
                else:
                    assert face.faceBB == []
    elif isinstance(parsed, OutputEvalData):
        assert len(parsed.evaluationTypes) == 6
        assert all(len(m.evalValues) == 6 for d in parsed.evaluationDataList for m in d.imageEvalValues)
