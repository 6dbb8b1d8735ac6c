"""Face tracking over video frames: detect rarely, crop each frame from the previous landmarks.

:class:`FaceTracker` keeps one :class:`Track` per face, each with a stable integer id:

* The detector runs on the first frame, while no face is tracked, every ``redetect_every``
  frames (to pick up faces that enter the picture) and on any frame where a track was lost.
  Its boxes are matched to the tracks by IoU with each track's predicted landmark box; an
  unmatched box starts a new track (new id).
* Every other frame, a track's crop is the training crop (1.5 × the landmark box, the
  distribution the network was trained on) of its previous 68 landmarks moved by the
  face's last motion (constant velocity), so a moving face stays centred in its crop.
* All crops of a frame go through the network in one batch.
* A track is *lost* (dropped; the detector runs again on the same frame) when its quality
  fails (``FaceTracker.quality``): the predicted landmark box collapses or blows up relative
  to its crop (ratio outside 0.3-1.2 of the expected 1/1.5), drifts off the crop's centre by
  more than a third of the crop, or the face's appearance no longer resembles the previous
  frame's (normalised cross-correlation of 32 × 32 grey thumbnails of the landmark box below
  ``min_similarity``: a cut to another shot, or the face has left and the network
  hallucinates one on the background).
* Two tracks whose landmark boxes overlap by IoU > 0.7 have converged on one face: the
  younger one is dropped.

Smoothing (``smoothing``: :class:`~prnet_keras.inference.smoothing.OneEuroParams`, None = off)
filters each track's image-frame position map with a One Euro filter (speeds in crop sizes
per second). The mesh, the 68 landmarks and the pose all derive from that one map, so they
stay consistent with each other; crops always follow the unsmoothed landmarks (no lag).
The pose of a tracked face is fitted on every 8th face pixel (``POSE_STRIDE``) for speed.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import cv2
import numpy as np

from prnet_keras.geometry.crop import apply_transform
from prnet_keras.inference.detect import Detection
from prnet_keras.inference.postprocess import Face, estimate_pose, face_from_position_map
from prnet_keras.inference.smoothing import OneEuroFilter, OneEuroParams

THUMB = 32
DEFAULT_SMOOTHING = OneEuroParams()
POSE_STRIDE = 8
EXPECTED_BOX_RATIO = 1.0 / 1.5  # landmark box side / crop side for a training crop


@dataclasses.dataclass
class TrackedFace:
    """One face of one frame: ``id`` stable across frames; ``detected``: its crop came from the
    detector on this frame (else from the previous landmarks); ``similarity``: appearance
    agreement with the previous frame (1 for a new track)."""

    id: int
    face: Face
    detected: bool
    similarity: float


@dataclasses.dataclass(eq=False)
class Track:
    id: int
    keypoints: np.ndarray  # (68, 3) unsmoothed, image frame
    velocity: np.ndarray  # (2,) pixels per frame of the landmark box centre
    thumb: np.ndarray  # (THUMB, THUMB) float32, zero mean unit norm
    age: int = 0
    filter: OneEuroFilter | None = None

    def predicted_keypoints(self) -> np.ndarray:
        k = self.keypoints.copy()
        k[:, :2] += self.velocity
        return k


def _box(points: np.ndarray) -> np.ndarray:
    lo, hi = points[:, :2].min(0), points[:, :2].max(0)
    return np.array([lo[0], lo[1], hi[0], hi[1]], np.float64)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two [left, top, right, bottom] boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def thumbnail(gray: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(THUMB, THUMB) float32 of ``box`` in a grey image (bilinear, border replicated), zero mean
    and unit norm (so a dot product is the normalised cross-correlation); zeros when flat."""
    l, t, r, b = box
    sx, sy = (r - l) / THUMB, (b - t) / THUMB
    m = np.array([[sx, 0, l + 0.5 * sx - 0.5], [0, sy, t + 0.5 * sy - 0.5]], np.float64)
    th = cv2.warpAffine(gray, m, (THUMB, THUMB), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    th -= th.mean()
    n = float(np.linalg.norm(th))
    return th / n if n > 1e-3 * THUMB else np.zeros_like(th)


class FaceTracker:
    """Tracks faces through consecutive frames (see module doc).

    predictor: an :class:`~prnet_keras.inference.predictor.Predictor` (its crop rule, network
    and layout); detector: callable RGB image -> list of Detection; redetect_every: frames
    between detector runs while faces are tracked (0: never, only when a track is lost);
    tracking: False crops every frame from a fresh detection (the per-frame baseline; ids
    are still kept by box overlap); smoothing: One Euro parameters or None; min_similarity:
    appearance threshold of the quality check; max_faces: most faces tracked at once.
    """

    def __init__(self, predictor, detector: Callable[[np.ndarray], list[Detection]], redetect_every: int = 10,
                 tracking: bool = True, smoothing: OneEuroParams | None = DEFAULT_SMOOTHING,
                 min_similarity: float = 0.4, max_faces: int = 16) -> None:
        self.predictor = predictor
        self.detector = detector
        self.redetect_every = max(0, int(redetect_every))
        self.tracking = tracking
        self.smoothing = smoothing
        self.min_similarity = float(min_similarity)
        self.max_faces = int(max_faces)
        self.tracks: list[Track] = []
        self._next_id = 0
        self._since_detect = 0
        self.stats = {"frames": 0, "detector_runs": 0, "lost": 0, "new_tracks": 0}

    def reset(self) -> None:
        self.tracks = []
        self._since_detect = 0

    # ---- one frame ---------------------------------------------------------------------------
    def update(self, frame_rgb: np.ndarray, t: float) -> list[TrackedFace]:
        """Faces of one frame (RGB uint8), ``t`` its time in seconds; sorted by id."""
        self.stats["frames"] += 1
        gray = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
        detect = (not self.tracking or not self.tracks
                  or (self.redetect_every > 0 and self._since_detect >= self.redetect_every))
        jobs = self._plan(frame_rgb, detect)
        out, lost = self._run(frame_rgb, gray, jobs)
        if lost and not detect:  # re-acquire on this same frame
            jobs = [j for j in self._plan(frame_rgb, True) if j[2]]  # new detections only
            more, _ = self._run(frame_rgb, gray, jobs)
            out += more
            detect = True
        self._since_detect = 0 if detect else self._since_detect + 1
        out = self._drop_duplicates(out)
        return [self._with_pose(self._smooth(tf, t)) for tf in sorted(out, key=lambda f: f.id)]

    def _with_pose(self, tf: TrackedFace) -> TrackedFace:
        """Fit the pose on every POSE_STRIDE-th face pixel (the similarity fit needs no 50k points:
        angles agree with the full fit within ~0.1°), sparing the whole mesh per frame."""
        face, layout = tf.face, tf.face.layout
        points = face.position_map.reshape(-1, 3)[layout.face_ind[::POSE_STRIDE]]
        face.__dict__["pose"] = estimate_pose(points, layout.canonical_vertices[::POSE_STRIDE], face.image_size[0])
        return tf

    def _plan(self, frame: np.ndarray, detect: bool) -> list[tuple[Track | None, Detection, bool]]:
        """(track or None for a new one, detection to crop from, crop came from the detector)."""
        jobs: list[tuple[Track | None, Detection, bool]] = []
        predicted = {id(tr): tr.predicted_keypoints() for tr in self.tracks}
        matched: dict[int, Detection] = {}
        fresh: list[Detection] = []
        if detect:
            self.stats["detector_runs"] += 1
            dets = list(self.detector(frame))
            pairs = sorted(((iou(d.box, _box(predicted[id(tr)])), i, k) for i, d in enumerate(dets)
                            for k, tr in enumerate(self.tracks)), reverse=True)
            used_d, used_t = set(), set()
            for score, i, k in pairs:
                if score < 0.3:
                    break
                if i in used_d or k in used_t:
                    continue
                used_d.add(i)
                used_t.add(k)
                matched[k] = dets[i]
            fresh = [d for i, d in enumerate(dets) if i not in used_d]
        for k, tr in enumerate(self.tracks):
            if self.tracking:
                jobs.append((tr, Detection(_box(predicted[id(tr)]), None, "landmarks", predicted[id(tr)]), False))
            elif k in matched:
                jobs.append((tr, matched[k], True))
        room = self.max_faces - len(self.tracks)
        jobs += [(None, d, True) for d in fresh[:max(0, room)]]
        return jobs

    def _run(self, frame: np.ndarray, gray: np.ndarray, jobs) -> tuple[list[TrackedFace], bool]:
        if not self.tracking:  # tracks without a detection this frame end here
            kept = {id(j[0]) for j in jobs if j[0] is not None}
            self.tracks = [tr for tr in self.tracks if id(tr) in kept]
        if not jobs:
            return [], False
        crops, transforms = zip(*(self.predictor.crop(frame, det) for _, det, _ in jobs))
        maps = self.predictor.run_network(np.stack(crops))
        out: list[TrackedFace] = []
        lost = False
        for (tr, det, from_detector), pm, t in zip(jobs, maps, transforms):
            face = face_from_position_map(pm, t, self.predictor.layout, frame, detection=det)
            k = face.keypoints
            box = _box(k)
            thumb = thumbnail(gray, box)
            similarity = 1.0 if tr is None else float((thumb * tr.thumb).sum())
            if not self.quality(box, face.crop_box, similarity if tr is not None else 1.0):
                lost = True
                self.stats["lost"] += tr is not None
                if tr is not None:
                    self.tracks.remove(tr)
                continue
            if tr is None:
                tr = Track(self._next_id, k.copy(), np.zeros(2), thumb)
                self._next_id += 1
                self.stats["new_tracks"] += 1
                self.tracks.append(tr)
            else:
                step = (box[:2] + box[2:]) / 2 - (_box(tr.keypoints)[:2] + _box(tr.keypoints)[2:]) / 2
                tr.velocity = 0.5 * tr.velocity + 0.5 * step
                tr.keypoints, tr.thumb = k.copy(), thumb
                tr.age += 1
            out.append(TrackedFace(tr.id, face, from_detector, similarity))
        return out, lost

    def quality(self, box: np.ndarray, crop_box: tuple[float, float, float], similarity: float) -> bool:
        """True when a predicted face is trustworthy: landmark box size within 0.3-1.2 × the
        expected share of its crop, its centre within a third of the crop of the crop's centre,
        appearance similarity >= ``min_similarity``."""
        cx, cy, size = crop_box
        side = max(box[2] - box[0], box[3] - box[1])
        ratio = side / max(size, 1e-6) / EXPECTED_BOX_RATIO
        off = np.hypot((box[0] + box[2]) / 2 - cx, (box[1] + box[3]) / 2 - cy) / max(size, 1e-6)
        return bool(0.3 <= ratio <= 1.2 and off <= 1 / 3 and similarity >= self.min_similarity)

    def _drop_duplicates(self, faces: list[TrackedFace]) -> list[TrackedFace]:
        if len(faces) < 2:
            return faces
        by_id = {tr.id: tr for tr in self.tracks}
        order = sorted(faces, key=lambda f: -by_id[f.id].age if f.id in by_id else 0)  # oldest first
        kept: list[TrackedFace] = []
        for f in order:
            b = _box(f.face.keypoints)
            if any(iou(b, _box(g.face.keypoints)) > 0.7 for g in kept):
                self.tracks = [tr for tr in self.tracks if tr.id != f.id]
                continue
            kept.append(f)
        return kept

    def _smooth(self, tf: TrackedFace, t: float) -> TrackedFace:
        if self.smoothing is None:
            return tf
        tr = next((tr for tr in self.tracks if tr.id == tf.id), None)
        if tr is None:
            return tf
        if tr.filter is None:
            p = self.smoothing
            tr.filter = OneEuroFilter(p.min_cutoff, p.beta, p.d_cutoff)
        face = tf.face
        smoothed = tr.filter(face.position_map, t, speed_scale=face.crop_box[2])
        crop_map = apply_transform(smoothed.reshape(-1, 3), face.transform).reshape(smoothed.shape)
        new = Face(crop_map.astype(np.float32), smoothed, face.transform, face.crop_box, face.image_size,
                   face.layout, face.image, face.detection)
        return dataclasses.replace(tf, face=new)
