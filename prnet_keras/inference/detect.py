"""Face detection and the crop square each detection gives (docs/conventions.md, crops).

Detectors return :class:`Detection` objects in image pixels (x right, y down). The crop
square is derived by :func:`crop_square`:

* given boxes: centre of the box, size 1.6 × mean side (official PRNet);
* ``mtcnn`` / ``opencv`` / ``dlib`` boxes: centre moved down ``<kind>_center_shift`` × mean
  side, size ``<kind>_box_scale`` × mean side (``geometry.CropConfig``): dlib's are the official
  PRNet values; MTCNN's (0.16, 1.36) and OpenCV's (0.15, 1.2) were measured on real annotated
  photos (``inference.crop_calibration``) so the crop matches the keypoint-based training crop
  (with a centred 1.6 box an MTCNN crop sat 12 % of its side too high and 19 % too large);
* given 68 landmarks: the training crop (1.5 × keypoint box, no jitter) so the crop matches
  the training distribution exactly.

MTCNN (``mtcnn`` 1.0, weights shipped in the wheel, offline) is the default and finds all
faces above a confidence threshold; OpenCV's Haar cascade is the dependency-free fallback;
dlib is used when installed.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from prnet_keras.errors import InputError
from prnet_keras.geometry import CropConfig, detector_crop, training_crop

DETECTORS = ("mtcnn", "opencv", "dlib", "none")


@dataclasses.dataclass
class Detection:
    """One face: box (4,) float64 [left, top, right, bottom] image pixels; score in [0, 1] or None.

    kind: "mtcnn" | "opencv" | "dlib" | "box" (given by the user) | "landmarks" (given 68 points,
    then ``landmarks`` holds them as (68, 2|3)). ``landmarks5`` (5, 2) for MTCNN (eyes, nose,
    mouth corners).
    """

    box: np.ndarray
    score: float | None = None
    kind: str = "box"
    landmarks: np.ndarray | None = None
    landmarks5: np.ndarray | None = None

    def to_dict(self) -> dict:
        out = {"box_ltrb": [float(v) for v in self.box], "score": None if self.score is None else float(self.score),
               "kind": self.kind}
        if self.landmarks5 is not None:
            out["landmarks5"] = np.asarray(self.landmarks5, float).tolist()
        return out


def crop_square(det: Detection, crop_config: CropConfig | Mapping[str, Any] | None = None) -> tuple[np.ndarray, float]:
    """(centre (2,), size) of the square crop for one detection, per the rules above, with the
    scales of ``crop_config`` (``geometry.CropConfig``; None: the packaged defaults)."""
    cfg = CropConfig.coerce(crop_config)
    if det.kind == "landmarks" and det.landmarks is not None:
        return training_crop(det.landmarks[:, :2], rng=None, scale=cfg.train_scale)
    if det.kind in ("dlib", "mtcnn", "opencv"):
        return detector_crop(det.box, scale=getattr(cfg, f"{det.kind}_box_scale"),
                             center_shift=getattr(cfg, f"{det.kind}_center_shift"))
    return detector_crop(det.box, scale=cfg.detector_box_scale)


class FaceDetector(Protocol):
    def __call__(self, image_rgb: np.ndarray) -> list[Detection]: ...


def _scale_pyramid(width: int, height: int, min_face_size: float, scale_factor: float,
                   min_size: int = 12) -> np.ndarray:
    """MTCNN image-pyramid scales: m·f^k for every k whose scaled image still holds PNet's
    ``min_size`` window, m = min_size / min_face_size.

    Replaces mtcnn 1.0's ``build_scale_pyramid``, which counts the levels as if
    min_face_size were 20: for larger values its last levels are smaller than the window,
    PNet fails on them and the whole detection returns no face. For 20 both agree.
    """
    m = min_size / float(min_face_size)
    side = min(width, height) * m
    if side < min_size:
        return np.zeros(0)
    count = int(np.floor(np.log(min_size / side) / np.log(scale_factor) + 1e-9)) + 1
    return m * scale_factor ** np.arange(count)


class MTCNNDetector:
    """MTCNN (``mtcnn`` package: its weights and box maths); keeps faces with confidence >= ``min_confidence``.

    min_face_size: smallest face searched, pixels of the input image (>= 12; larger is
    faster: the pyramid starts at 12 / min_face_size);
    max_side: images larger than this are downscaled for the search (None: never);
    engine: what runs the three networks (``inference.mtcnn_stages``): "auto" (OpenVINO when it
    can run here, else TensorFlow graphs), "openvino", "keras" (TensorFlow graphs), or
    "package" (mtcnn's own ``detect_faces``, eager TensorFlow: the reference, ~10x slower).
    ``self.engine`` says which one runs.
    """

    def __init__(self, min_confidence: float = 0.9, min_face_size: int = 40, max_side: int | None = 1280,
                 engine: str = "auto") -> None:
        try:
            from mtcnn import MTCNN
        except ImportError:  # pragma: no cover - listed in requirements.txt
            raise InputError("detector 'mtcnn': the mtcnn package is not installed (pip install mtcnn)") from None
        if int(min_face_size) < 12:
            raise InputError(f"min_face_size: expected >= 12 pixels (MTCNN's 12-pixel window), got {min_face_size}")
        from prnet_keras.inference import mtcnn_stages

        found = None if engine == "package" else mtcnn_stages.stage_forwards(engine)
        if found is None:  # asked for, or the package's internals changed: its own driver
            self._forwards, self.engine, self._mtcnn = None, "package", MTCNN()
        else:
            (self._forwards, self.engine), self._mtcnn = found, None
        self.min_confidence = float(min_confidence)
        self.min_face_size = int(min_face_size)
        self.max_side = max_side
        self._lock = threading.Lock()  # one inference request per network: calls take turns

    def _rows(self, image_rgb: np.ndarray, min_face: float) -> np.ndarray:
        """(N, 16) rows [image id, x1, y1, x2, y2, score, 5 x, 5 y] (``mtcnn_stages.detect``)."""
        if self._forwards is None:
            with self._lock:
                return self._mtcnn.detect_faces(image_rgb, box_format="xyxy", output_type="numpy",
                                                min_face_size=min_face).reshape(-1, 16)
        from prnet_keras.inference.mtcnn_stages import detect

        h, w = image_rgb.shape[:2]
        image = image_rgb if image_rgb.dtype == np.uint8 else np.clip(np.rint(image_rgb), 0, 255).astype(np.uint8)
        with self._lock:
            return detect(np.ascontiguousarray(image[..., :3]), self._forwards, _scale_pyramid(w, h, min_face, 0.709))

    def __call__(self, image_rgb: np.ndarray) -> list[Detection]:
        # Big photos are searched at most max_side pixels wide (the image pyramid's cost grows
        # with the area); boxes and points are scaled back to the full image.
        image_rgb, scale = _downscaled(image_rgb, self.max_side)
        min_face = self.min_face_size if scale == 1.0 else max(12.0, self.min_face_size * scale)
        if min(image_rgb.shape[:2]) < min_face:
            return []  # no face of min_face_size fits
        out = []
        for row in self._rows(image_rgb, min_face):
            if row[5] < self.min_confidence:
                continue
            # whole pixels, as the mtcnn package reports them
            box = np.rint(row[1:5]).astype(np.float64) / scale
            lm5 = np.rint(np.stack([row[6:11], row[11:16]], axis=1)).astype(np.float64) / scale
            out.append(Detection(box, float(row[5]), "mtcnn", None, lm5))
        return sorted(out, key=lambda d: -(d.score or 0.0))


def _downscaled(image_rgb: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """(image at most ``max_side`` pixels on its long side, scale applied); the search cost of
    a detector grows with the area, faces are found as well at that size."""
    h, w = image_rgb.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return image_rgb, 1.0
    import cv2

    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image_rgb, size, interpolation=cv2.INTER_AREA), scale


class OpenCVDetector:
    """OpenCV Haar cascade (frontal faces, shipped with opencv); no scores (None).

    min_face_size: smallest face searched, pixels (the cascade's ``minSize``, in the
    original image). ``CascadeClassifier`` is not thread-safe (concurrent ``detectMultiScale``
    calls on one object corrupt its scale data, then memory): each thread gets its own,
    loaded from the same XML. Images larger than ``max_side`` are searched downscaled.
    """

    def __init__(self, min_face_size: int = 40, max_side: int | None = 1280) -> None:
        import cv2

        # OpenCV 5 moved the Haar cascades (class and XML files) out of the main wheel.
        folder = getattr(getattr(cv2, "data", None), "haarcascades", "")
        path = os.path.join(folder, "haarcascade_frontalface_default.xml")
        if not hasattr(cv2, "CascadeClassifier") or not os.path.isfile(path):
            raise InputError(
                f"detector 'opencv': this OpenCV {cv2.__version__} has no Haar cascades "
                "(removed in OpenCV 5; install opencv-python-headless<5); use --detector mtcnn"
            )
        if int(min_face_size) < 1:
            raise InputError(f"min_face_size: expected >= 1 pixel, got {min_face_size}")
        self._path = path
        self._local = threading.local()
        self._cascade()  # fail here, not in a request, when the XML does not load
        self.min_face_size = int(min_face_size)
        self.max_side = max_side

    def _cascade(self):
        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            import cv2

            cascade = cv2.CascadeClassifier(self._path)
            if cascade.empty():  # pragma: no cover - broken opencv install
                raise InputError(f"detector 'opencv': cannot load the Haar cascade {self._path}")
            self._local.cascade = cascade
        return cascade

    def __call__(self, image_rgb: np.ndarray) -> list[Detection]:
        import cv2

        small, scale = _downscaled(image_rgb, self.max_side)
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        min_size = max(8, round(self.min_face_size * scale))
        rects = self._cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_size,) * 2)
        boxes = [np.array([x, y, x + w, y + h], np.float64) / scale for x, y, w, h in np.asarray(rects).reshape(-1, 4)]
        boxes.sort(key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))
        return [Detection(b, None, "opencv") for b in boxes]


class DlibDetector:
    """dlib's HOG frontal face detector, when the ``dlib`` package is installed (one per thread:
    dlib documents its detectors as not thread-safe)."""

    def __init__(self, max_side: int | None = 1280) -> None:
        try:
            import dlib
        except ImportError:
            raise InputError(
                "detector 'dlib': the dlib package is not installed (pip install dlib); use mtcnn or opencv instead"
            ) from None
        self._dlib = dlib
        self._local = threading.local()
        self.max_side = max_side

    def __call__(self, image_rgb: np.ndarray) -> list[Detection]:
        detector = getattr(self._local, "detector", None)
        if detector is None:
            detector = self._local.detector = self._dlib.get_frontal_face_detector()
        small, scale = _downscaled(image_rgb, self.max_side)
        rects = detector(small, 1)
        return [Detection(np.array([r.left(), r.top(), r.right(), r.bottom()], np.float64) / scale, None, "dlib")
                for r in rects]


def detector_engine(network_engine: str) -> str:
    """What runs MTCNN's networks for a requested network engine: OpenVINO when it can run here
    ("auto"), unless Keras was asked for explicitly (then TensorFlow graphs)."""
    return "keras" if network_engine == "keras" else "auto"


_CACHE: dict[tuple, Callable] = {}
_CACHE_LOCK = threading.Lock()


def get_detector(name: str | Callable, min_confidence: float = 0.9, min_face_size: int = 40,
                 engine: str = "auto") -> FaceDetector:
    """A detector by name ("mtcnn", "opencv", "dlib"), cached per process; callables pass through.

    ``min_confidence``: MTCNN score threshold; ``min_face_size``: smallest face searched in
    pixels (MTCNN and OpenCV); ``engine``: what runs MTCNN's networks (:class:`MTCNNDetector`).
    Defaults: the packaged ``inference`` section.
    """
    if callable(name):
        return name
    if name not in DETECTORS or name == "none":
        raise InputError(f"detector: expected one of mtcnn, opencv, dlib, got {name!r}")
    key = {"mtcnn": (name, float(min_confidence), int(min_face_size), engine),
           "opencv": (name, int(min_face_size))}.get(name, (name,))
    with _CACHE_LOCK:
        if key not in _CACHE:
            if name == "mtcnn":
                _CACHE[key] = MTCNNDetector(min_confidence, int(min_face_size), engine=engine)
            elif name == "opencv":
                _CACHE[key] = OpenCVDetector(int(min_face_size))
            else:
                _CACHE[key] = DlibDetector()
        return _CACHE[key]


# Given boxes and landmarks may reach past the image (a face at its border) by this many
# image sizes, no further: beyond, the crop would be mostly outside and its maths degenerate.
COORD_MARGIN = 1.0
MIN_BOX_PX = 2.0


def _check_in_image(lo: np.ndarray, hi: np.ndarray, image_shape: tuple[int, ...], what: str, field: str) -> None:
    h, w = image_shape[:2]
    m = COORD_MARGIN
    if np.any(lo < [-m * w, -m * h]) or np.any(hi > [(1 + m) * w, (1 + m) * h]):
        raise InputError(f"{field}: {what} reaches x {lo[0]:.6g}..{hi[0]:.6g}, y {lo[1]:.6g}..{hi[1]:.6g}, too far "
                         f"outside the {w}x{h} image (at most {m:g} image size beyond each border)")
    if hi[0] < 0 or hi[1] < 0 or lo[0] > w - 1 or lo[1] > h - 1:
        raise InputError(f"{field}: {what} lies outside the {w}x{h} image")
    if min(hi[0] - lo[0], hi[1] - lo[1]) < MIN_BOX_PX:
        raise InputError(f"{field}: {what} is smaller than {MIN_BOX_PX:g} pixels")


def detections_from_boxes(boxes: np.ndarray | list, image_shape: tuple[int, ...]) -> list[Detection]:
    """User boxes (K, 4) [left, top, right, bottom] -> detections; validated against the image
    (finite, right > left, bottom > top, at least MIN_BOX_PX, within COORD_MARGIN of it)."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4 or not np.all(np.isfinite(b)):
        raise InputError(f"boxes: expected (K, 4) finite [left, top, right, bottom] values, got shape {b.shape}")
    for box in b:
        l, t, r, bt = box
        if r <= l or bt <= t:
            raise InputError(f"boxes: box {box.tolist()} has right <= left or bottom <= top")
        _check_in_image(box[:2], box[2:], image_shape, f"box {box.tolist()}", "boxes")
    return [Detection(box.copy(), None, "box") for box in b]


def detections_from_landmarks(landmarks: np.ndarray | list,
                              image_shape: tuple[int, ...] | None = None) -> list[Detection]:
    """Given landmarks (68, 2|3) or (K, 68, 2|3) (also (2|3, 68) per face) -> detections;
    with ``image_shape`` validated against the image like boxes."""
    a = np.asarray(landmarks, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim == 3 and a.shape[1] in (2, 3) and a.shape[2] == 68:
        a = a.transpose(0, 2, 1)  # the .mat layout (2|3, 68)
    if a.ndim != 3 or a.shape[1] != 68 or a.shape[2] not in (2, 3) or not np.all(np.isfinite(a)):
        raise InputError(f"landmarks: expected (68, 2|3) or (K, 68, 2|3) finite points, "
                         f"got shape {np.shape(landmarks)}")
    out = []
    for i, k in enumerate(a):
        lo, hi = k[:, :2].min(0), k[:, :2].max(0)
        if image_shape is not None:
            _check_in_image(lo, hi, image_shape, f"face {i}'s 68 points", "landmarks")
        out.append(Detection(np.array([lo[0], lo[1], hi[0], hi[1]]), None, "landmarks", k.copy()))
    return out
