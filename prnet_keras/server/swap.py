"""Native API: POST /v1/swap, face swap and texture editing answered with the edited image.

``multipart/form-data`` fields (only ``image`` is required):

=================  ===============================================================================
``image``          file: the photo to edit
``ref``            file: the photo whose face gives the texture; without it the two largest faces of
                   ``image`` (or ``face`` and ``ref_face``) trade places
``region``         ``face`` (default) | ``eyes`` | ``nose`` | ``mouth``
``mask``           file: a grey UV mask at the layout's resolution (white = replace), instead of region
``face``           index of the face of ``image`` to edit (detection order), ``all``; default the largest
``ref_face``       index of the face of ``ref`` to copy; default the largest
``color_transfer`` ``true`` (default: match the reference's skin colour to the edited face) | ``false``
``blend``          ``poisson`` (default) | ``alpha`` | ``none``
``format``         ``jpeg`` (default) | ``png``: the answer's encoding
=================  ===============================================================================

The answer is the edited image, as large as ``image``; headers ``X-Swap-Pairs`` (``target<-source``
face indices, comma-separated) and ``X-Changed-Pixels``. Errors use the JSON error shape: 422 naming
``image`` / ``ref`` (no face: code ``no_face``), ``face`` / ``ref_face`` (index out of range),
``region`` / ``mask`` (unknown region, mask of the wrong size); 413 for a body or image over the limits.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response

from prnet_keras.cancel import check_cancelled
from prnet_keras.errors import PRNetError
from prnet_keras.server.codec import ApiError, decode_image
from prnet_keras.server.native import parse_multipart
from prnet_keras.server.pool import run_job
from prnet_keras.server.service import FaceService
from prnet_keras.server.settings import ServerSettings

router = APIRouter(tags=["native"])
FORMATS = {"jpeg": ("image/jpeg", ".jpg"), "png": ("image/png", ".png")}
TEXT_FIELDS = ("region", "face", "ref_face", "color_transfer", "blend", "format")

_SWAP_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "format": "binary", "description": "the photo to edit"},
            "ref": {"type": "string", "format": "binary",
                    "description": "the photo whose face gives the texture (absent: two faces of image trade places)"},
            "region": {"type": "string", "enum": ["face", "eyes", "nose", "mouth"], "default": "face"},
            "mask": {"type": "string", "format": "binary", "description": "grey UV mask PNG (instead of region)"},
            "face": {"type": "string", "description": "face index of image, or 'all'; default the largest"},
            "ref_face": {"type": "string", "description": "face index of ref; default the largest"},
            "color_transfer": {"type": "string", "enum": ["true", "false"], "default": "true"},
            "blend": {"type": "string", "enum": ["poisson", "alpha", "none"], "default": "poisson"},
            "format": {"type": "string", "enum": list(FORMATS), "default": "jpeg"},
        }}}},
    },
    "responses": {"200": {"description": "the edited image",
                          "content": {"image/jpeg": {}, "image/png": {}}}},
}


def _index(value: str | None, field: str, allow_all: bool) -> int | str | None:
    if value is None or value.strip() == "":
        return None
    text = value.strip().lower()
    if allow_all and text == "all":
        return "all"
    if not text.isdigit():
        raise ApiError(422, "invalid_field", f"{field}: expected a face index{' or all' if allow_all else ''}, "
                       f"got {value[:40]!r}", field)
    return int(text)


def _choice(value: str | None, field: str, choices: tuple[str, ...], default: str) -> str:
    text = (value or default).strip().lower()
    if text not in choices:
        raise ApiError(422, "invalid_field", f"{field}: expected one of {', '.join(choices)}, got {text[:40]!r}", field)
    return text


def parse_swap_request(fields: dict[str, bytes]) -> dict[str, Any]:
    """Multipart fields -> validated options (images stay encoded until the worker decodes them)."""
    from prnet_keras.edit import BLENDS, REGIONS

    if "image" not in fields:
        raise ApiError(422, "missing_field", "image: multipart body has no file field 'image'", "image")
    txt = {k: fields[k].decode("utf-8", "replace") for k in TEXT_FIELDS if k in fields}
    if "mask" in fields and "region" in txt:
        raise ApiError(422, "invalid_field", "region: send either region or a mask file, not both", "region")
    return {
        "image": fields["image"], "ref": fields.get("ref"), "mask": fields.get("mask"),
        "region": _choice(txt.get("region"), "region", tuple(REGIONS), "face"),
        "face": _index(txt.get("face"), "face", allow_all="ref" in fields),
        "ref_face": _index(txt.get("ref_face"), "ref_face", allow_all=False),
        "color_transfer": _choice(txt.get("color_transfer"), "color_transfer", ("true", "false"), "true") == "true",
        "blend": _choice(txt.get("blend"), "blend", BLENDS, "poisson"),
        "format": _choice(txt.get("format"), "format", tuple(FORMATS), "jpeg"),
    }


def _mask(data: bytes, layout: Any, s: ServerSettings) -> np.ndarray:
    """A UV mask file -> (R, R) weights in [0, 1]; 422 naming ``mask`` when it is not one."""
    from prnet_keras.edit import uv_region_mask

    grey = decode_image(data, "mask", s.max_image_pixels).mean(axis=2) / 255.0
    r = layout.resolution
    if grey.shape != (r, r):
        raise ApiError(422, "invalid_mask", f"mask: expected a {r}x{r} UV mask (the map's resolution), "
                       f"got {grey.shape[1]}x{grey.shape[0]}", "mask")
    try:
        return uv_region_mask(layout, grey.astype(np.float32))
    except PRNetError as exc:
        raise ApiError(422, "invalid_mask", f"mask: {exc}", "mask") from None


def _check_index(index: Any, faces: list, field: str, photo: str) -> None:
    if isinstance(index, int) and index >= len(faces):
        raise ApiError(422, "invalid_field", f"{field}: face index {index} out of range: {photo} has "
                       f"{len(faces)} face(s)", field)


def swap_job(service: FaceService, s: ServerSettings, req: dict) -> tuple[bytes, str, dict[str, str]]:
    """Decode, reconstruct both photos, swap, encode: (image bytes, media type, headers)."""
    import cv2

    from prnet_keras.edit import apply_swap, plan_swap, uv_region_mask

    t0 = time.perf_counter()
    layout = service.layout
    if req["mask"] is not None:
        region: Any = _mask(req["mask"], layout, s)
    else:
        region = req["region"]
        try:
            uv_region_mask(layout, region)
        except PRNetError as exc:
            raise ApiError(422, "invalid_field", f"region: {exc}", "region") from None
    image = decode_image(req["image"], "image", s.max_image_pixels)
    ref = decode_image(req["ref"], "ref", s.max_image_pixels) if req["ref"] is not None else None
    faces_a = service.reconstruct(image, "image", s.max_faces_per_image)
    check_cancelled()
    faces_b = service.reconstruct(ref, "ref", s.max_faces_per_image) if ref is not None else None
    check_cancelled()
    for field, faces in (("image", faces_a), ("ref", faces_b)):
        if faces is not None and not faces:
            raise ApiError(422, "no_face", f"{field}: no face found", field)
    if faces_b is None and len(faces_a) < 2:
        raise ApiError(422, "no_face", f"image: swapping within one photo needs two faces, found {len(faces_a)} "
                       "(send a ref photo)", "image")
    _check_index(req["face"], faces_a, "face", "image")
    _check_index(req["ref_face"], faces_b if faces_b is not None else faces_a, "ref_face",
                 "ref" if faces_b is not None else "image")
    try:
        plan = plan_swap(faces_a, faces_b, req["face"], req["ref_face"], ("image", "ref"))
        result = apply_swap(plan, region, color_transfer=req["color_transfer"], blend_mode=req["blend"])
    except PRNetError as exc:
        raise ApiError(422, "invalid_field", str(exc), "face") from None
    check_cancelled()
    media, suffix = FORMATS[req["format"]]
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if suffix == ".jpg" else []
    ok, data = cv2.imencode(suffix, cv2.cvtColor(result.image, cv2.COLOR_RGB2BGR), params)
    if not ok:  # pragma: no cover - OpenCV fails only on invalid arrays
        raise ApiError(500, "internal_error", "could not encode the edited image")
    if data.size > s.max_response_bytes:
        raise ApiError(413, "too_large", f"format: the {req['format']} image would take {data.size} bytes, more than "
                       f"the response limit {s.max_response_bytes} (ask for jpeg)", "format")
    headers = {
        "X-Swap-Pairs": ",".join(f"{t}<-{src}" for t, src in result.pairs),
        "X-Changed-Pixels": str(int(result.mask.sum())),
        "Server-Timing": f"swap;dur={1000 * (time.perf_counter() - t0):.1f}",
    }
    return data.tobytes(), media, headers


@router.post("/v1/swap", summary="Face swap / texture editing: the edited image", openapi_extra=_SWAP_BODY,
             response_class=Response)
async def swap(request: Request) -> Response:
    s: ServerSettings = request.app.state.settings
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media_type", f"Content-Type {ctype!r}: send multipart/form-data "
                       "(fields image, ref, region, ...)", "Content-Type")
    result = await run_job(request, _swap_body, request.app.state.service, s, await request.body(), ctype)
    if isinstance(result, Response):  # the client went away
        return result
    data, media, headers = result
    return Response(data, media_type=media, headers=headers)


def _swap_body(service: FaceService, s: ServerSettings, body: bytes, ctype: str) -> tuple[bytes, str, dict[str, str]]:
    # parsed on the worker: a large body never holds up the event loop
    return swap_job(service, s, parse_swap_request(parse_multipart(body, ctype)))
