"""JSON responses of the server: compact JSON of plain Python types, and the one error shape
``{"error": {"code", "field", "message"}}``."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from fastapi.responses import JSONResponse

from prnet_keras.utils import to_jsonable


def _numpy_default(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def render_json(content: Any) -> bytes:
    """Compact JSON bytes; numpy values converted, NaN/inf -> null.

    Fast path: one json.dumps (numpy handled on demand); only content holding a non-finite
    float pays for the full :func:`to_jsonable` walk (~0.3 s for a 50k-vertex JSON mesh).
    """
    try:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_numpy_default)
    except ValueError:  # NaN or infinity somewhere
        text = json.dumps(_finite(to_jsonable(content)), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8")


def _finite(obj: Any) -> Any:
    # utils.to_jsonable passes numpy non-finite scalars through (.item() of inf is inf): null them here.
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


class JSONSafeResponse(JSONResponse):
    """JSON response of plain Python types (numpy converted, NaN/inf -> null), compact."""

    def render(self, content: Any) -> bytes:
        return render_json(content)


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict | None = None) -> JSONSafeResponse:
    return JSONSafeResponse({"error": {"code": code, "field": field, "message": message}}, status_code=status,
                            headers=headers)
