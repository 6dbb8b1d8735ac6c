"""The Predictor: image(s) -> detected faces -> one batched network call -> :class:`Face` objects.

The network is anything that maps (B, R, R, 3) float32 crops in [0, 1] to (B, R, R, 3)
position maps in *crop pixels*: a ``model.io.Network`` (``.predict`` and ``.layout``), a
bare ``keras.Model`` (wrapped in a Network here: folded, run by ``model.engines``, sigmoid × LABEL_SCALE), or any
callable — e.g. one returning ground-truth maps, which is how the tests pin every
coordinate convention without a trained model.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np

from prnet_keras.cancel import check_cancelled
from prnet_keras.errors import InputError
from prnet_keras.geometry import CropConfig, UVLayout, crop_transform
from prnet_keras.inference.detect import (
    Detection, crop_square, detections_from_boxes, detections_from_landmarks, detector_engine, get_detector,
)
from prnet_keras.inference.images import load_image, to_rgb_uint8
from prnet_keras.inference.postprocess import Face, face_from_position_map


def _is_keras_model(obj: Any) -> bool:
    return any(c.__module__.split(".")[0] == "keras" and c.__name__ in ("Model", "Functional", "Sequential")
               for c in type(obj).__mro__)


class Predictor:
    """Face reconstruction from images.

    network: ``Network`` | ``keras.Model`` | callable ``crops (B,R,R,3) [0,1] -> maps (B,R,R,3) crop px``.
    layout: the UV layout; taken from ``network.layout`` when omitted.
    batch_size: crops per network call (all faces of all images are batched, then chunked).
    detector: default detector name ("mtcnn" | "opencv" | "dlib") or a callable image -> detections.
    min_confidence, min_face_size: MTCNN score threshold and smallest face searched in pixels
        (MTCNN and OpenCV).
    crop_config: the crop rules (``geometry.CropConfig`` or a ``crop`` section mapping; None:
        the packaged defaults).
    fold_bn: a bare keras.Model predicts through a copy with batch norm folded into its
        convolutions, made here (``model.fold``; faster, same outputs within float32
        rounding). The copy does not follow later training of the model: pass False, or
        make a new Predictor, to predict with a model that is still changing.
    engine: what runs a bare keras.Model: "auto" | "keras" | "openvino" | "openvino-int8"
        (``model.engines``). An OpenVINO copy never follows later training.

    The defaults are the packaged ``inference`` and ``crop`` sections; entry points pass the
    values of the resolved configuration.
    """

    def __init__(
        self,
        network: Any,
        layout: UVLayout | None = None,
        batch_size: int = 16,
        detector: str | Callable = "mtcnn",
        min_confidence: float = 0.9,
        min_face_size: int = 40,
        crop_config: CropConfig | Mapping[str, Any] | None = None,
        fold_bn: bool = True,
        engine: str = "auto",
    ) -> None:
        layout = layout if layout is not None else getattr(network, "layout", None)
        if not isinstance(layout, UVLayout):
            raise InputError("Predictor: a UV layout is required (pass layout= or a network with .layout)")
        if batch_size < 1:
            raise InputError(f"batch_size: expected >= 1, got {batch_size}")
        self.layout = layout
        self.network = network
        self.batch_size = int(batch_size)
        self.detector = detector
        self.min_confidence = float(min_confidence)
        self.min_face_size = int(min_face_size)
        self.crop_config = CropConfig.coerce(crop_config)
        if _is_keras_model(network):
            from prnet_keras.model.engines import keras_forward
            from prnet_keras.model.fold import fold_batch_norm  # keras is loaded: a keras.Model was given
            from prnet_keras.model.io import Network

            if tuple(network.input_shape[1:]) != (layout.resolution, layout.resolution, 3):
                raise InputError(f"Predictor: {network.name} takes input {network.input_shape}, the UV layout "
                                 f"needs (None, {layout.resolution}, {layout.resolution}, 3)")
            net = fold_batch_norm(network) if fold_bn else network
            forward, used = keras_forward(net, engine)
            network = Network(name=network.name, kind="keras", layout=layout, forward=forward,
                              resolution=layout.resolution, model=network, batch_size=self.batch_size, engine=used)
        self.engine: str = getattr(network, "engine", "") or "callable"  # what runs the network
        self.detector_engine = detector_engine(engine)  # what runs MTCNN's networks
        if hasattr(network, "predict") and hasattr(network, "layout"):
            self._forward = network.predict  # model.io.Network: already crop pixels
        elif callable(network):
            self._forward = network
        else:
            raise InputError(f"Predictor: network must be a Network, keras.Model or callable, "
                             f"got {type(network).__name__}")
        self.last_timings: dict[str, float] = {}

    @classmethod
    def from_path(cls, model_path: str | os.PathLike, uv_data: str | os.PathLike | None = None,
                  **kwargs: Any) -> "Predictor":
        """Load a ``.keras`` file, SavedModel folder or official checkpoint prefix (``model.io.load_network``)."""
        from prnet_keras.model.io import load_network

        network = load_network(model_path, uv_data=uv_data, engine=kwargs.pop("engine", "auto"),
                               calibration=kwargs.pop("calibration", None), log=kwargs.pop("log", None))
        return cls(network, **kwargs)

    # ---- pieces -----------------------------------------------------------------------------
    def detect(self, image_rgb: np.ndarray, detector: str | Callable | None = None) -> list[Detection]:
        """Run a detector on an RGB uint8 image."""
        det = get_detector(detector or self.detector, self.min_confidence, self.min_face_size, self.detector_engine)
        return list(det(image_rgb))

    def crop(self, image_rgb: np.ndarray, detection: Detection) -> tuple[np.ndarray, np.ndarray]:
        """(crop (R, R, 3) uint8, T (3, 3) image→crop) for one detection; bilinear, border 0."""
        centre, size = crop_square(detection, self.crop_config)
        r = self.layout.resolution
        t = crop_transform(centre, size, r)
        crop = cv2.warpAffine(image_rgb, t[:2], (r, r), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0)
        return crop, t

    def run_network(self, crops: np.ndarray) -> np.ndarray:
        """(B, R, R, 3) uint8 crops -> (B, R, R, 3) float32 crop-pixel maps, in chunks of batch_size."""
        r = self.layout.resolution
        out = np.empty((len(crops), r, r, 3), np.float32)
        for i in range(0, len(crops), self.batch_size):
            x = np.asarray(crops[i:i + self.batch_size], np.float32) / np.float32(255.0)
            y = np.asarray(self._forward(x), np.float32)
            if y.shape != x.shape:
                raise InputError(f"network output: expected shape {x.shape}, got {y.shape}")
            out[i:i + len(x)] = y
        return out

    # ---- main entry points ------------------------------------------------------------------
    def predict(
        self,
        image: np.ndarray | str | os.PathLike,
        boxes: np.ndarray | Sequence | None = None,
        landmarks: np.ndarray | Sequence | None = None,
        detector: str | Callable | None = None,
        color_order: str = "rgb",
    ) -> list[Face]:
        """All faces of one image.

        image: path or array (RGB by default; ``color_order="bgr"`` for OpenCV arrays; gray,
        RGBA, uint16 and float accepted). boxes: (K, 4) [left, top, right, bottom] pixels;
        landmarks: (68, 2|3) or (K, 68, 2|3) pixels; else the detector finds the faces.
        Returns faces sorted as detected (MTCNN: most confident first); [] when none.
        """
        return self.predict_batch([image], None if boxes is None else [boxes],
                                  None if landmarks is None else [landmarks], detector, color_order)[0]

    def predict_batch(
        self,
        images: Sequence[np.ndarray | str | os.PathLike],
        boxes: Sequence | None = None,
        landmarks: Sequence | None = None,
        detector: str | Callable | None = None,
        color_order: str = "rgb",
    ) -> list[list[Face]]:
        """Faces of many images; every face of every image goes through the network together.

        boxes / landmarks: None or one entry per image (each None or as in :meth:`predict`).
        Timings (seconds) of the last call are in ``self.last_timings``.
        """
        for name, arg in (("boxes", boxes), ("landmarks", landmarks)):
            if arg is not None and len(arg) != len(images):
                raise InputError(f"{name}: expected one entry per image ({len(images)}), got {len(arg)}")
        timings = {"load": 0.0, "detect": 0.0, "crop": 0.0, "network": 0.0, "postprocess": 0.0}
        t0 = time.perf_counter()
        rgb = [self._as_rgb(im, color_order, i) for i, im in enumerate(images)]
        timings["load"] = time.perf_counter() - t0
        dets_per_image: list[list[Detection]] = []
        for i, img in enumerate(rgb):
            check_cancelled()  # stops here once a server request is cancelled (no-op elsewhere)
            t0 = time.perf_counter()
            if landmarks is not None and landmarks[i] is not None:
                dets = detections_from_landmarks(landmarks[i], img.shape)
            elif boxes is not None and boxes[i] is not None:
                dets = detections_from_boxes(boxes[i], img.shape)
            else:
                dets = self.detect(img, detector)
            dets_per_image.append(dets)
            timings["detect"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        owners, crops, transforms = [], [], []
        for i, (img, dets) in enumerate(zip(rgb, dets_per_image)):
            for d in dets:
                c, t = self.crop(img, d)
                owners.append((i, d))
                crops.append(c)
                transforms.append(t)
        timings["crop"] = time.perf_counter() - t0
        check_cancelled()
        t0 = time.perf_counter()
        maps = self.run_network(np.stack(crops)) if crops else np.empty((0,))
        timings["network"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        out: list[list[Face]] = [[] for _ in rgb]
        for (i, d), pm, t in zip(owners, maps, transforms):
            check_cancelled()
            out[i].append(face_from_position_map(pm, t, self.layout, rgb[i], detection=d))
        timings["postprocess"] = time.perf_counter() - t0
        self.last_timings = timings
        return out

    @staticmethod
    def _as_rgb(image: Any, color_order: str, index: int) -> np.ndarray:
        if isinstance(image, (str, os.PathLike)):
            return load_image(image)
        return to_rgb_uint8(image, color_order, name=f"image {index}")
