"""Native API: POST /v1/reconstruct, GET /v1/info, GET /healthz.

``/v1/reconstruct`` takes either ``multipart/form-data`` (file field ``image``; optional
text fields ``outputs``, ``boxes``, ``landmarks``) or JSON ``{"image": base64, "outputs":
[...], "boxes": [[l, t, r, b], ...], "landmarks": [[[x, y], ...68]]}``. ``outputs`` picks
what each face carries besides its crop box and detection (default landmarks + pose):

=================  ===============================================================
``landmarks``      68 points [x, y, z], image pixels, y down, z larger = nearer
``pose``           pitch/yaw/roll degrees, rotation, scale, translation, camera matrix
``mesh_obj``       base64 OBJ (y up, per-vertex colours)
``mesh_ply``       base64 binary PLY (y up, uchar colours)
``mesh_json``      flat arrays for a browser (vertices y up, colours 0-255, triangles)
``mesh_mat``       base64 PRNet-keras mesh .mat (normal layout)
``position_map``   base64 ``.npy`` (R, R, 3) float32 image-frame position map
=================  ===============================================================

The multipart body is parsed in memory (the size cap bounds it) so uploads never touch disk.
"""

from __future__ import annotations

import json
import platform
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from prnet_keras.cancel import check_cancelled
from prnet_keras.inference.writers import mesh_mat_bytes
from prnet_keras.server.codec import ApiError, decode_base64, decode_image, json_depth
from prnet_keras.server.meshes import mesh_json, npy_bytes, obj_bytes, ply_bytes
from prnet_keras.server.pool import run_in_pool
from prnet_keras.server.service import FaceService, ResponseBudget, face_mesh
from prnet_keras.server.settings import ServerSettings

router = APIRouter(tags=["native"])
OUTPUTS = ("landmarks", "pose", "mesh_obj", "mesh_ply", "mesh_json", "mesh_mat", "position_map")
DEFAULT_OUTPUTS = ("landmarks", "pose")

_RECONSTRUCT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
                "image": {"type": "string", "format": "binary"},
                "outputs": {"type": "string", "description": f"comma-separated subset of {', '.join(OUTPUTS)}"},
                "boxes": {"type": "string", "description": "JSON [[left, top, right, bottom], ...]"},
                "landmarks": {"type": "string", "description": "JSON [[[x, y], ... 68], ...]"},
            }}},
            "application/json": {"schema": {"type": "object", "required": ["image"], "properties": {
                "image": {"type": "string", "description": "base64 encoded image"},
                "outputs": {"type": "array", "items": {"type": "string", "enum": list(OUTPUTS)}},
                "boxes": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                "landmarks": {"type": "array"},
            }}},
        },
    }
}


