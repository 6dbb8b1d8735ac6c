"""68 landmarks from a trained network, as a picklable source for ``data.fit_folder``.

``prnet-build-dataset fit --landmarks model:PATH`` fits the morphable model to what our own
network predicts: a detector finds the faces, the most confident one is reconstructed, and its
68 keypoints (image frame, (68, 3) with z) are the landmarks. The network is loaded lazily in
each process that calls it (spawned fit workers each load their own copy).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from prnet_keras.errors import InputError


class NetworkLandmarks:
    """``provider(image_rgb) -> (68, 3)`` float64 landmarks of the most confident face.

    model_path: a ``.keras`` file, SavedModel folder or official checkpoint prefix;
    detector: "mtcnn" | "opencv" | "dlib"; uv_data: the UV layout when the model file has none.
    Raises InputError("no face found") when the detector finds nothing.
    """

    def __init__(self, model_path: str | os.PathLike, detector: str = "mtcnn",
                 uv_data: str | os.PathLike | None = None) -> None:
        self.model_path = str(model_path)
        self.detector = detector
        self.uv_data = None if uv_data is None else str(uv_data)
        self.spec = f"model:{self.model_path}"
        self._predictor: Any = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_predictor": None}

    def _load(self) -> Any:
        if self._predictor is None:
            from prnet_keras.inference.predictor import Predictor

            self._predictor = Predictor.from_path(self.model_path, uv_data=self.uv_data, detector=self.detector)
        return self._predictor

    def check(self) -> None:
        """Load the network now (a bad path fails once, not once per image)."""
        self._load()

    def __call__(self, image_rgb: np.ndarray) -> np.ndarray:
        faces = self._load().predict(image_rgb)
        if not faces:
            raise InputError(f"no face found (detector {self.detector})")
        return np.asarray(faces[0].keypoints, np.float64)
