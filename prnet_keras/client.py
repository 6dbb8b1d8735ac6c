"""The client library of the prnet-keras server: one method per endpoint, JSON in, JSON out.

    from prnet_keras.client import PRNetClient

    with PRNetClient("http://127.0.0.1:20000", api_key=None) as client:
        faces = client.reconstruct(open("face.jpg", "rb").read(), outputs=["landmarks", "pose"])["faces"]

Needs only ``httpx`` (no TensorFlow, no FastAPI). Errors (the server's 4xx/5xx answers with
their message, an unreachable server) raise :class:`ServerError`. ``prnet-client`` is its
command line.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Sequence

from prnet_keras.errors import PRNetError


class ServerError(PRNetError):
    """The server answered with an error (status and its JSON error message)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class PRNetClient:
    """Thin httpx client of both APIs (native ``/v1`` and the PRNet-keras compatible one);
    errors raise :class:`ServerError`."""

    def __init__(self, base_url: str = "http://127.0.0.1:20000", api_key: str | None = None,
                 timeout: float = 120.0) -> None:
        import httpx

        headers = {"X-API-Key": api_key} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "PRNetClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServerError(f"{self.base_url}{path}: cannot reach the server "
                              f"({exc.__class__.__name__}: {exc})") from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code != 200:
            err = (body or {}).get("error", {}) if isinstance(body, dict) else {}
            raise ServerError(f"{path}: HTTP {resp.status_code}: {err.get('message') or resp.text[:200]}")
        return body

    # ---- native ------------------------------------------------------------------------------
    def health(self) -> dict:
        return self._call("GET", "/healthz")

    def info(self) -> dict:
        return self._call("GET", "/v1/info")

    def reconstruct(self, image: bytes, outputs: Sequence[str] = ("landmarks", "pose"), boxes: Any = None,
                    filename: str = "image") -> dict:
        """POST /v1/reconstruct as multipart; ``image`` holds the encoded file bytes."""
        data = {"outputs": ",".join(outputs)}
        if boxes is not None:
            data["boxes"] = json.dumps(boxes)
        return self._call("POST", "/v1/reconstruct", files={"image": (filename, image)}, data=data)

    # ---- PRNet-keras compatible ------------------------------------------------------------------
    def predict(self, images: Sequence[bytes], mats: Sequence[Sequence[bytes]] | None = None,
                mat_type: str = "normal") -> dict:
        return self._call("POST", "/predict", json=self._image_mats(images, mats, mat_type))

    def extract(self, images: Sequence[bytes], mats: Sequence[Sequence[bytes]], mat_type: str = "normal") -> dict:
        return self._call("POST", "/extract", json=self._image_mats(images, mats, mat_type))

    def evaluate(self, images: Sequence[bytes], org_mats: Sequence[Sequence[bytes]],
                 predicted: Sequence[Sequence[str]]) -> dict:
        """``predicted``: the base64 ``rawMesh`` strings as /predict returned them."""
        items = [{"rawImage": _b64(im), "rawOrgMats": [_b64(m) for m in orgs], "rawPredictMats": list(preds)}
                 for im, orgs, preds in zip(images, org_mats, predicted)]
        return self._call("POST", "/evaluate", json={"imageMatList": items})

    @staticmethod
    def _image_mats(images: Sequence[bytes], mats: Sequence[Sequence[bytes]] | None, mat_type: str) -> dict:
        mats = mats if mats is not None else [[] for _ in images]
        return {"matType": mat_type, "imageMatList": [
            {"rawImage": _b64(im), "rawMats": [_b64(m) if m else "" for m in ms]} for im, ms in zip(images, mats)]}