def parse_multipart(body: bytes, content_type: str) -> dict[str, bytes]:
    """In-memory multipart/form-data parse -> {field name: raw bytes} (last value wins)."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_request", "multipart body without a boundary", "Content-Type")
    fields: dict[str, bytes] = {}
    state: dict[str, Any] = {"headers": {}, "field": b"", "value": b"", "data": []}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["data"].append(data[start:end])

    def on_part_end() -> None:
        _, disp = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        if name:
            fields[name] = b"".join(state["data"])
        state["headers"], state["data"] = {}, []

    parser = MultipartParser(boundary, {
        "on_header_field": on_header_field, "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_part_data": on_part_data, "on_part_end": on_part_end,
    })
    try:
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # python-multipart raises its own error classes on malformed bodies
        raise ApiError(400, "bad_request", f"malformed multipart body ({exc.__class__.__name__})", "body") from None
    return fields


def _parse_outputs(value: Any) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_OUTPUTS
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(422, "invalid_field", "outputs: expected a list (or comma-separated string) of output names",
                       "outputs")
    bad = sorted(set(value) - set(OUTPUTS))
    if bad:
        raise ApiError(422, "invalid_field", f"outputs: unknown {bad}; choose from {list(OUTPUTS)}", "outputs")
    return tuple(dict.fromkeys(value))


def _json_field(value: Any, field: str, max_depth: int) -> Any:
    if value is None or not isinstance(value, (str, bytes)):
        return value
    raw = value.encode("utf-8", "replace") if isinstance(value, str) else value
    if json_depth(raw) > max_depth:
        raise ApiError(422, "invalid_field", f"{field}: JSON nested deeper than {max_depth} levels", field)
    try:
        return json.loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(422, "invalid_field", f"{field}: not valid JSON", field) from None


def _points(value: Any, field: str, width: int, limit: int) -> np.ndarray | None:
    """Validated numeric nested list -> float64 array, or None; at most ``limit`` faces, counted
    before anything is converted. width 4: boxes [l, t, r, b] (one, or a list); else
    landmarks (68, 2|3) (one set, or a list of sets)."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise ApiError(422, "invalid_field", f"{field}: expected a non-empty list", field)
    nested = isinstance(value[0], list) and (width == 4 or (value[0] and isinstance(value[0][0], list)))
    count = len(value) if nested else 1
    if count > limit:
        raise ApiError(413, "too_many", f"{field}: {count} faces, the limit is {limit} per image", field)
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ApiError(422, "invalid_field", f"{field}: expected nested lists of numbers", field) from None
    if a.ndim == 0 or a.size == 0 or not np.all(np.isfinite(a)):
        raise ApiError(422, "invalid_field", f"{field}: expected a non-empty array of finite numbers", field)
    if width == 4 and (a.ndim > 2 or a.shape[-1] != 4):
        raise ApiError(422, "invalid_field",
                       f"{field}: expected [[left, top, right, bottom], ...], got shape {a.shape}", field)
    return a


def reconstruct_job(service: FaceService, s: ServerSettings, req: dict) -> dict:
    t0 = time.perf_counter()
    raw = req["image"]
    boxes = _points(req.get("boxes"), "boxes", 4, s.max_faces_per_image)
    landmarks = _points(req.get("landmarks"), "landmarks", 0, s.max_faces_per_image)
    if isinstance(raw, str):  # JSON body: base64 decoded here, on the worker, not on the event loop
        raw = decode_base64(raw, "image", s.max_request_bytes)
    image = decode_image(raw, "image", s.max_image_pixels)
    field = "boxes" if boxes is not None else ("landmarks" if landmarks is not None else "image")
    faces = service.reconstruct(image, field, s.max_faces_per_image + 1, boxes=boxes, landmarks=landmarks)
    truncated = len(faces) > s.max_faces_per_image
    faces = faces[: s.max_faces_per_image]
    t1 = time.perf_counter()
    outputs = req["outputs"]
    h = image.shape[0]
    budget = ResponseBudget(s.max_response_bytes)
    out_faces = []
    for idx, face in enumerate(faces):
        check_cancelled()
        d = face.to_dict()
        item: dict[str, Any] = {"index": idx, "crop_box": d["crop_box"], "detection": d["detection"]}
        if "landmarks" in outputs:
            item["landmarks"] = d["keypoints"]
        if "pose" in outputs:
            item["pose"] = d["pose"]
        mesh_outputs = [o for o in outputs if o.startswith("mesh_")]
        if mesh_outputs:
            mesh = face_mesh(face)
            item["mesh"] = {"n_vertices": int(len(mesh.vertices)), "n_triangles": int(len(mesh.triangles)),
                            "frame": "y up (y' = height - 1 - y), image pixels"}
            if "mesh_obj" in outputs:
                item["mesh"]["obj"] = budget.b64(obj_bytes(mesh, h), "outputs")
            if "mesh_ply" in outputs:
                item["mesh"]["ply"] = budget.b64(ply_bytes(mesh, h), "outputs")
            if "mesh_mat" in outputs:
                item["mesh"]["mat"] = budget.b64(mesh_mat_bytes(face, "normal"), "outputs")
            if "mesh_json" in outputs:
                budget.take(21 * len(mesh.vertices) + 18 * len(mesh.triangles), "outputs")  # its JSON text
                item["mesh"]["json"] = mesh_json(mesh, h)
        if "position_map" in outputs:
            item["position_map"] = {"format": "npy", "dtype": "float32", "frame": "image pixels, y down",
                                    "data": budget.b64(npy_bytes(np.asarray(face.position_map, np.float32)), "outputs")}
        out_faces.append(item)
    t2 = time.perf_counter()
    return {
        "image": {"width": int(image.shape[1]), "height": int(image.shape[0])},
        "n_faces": len(out_faces), "truncated": truncated, "faces": out_faces, "outputs": list(outputs),
        "timing_ms": {"reconstruct": round(1000 * (t1 - t0), 2), "encode": round(1000 * (t2 - t1), 2)},
    }


