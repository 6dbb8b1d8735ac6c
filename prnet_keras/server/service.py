"""What the routes call: reconstruction, ground truth from fits, meshes, metrics.

The :class:`FaceService` wraps a predictor (``prnet_keras.inference.Predictor`` or anything
with ``predict(image, boxes=None, landmarks=None, detector=...) -> list[Face]`` and a
``layout``) and, lazily, the morphable model that turns a 300W-LP / AFLW2000-3D fit
``.mat`` into a ground-truth mesh. All methods are synchronous and run on the inference
pool's threads; library errors become :class:`ApiError` naming the request field.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np

from prnet_keras.errors import PRNetError
from prnet_keras.server.codec import ApiError, encode_base64
from prnet_keras.server.meshes import Mesh, mesh_from_mat


def face_mesh(face: Any) -> Mesh:
    """A ``Face`` -> :class:`Mesh` (image frame, colours sampled from the image)."""
    return Mesh(
        np.asarray(face.vertices, np.float32),
        np.asarray(face.colors, np.float32),
        np.asarray(face.triangles, np.int32),
        np.asarray(face.keypoint_indices, np.int32),
    )


def face_box(face: Any) -> list[int]:
    """PRNet-keras ``faceBB``: [cx, cy, size] of the crop square, integer pixels."""
    cx, cy, size = face.crop_box
    return [int(round(cx)), int(round(cy)), int(round(size))]


def fit_landmarks(mat: dict, field: str) -> np.ndarray | None:
    """68 landmarks of a fit ``.mat``: ``pt3d_68`` (3, 68) or a 68-point ``pt2d``; None when absent."""
    for key in ("pt3d_68", "pt2d"):
        if key in mat:
            try:
                a = np.asarray(mat[key], np.float64)
            except (TypeError, ValueError):
                raise ApiError(422, "invalid_mat", f"{field}: .mat key {key!r} is not numeric", field) from None
            if a.shape in ((2, 68), (3, 68)):
                if not np.all(np.isfinite(a)):
                    raise ApiError(422, "invalid_mat", f"{field}: .mat key {key!r} holds NaN or infinite values", field)
                return a.T
    return None


class FaceService:
    """Predictor + UV layout + (lazy) morphable model: what one server instance serves.

    morphable: spec for ``geometry.load_morphable_model`` ("synthetic", a BFM ``.mat`` or a
    folder) used by /extract and /evaluate to turn fits into ground truth; it must be the
    model the network's UV layout was made from. crop_config: the crop rules of that ground
    truth (``geometry.CropConfig``; None: the predictor's). icp_backend, icp_method: the
    ICP of /evaluate's reconstruction numbers, as ``prnet-evaluate --icp / --icp-method``
    (the defaults are the packaged ``evaluate`` section's; open3d falls back to scipy when
    it cannot be imported).
    """

    def __init__(self, predictor: Any, layout: Any = None, morphable: Any = "synthetic", detector: str | None = None,
                 icp_backend: str = "open3d", icp_method: str = "point_to_plane", crop_config: Any = None) -> None:
        from prnet_keras.evaluate.icp import usable_backend
        from prnet_keras.geometry import CropConfig

        self.predictor = predictor
        self.layout = layout if layout is not None else getattr(predictor, "layout", None)
        if self.layout is None:
            raise PRNetError("server: the predictor has no UV layout; pass one")
        self.detector = detector
        self.icp_backend = usable_backend(icp_backend)
        self.icp_method = icp_method
        if crop_config is None:
            crop_config = getattr(predictor, "crop_config", None)
        self.crop_config = CropConfig.coerce(crop_config)
        self._morphable_spec = morphable
        self._morphable = None if isinstance(morphable, (str, type(None))) else morphable
        self._lock = threading.Lock()

    # ---- reconstruction ---------------------------------------------------------------------
    def reconstruct(self, image: np.ndarray, field: str, max_faces: int, boxes: Any = None,
                    landmarks: Any = None) -> list[Any]:
        """Faces in ``image`` (detector, given boxes, or given 68-point landmarks), at most ``max_faces``."""
        kwargs: dict[str, Any] = {}
        if boxes is not None:
            kwargs["boxes"] = boxes
        if landmarks is not None:
            kwargs["landmarks"] = landmarks
        if boxes is None and landmarks is None and self.detector:
            kwargs["detector"] = self.detector
        try:
            faces = list(self.predictor.predict(image, **kwargs))
        except PRNetError as exc:
            raise ApiError(422, "invalid_input", f"{field}: {exc}", field) from None
        return faces[:max_faces]

    # ---- ground truth -----------------------------------------------------------------------
    @property
    def morphable(self) -> Any:
        with self._lock:
            if self._morphable is None:
                from prnet_keras.geometry import load_morphable_model

                spec = self._morphable_spec or "synthetic"
                self._morphable = load_morphable_model(spec)
            return self._morphable

    def _ground_truth(self, image: np.ndarray, mat: dict, field: str) -> dict[str, Any]:
        """``data.gt.make_ground_truth`` of a fit ``.mat`` (Pose_Para, Shape_Para, Exp_Para), errors as 422."""
        from prnet_keras.data.gt import make_ground_truth

        missing = [k for k in ("Pose_Para", "Shape_Para", "Exp_Para") if k not in mat]
        if missing:
            raise ApiError(422, "invalid_mat", f"{field}: fit .mat lacks {', '.join(missing)}", field)
        try:
            return make_ground_truth(self.morphable, self.layout, image, mat, crop_config=self.crop_config)
        except PRNetError as exc:
            raise ApiError(422, "invalid_mat", f"{field}: {exc}", field) from None
        except (ValueError, IndexError, TypeError) as exc:  # malformed arrays deep in the fit maths
            raise ApiError(422, "invalid_mat", f"{field}: cannot use this fit ({exc.__class__.__name__}: {exc})",
                           field) from None

    def ground_truth_face(self, image: np.ndarray, mat: dict, field: str) -> Any:
        """The ground-truth ``Face`` of a fit ``.mat``: its position map read through the server's layout."""
        from prnet_keras.inference.postprocess import face_from_position_map

        gt = self._ground_truth(image, mat, field)
        return face_from_position_map(gt["position_map"], gt["transform"], self.layout, image)

    def landmarks_for_fit(self, image: np.ndarray, mat: dict, field: str) -> np.ndarray:
        """68 landmarks (68, 2|3) that place the crop of a given fit (for /predict with mats).

        ``pt3d_68`` / a 68-point ``pt2d`` when present, else the fit's projected model
        keypoints (``kpt68``), which do not depend on the UV layout.
        """
        pts = fit_landmarks(mat, field)
        if pts is not None:
            return pts
        return np.asarray(self._ground_truth(image, mat, field)["kpt68"], np.float64)

    def reference_mesh(self, image: np.ndarray, mat: dict, field: str, max_vertices: int) -> Mesh:
        """Ground truth for /evaluate: a mesh .mat as is (at most ``max_vertices``), or the mesh of a fit .mat."""
        if "vertices" in mat:
            return mesh_from_mat(mat, image.shape[0], field, max_vertices)
        return face_mesh(self.ground_truth_face(image, mat, field))

    def evaluate(self, gt: Mesh, pred: Mesh) -> list[float | None]:
        from prnet_keras.server.scoring import evaluate_meshes

        try:
            return evaluate_meshes(gt, pred, self.icp_backend, self.icp_method)
        except PRNetError as exc:
            raise ApiError(422, "invalid_mat", f"evaluation: {exc}", None) from None

    def info(self) -> dict[str, Any]:
        """What GET /v1/info reports about the model side: UV layout, detection settings as the
        predictor holds them, the crop rules, the morphable model and the ICP."""
        lay = self.layout
        p = self.predictor
        detector = self.detector or getattr(p, "detector", None)
        return {
            "uv_layout": {
                "resolution": int(lay.resolution), "n_vertices": int(lay.n_vertices),
                "n_triangles": int(len(lay.triangles)), "hash": lay.hash(), "source": str(lay.source),
            },
            "detector": detector if isinstance(detector, str) or detector is None else "custom",
            "inference": {
                "detector": detector if isinstance(detector, str) or detector is None else "custom",
                "min_confidence": getattr(p, "min_confidence", None),
                "min_face_size": getattr(p, "min_face_size", None),
            },
            "crop": self.crop_config.to_dict(),
            "morphable_model": self._morphable_spec if isinstance(self._morphable_spec, str) else "custom",
            "icp_backend": self.icp_backend,
            "icp_method": self.icp_method,
        }


class ResponseBudget:
    """Bytes an answer may still grow by (meshes are megabytes each); 413 past ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = int(limit), 0

    def take(self, nbytes: int, field: str | None) -> None:
        self.used += int(nbytes)
        if self.used > self.limit:
            raise ApiError(413, "response_too_large", f"the answer would exceed {self.limit} bytes; ask for fewer "
                           "faces, images or mesh outputs per request", field)

    def b64(self, data: bytes, field: str | None) -> str:
        """``data`` as base64 text, counted against the budget first."""
        self.take((len(data) + 2) // 3 * 4, field)
        return encode_base64(data)


def as_list(value: Any, field: str, limit: int, what: str) -> Sequence:
    if not isinstance(value, list):
        raise ApiError(422, "invalid_field", f"{field}: expected a list of {what}", field)
    if len(value) > limit:
        raise ApiError(413, "too_many", f"{field}: {len(value)} {what}, the limit is {limit}", field)
    return value
