"""Stand-ins for the network and the detector on synthetic clips with known geometry.

``Oracle`` is the network: for each crop it returns the ground-truth position map of the
face nearest the crop's centre, pulled toward the network's prior (a face centred in a
training crop) by a fraction of the crop's misalignment — a real network is most accurate on
crops like its training crops. On a crop without a face it returns the prior. Set
``oracle.frame`` to the ClipFrame being processed (``oracle.follow(tracker, clip)`` does it
for a tracker driven by someone else, e.g. the CLI).

``TruthDetector`` returns the ground truth's landmark boxes, moved up and jittered like
MTCNN's boxes.
"""

from __future__ import annotations

import numpy as np

from prnet_keras.geometry import UVLayout, render_uv_map, uv_pixel_coords, vertices_to_crop
from prnet_keras.geometry.crop import apply_transform
from prnet_keras.inference import Predictor
from prnet_keras.inference.detect import Detection

PULL = 0.3  # share of the crop misalignment the oracle's output keeps


class Oracle:
    """Network + crop hook (see module doc); ``frame`` is set to the ClipFrame being processed."""

    def __init__(self, model, layout: UVLayout):
        self.model, self.layout = model, layout
        self.uv_px = uv_pixel_coords(model.uv_coords, layout.resolution)
        self.frame = None
        self.transforms: list[np.ndarray] = []
        r = layout.resolution
        self.prior = self._place(layout.canonical_vertices.astype(np.float64) * [1, -1, 1], r)

    def _place(self, v, r):
        """Canonical face (y down) as a crop map: landmark box = r / 1.5, centred."""
        kp = self._kpts_of_vertices(v)
        lo, hi = kp[:, :2].min(0), kp[:, :2].max(0)
        s = (r / 1.5) / max(hi - lo)
        out = np.zeros((r * r, 3), np.float32)
        p = (v - np.r_[(lo + hi) / 2, 0]) * s + np.r_[(r - 1) / 2, (r - 1) / 2, 0]
        p[:, 2] -= p[:, 2].min()
        out[self.layout.face_ind] = p
        return out.reshape(r, r, 3)

    def _kpts_of_vertices(self, v):
        idx = np.searchsorted(self.layout.face_ind, self.layout.kpt_flat)
        return v[np.clip(idx, 0, len(v) - 1)]

    def follow(self, tracker_cls, clip, monkeypatch) -> None:
        """Set ``frame`` from ``clip`` on every ``tracker_cls.update`` call (frame i on call i)."""
        update, count = tracker_cls.update, [0]

        def update_following(tracker, image, t):
            self.frame = clip[count[0]]
            count[0] += 1
            return update(tracker, image, t)

        monkeypatch.setattr(tracker_cls, "update", update_following)

    def wrap(self, predictor: Predictor) -> Predictor:
        crop = predictor.crop

        def recording_crop(image, det):
            c, t = crop(image, det)
            self.transforms.append(t)
            return c, t

        predictor.crop = recording_crop
        return predictor

    def __call__(self, x: np.ndarray) -> np.ndarray:
        r = self.layout.resolution
        out = []
        transforms, self.transforms = self.transforms[-len(x):], []
        for t in transforms:
            centre = np.array([(r - 1) / 2, (r - 1) / 2])
            best, best_d = None, r / 3
            for k, present in enumerate(self.frame.present):
                if not present:
                    continue
                kc = apply_transform(self.frame.keypoints[k][:, :2], t)
                d = np.linalg.norm((kc.min(0) + kc.max(0)) / 2 - centre)
                if d < best_d:
                    best, best_d = k, d
            if best is None:
                out.append(self.prior)
                continue
            gt = render_uv_map(self.uv_px, self.model.triangles, vertices_to_crop(self.frame.vertices[best], t), r)
            kc = apply_transform(self.frame.keypoints[best][:, :2], t)
            lo, hi = kc.min(0), kc.max(0)
            # pulled toward the prior: centre toward the crop centre, size toward r / 1.5
            shift = PULL * (centre - (lo + hi) / 2)
            scale = 1 + PULL * ((r / 1.5) / max(hi - lo) - 1)
            m = gt.copy()
            mid = (lo + hi) / 2
            m[..., :2] = (gt[..., :2] - mid) * scale + mid + shift
            m[..., 2] *= scale
            out.append(np.where(gt[..., 2:3] != 0, m, 0).astype(np.float32))
        return np.stack(out)


class TruthDetector:
    """Boxes from the ground-truth landmarks like MTCNN's: moved up 8 %, 3 % jitter."""

    def __init__(self, oracle: Oracle, seed: int = 0):
        self.oracle, self.rng, self.calls = oracle, np.random.default_rng(seed), 0

    def __call__(self, image):
        self.calls += 1
        f = self.oracle.frame
        out = []
        for k, present in enumerate(f.present):
            if present:
                kp = f.keypoints[k][:, :2]
                lo, hi = kp.min(0), kp.max(0)
                size = hi - lo
                box = np.r_[lo, hi] + np.r_[0, -0.08 * size[1], 0, -0.08 * size[1]]
                box = box + self.rng.normal(0, 0.03, 4) * np.r_[size, size]
                out.append(Detection(box, 0.99, "mtcnn"))
        return out