def parse_request(body: bytes, ctype: str, s: ServerSettings) -> dict:
    """The /v1/reconstruct body (multipart or JSON) -> {image, outputs, boxes, landmarks}; runs on
    the worker, so large bodies never hold up the event loop."""
    if ctype.lower().startswith("multipart/form-data"):
        fields = parse_multipart(body, ctype)
        if "image" not in fields:
            raise ApiError(422, "missing_field", "image: multipart body has no file field 'image'", "image")
        txt = {k: v.decode("utf-8", "replace") for k, v in fields.items() if k != "image"}
        return {"image": fields["image"], "outputs": _parse_outputs(txt.get("outputs")),
                "boxes": _json_field(txt.get("boxes"), "boxes", s.max_json_depth),
                "landmarks": _json_field(txt.get("landmarks"), "landmarks", s.max_json_depth)}
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(422, "invalid_json", "body: not valid JSON", "body") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_json", "body: expected a JSON object", "body")
    if "image" not in data:
        raise ApiError(422, "missing_field", "image: missing (base64 string)", "image")
    if not isinstance(data["image"], str):
        raise ApiError(422, "invalid_base64", f"image: expected a base64 string, got {type(data['image']).__name__}",
                       "image")
    return {"image": data["image"], "outputs": _parse_outputs(data.get("outputs")), "boxes": data.get("boxes"),
            "landmarks": data.get("landmarks")}


def _reconstruct_body(service: FaceService, s: ServerSettings, body: bytes, ctype: str) -> dict:
    return reconstruct_job(service, s, parse_request(body, ctype, s))


@router.post("/v1/reconstruct", summary="Reconstruct the faces of one image", openapi_extra=_RECONSTRUCT_BODY)
async def reconstruct(request: Request) -> Any:
    s: ServerSettings = request.app.state.settings
    ctype = request.headers.get("content-type", "")
    if ctype and not ctype.lower().startswith(("multipart/form-data", "application/json")):
        raise ApiError(415, "unsupported_media_type", f"Content-Type {ctype!r}: send multipart/form-data or "
                       "application/json", "Content-Type")
    body = await request.body()
    return await run_in_pool(request, _reconstruct_body, request.app.state.service, s, body, ctype)


@router.get("/healthz", summary="Liveness (no API key needed)")
async def healthz(request: Request) -> dict[str, Any]:
    pool = request.app.state.pool
    return {"status": "ok", "in_flight": pool.in_flight, "capacity": pool.capacity}


def _dist_version(*names: str) -> str | None:
    """Installed version of the first of ``names`` found (without importing the package)."""
    from importlib import metadata

    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


@router.get("/v1/info", summary="Model, UV layout, limits and versions")
async def info(request: Request) -> dict[str, Any]:
    from prnet_keras import __version__

    s: ServerSettings = request.app.state.settings
    versions = {"prnet_keras": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for key, dists in (("keras", ("keras",)), ("tensorflow", ("tensorflow", "tensorflow-cpu")),
                       ("fastapi", ("fastapi",))):
        versions[key] = _dist_version(*dists)
    return {
        "model": {"name": s.model_name, "path": s.model_path, **s.extra_info},
        **request.app.state.service.info(),
        "limits": s.public_limits(),
        "outputs": list(OUTPUTS),
        "versions": versions,
    }
