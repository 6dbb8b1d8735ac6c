"""Routes compatible with the PRNet-keras server: GET /, POST /predict, /extract, /evaluate.

Request and response shapes are the peer's; what differs is what the peer lacked: limits,
validation with 4xx errors naming the field, and 200 with an empty ``faceMeshList`` when
an image has no face (the peer answers 500).

* ``/predict``: per image, one face per non-empty entry of ``rawMats`` (the crop comes from
  the fit's 68 landmarks: pt3d_68, a 68-point pt2d, or the fit's projected keypoints); when
  ``rawMats`` is empty or all ``""``, the faces the detector finds.
* ``/extract``: per image, the ground-truth mesh of each fit ``.mat`` (``""`` -> ``rawMesh ""``
  and ``faceBB []``, as the peer).
* ``/evaluate``: per image, the six numbers of :mod:`prnet_keras.server.scoring` for each
  (``rawOrgMats[j]``, ``rawPredictMats[j]``) pair; an original may be a fit or a mesh ``.mat``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from prnet_keras.cancel import check_cancelled
from prnet_keras.inference.writers import mesh_mat_bytes
from prnet_keras.server.codec import ApiError, decode_base64, decode_image, decode_mat
from prnet_keras.server.meshes import mesh_from_mat
from prnet_keras.server.pool import run_in_pool
from prnet_keras.server.scoring import EVALUATION_TYPES
from prnet_keras.server.service import FaceService, ResponseBudget, as_list, face_box
from prnet_keras.server.settings import ServerSettings

router = APIRouter(tags=["PRNet-keras compatible"])


class ImageMatData(BaseModel):
    model_config = ConfigDict(extra="ignore")
    rawImage: str = Field(description="base64 of an encoded image (JPEG, PNG, ...)")
    rawMats: list[str] = Field(default_factory=list, description="base64 .mat fits, or \"\"")


class InputData(BaseModel):
    model_config = ConfigDict(extra="ignore")
    matType: Literal["normal", "dotnet"] = "normal"
    imageMatList: list[ImageMatData]


class FaceMeshData(BaseModel):
    rawMesh: str = Field(description="base64 mesh .mat: vertices, colors, full_triangles, vertex_normals, kptIdxs, "
                                     "bounding_box")
    faceBB: list[int] = Field(description="[cx, cy, size] of the crop square, pixels; [] when unknown")


class ImageMeshData(BaseModel):
    faceMeshList: list[FaceMeshData]


class OutputData(BaseModel):
    imageMeshList: list[ImageMeshData]


class ImageMatEvalData(BaseModel):
    model_config = ConfigDict(extra="ignore")
    rawImage: str
    rawOrgMats: list[str]
    rawPredictMats: list[str]


class InputEvalData(BaseModel):
    model_config = ConfigDict(extra="ignore")
    imageMatList: list[ImageMatEvalData]


class MeshEvalResult(BaseModel):
    evalValues: list[float | None]


class ImageEvalResult(BaseModel):
    imageEvalValues: list[MeshEvalResult]


class OutputEvalData(BaseModel):
    evaluationTypes: list[str]
    evaluationDataList: list[ImageEvalResult]


# ---- synchronous jobs (run on the inference pool) --------------------------------------------

def _image(item_b64: str, field: str, s: ServerSettings) -> np.ndarray:
    return decode_image(decode_base64(item_b64, field, s.max_request_bytes), field, s.max_image_pixels)


def _mat(item_b64: str, field: str, s: ServerSettings) -> dict:
    return decode_mat(decode_base64(item_b64, field, s.max_request_bytes), field, s.max_mat_bytes)


def _check_counts(items: list, s: ServerSettings, *mat_lists: str) -> None:
    """Images, mats per image and faces per request within their limits, before anything is decoded."""
    as_list(items, "imageMatList", s.max_images_per_request, "images")
    faces = 0
    for i, item in enumerate(items):
        for name in mat_lists:
            mats = as_list(getattr(item, name), f"imageMatList[{i}].{name}", s.max_faces_per_image, "mats")
            if name != "rawPredictMats":
                faces += sum(1 for m in mats if m)
    if faces > s.max_faces_per_request:
        raise ApiError(413, "too_many", f"imageMatList: {faces} mats in one request, the limit is "
                       f"{s.max_faces_per_request}", "imageMatList")


def _mesh_entry(face, mat_type: str, budget: ResponseBudget, field: str) -> dict:
    """One ``faceMeshList`` entry: the base64 mesh .mat and the face box [cx, cy, size]."""
    return {"rawMesh": budget.b64(mesh_mat_bytes(face, mat_type), field), "faceBB": face_box(face)}


def predict_job(service: FaceService, s: ServerSettings, data: InputData) -> dict:
    _check_counts(data.imageMatList, s, "rawMats")
    budget = ResponseBudget(s.max_response_bytes)
    out, n_faces = [], 0
    for i, item in enumerate(data.imageMatList):
        f = f"imageMatList[{i}]"
        image = _image(item.rawImage, f + ".rawImage", s)
        given = [(j, m) for j, m in enumerate(item.rawMats) if m]
        if given:
            kpts = []
            for j, m in given:
                check_cancelled()
                field = f"{f}.rawMats[{j}]"
                kpts.append(service.landmarks_for_fit(image, _mat(m, field, s), field)[:, :2])
            faces = service.reconstruct(image, f, s.max_faces_per_image, landmarks=np.stack(kpts))
        else:
            faces = service.reconstruct(image, f + ".rawImage", s.max_faces_per_image)
        n_faces += len(faces)
        if n_faces > s.max_faces_per_request:
            raise ApiError(413, "too_many", f"{f}: more than {s.max_faces_per_request} faces found in this request; "
                           "send fewer images per request", f + ".rawImage")
        entries = []
        for face in faces:
            check_cancelled()
            entries.append(_mesh_entry(face, data.matType, budget, f))
        out.append({"faceMeshList": entries})
    return {"imageMeshList": out}


def extract_job(service: FaceService, s: ServerSettings, data: InputData) -> dict:
    _check_counts(data.imageMatList, s, "rawMats")
    budget = ResponseBudget(s.max_response_bytes)
    out = []
    for i, item in enumerate(data.imageMatList):
        f = f"imageMatList[{i}]"
        image = _image(item.rawImage, f + ".rawImage", s)
        faces = []
        for j, m in enumerate(item.rawMats):
            check_cancelled()
            if not m:
                faces.append({"rawMesh": "", "faceBB": []})
                continue
            field = f"{f}.rawMats[{j}]"
            face = service.ground_truth_face(image, _mat(m, field, s), field)
            faces.append(_mesh_entry(face, data.matType, budget, field))
        out.append({"faceMeshList": faces})
    return {"imageMeshList": out}


def evaluate_job(service: FaceService, s: ServerSettings, data: InputEvalData) -> dict:
    _check_counts(data.imageMatList, s, "rawOrgMats", "rawPredictMats")
    out = []
    for i, item in enumerate(data.imageMatList):
        f = f"imageMatList[{i}]"
        if len(item.rawOrgMats) != len(item.rawPredictMats):
            raise ApiError(422, "invalid_field",
                           f"{f}: rawOrgMats has {len(item.rawOrgMats)} entries but rawPredictMats "
                           f"{len(item.rawPredictMats)}; they are compared pairwise", f + ".rawPredictMats")
    for i, item in enumerate(data.imageMatList):
        f = f"imageMatList[{i}]"
        image = _image(item.rawImage, f + ".rawImage", s)
        values = []
        for j, (org, pred) in enumerate(zip(item.rawOrgMats, item.rawPredictMats)):
            check_cancelled()
            fo, fp = f"{f}.rawOrgMats[{j}]", f"{f}.rawPredictMats[{j}]"
            gt = service.reference_mesh(image, _mat(org, fo, s), fo, s.max_mesh_vertices)
            pm = mesh_from_mat(_mat(pred, fp, s), image.shape[0], fp, s.max_mesh_vertices)
            values.append({"evalValues": service.evaluate(gt, pm)})
        out.append({"imageEvalValues": values})
    return {"evaluationTypes": list(EVALUATION_TYPES), "evaluationDataList": out}


# ---- routes ----------------------------------------------------------------------------------

@router.get("/", summary="API home (PRNet-keras compatible)")
async def index() -> dict[str, Any]:
    return {"message": "prnet-keras server: POST /predict, /extract, /evaluate (PRNet-keras API); "
                       "native API under /v1 (docs at /docs); a page for people at /ui",
            "ui": "/ui", "docs": "/docs", "health": "/healthz"}


@router.post("/predict", response_model=OutputData, summary="Reconstruct faces; base64 mesh .mat per face")
async def predict(data: InputData, request: Request) -> Any:
    return await run_in_pool(request, predict_job, request.app.state.service, request.app.state.settings, data)


@router.post("/extract", response_model=OutputData, summary="Ground-truth meshes from 3DMM fit .mat files")
async def extract(data: InputData, request: Request) -> Any:
    return await run_in_pool(request, extract_job, request.app.state.service, request.app.state.settings, data)


@router.post("/evaluate", response_model=OutputEvalData,
             summary="Six NME metrics between original and predicted meshes")
async def evaluate(data: InputEvalData, request: Request) -> Any:
    return await run_in_pool(request, evaluate_job, request.app.state.service, request.app.state.settings, data)
