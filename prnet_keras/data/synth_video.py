"""Synthetic video clips with known per-frame geometry: a talking head, or two faces crossing.

Frames are rendered with the synthetic-data renderer (``data.synth_render``) on a fixed
cluttered background with fresh sensor noise per frame, so consecutive frames differ the
way camera frames do. The ground truth of every frame (68 landmarks, optionally the whole
posed mesh, image frame: x right, y down, z larger = nearer) comes with it, which is what
the tracking tests and the video benchmark measure against.

    model = build_synthetic_model(seed=0)
    for frame in talking_head_frames(model, frames=300, width=640, height=480):
        frame.image, frame.keypoints[0]          # (480, 640, 3) uint8, (68, 3) float32

Motion (t in seconds): one face turns its head (yaw ±35° over 4 s, pitch ±8°, roll ±6°),
opens and closes its mouth (jaw mode, 1.25 Hz) and drifts a little; with ``faces=2`` two
smaller faces cross the frame in opposite directions at different heights and depths (the
first one nearer, in front where they overlap), turning and talking as well.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

from prnet_keras.data import synth_render as sr
from prnet_keras.errors import InputError
from prnet_keras.geometry.morphable import MorphableModel
from prnet_keras.geometry.pose import make_pose_para, pose_vertices


@dataclasses.dataclass
class ClipFrame:
    """One frame: image (H, W, 3) uint8 RGB; keypoints (F, 68, 3) float32 per face (image frame);
    present (F,) bool (False on empty frames: then the face's keypoints are NaN);
    vertices: per face (n, 3) float32 posed meshes when asked for, else None."""

    index: int
    image: np.ndarray
    keypoints: np.ndarray
    present: np.ndarray
    vertices: list[np.ndarray] | None = None


@dataclasses.dataclass
class _Actor:
    shape_para: np.ndarray
    tex_para: np.ndarray
    color: np.ndarray
    width_frac: float  # face width (jaw keypoints 0-16) as a fraction of the frame height
    start: np.ndarray  # (2,) centre at t = 0, fractions of (W, H)
    end: np.ndarray  # centre at the clip's end
    depth: float  # added to z (image pixels): larger = nearer
    phase: float


def _actors(model: MorphableModel, faces: int, rng: np.random.Generator) -> list[_Actor]:
    out = []
    for k in range(faces):
        sp, _, tp = sr.sample_identity(model, rng)
        color, _ = sr.sample_appearance(rng)
        if faces == 1:
            start, end, width = np.array([0.5, 0.5]), np.array([0.5, 0.5]), 0.34
        else:  # cross the frame in opposite directions, the first one higher and nearer
            y = 0.40 if k == 0 else 0.60
            start, end, width = np.array([0.25 if k == 0 else 0.75, y]), np.array([0.75 if k == 0 else 0.25, y]), 0.26
        out.append(_Actor(sp, tp, color, width, start, end, 200.0 * (faces - k), float(rng.uniform(0, 2 * np.pi))))
    return out


def _pose_face(model: MorphableModel, actor: _Actor, t: float, progress: float, width: int, height: int,
               single: bool) -> tuple[np.ndarray, sr.FaceParams]:
    ep = np.zeros(model.n_exp)
    ep[0] = 3.0 * max(0.0, np.sin(2 * np.pi * 1.25 * t + actor.phase))  # jaw: talking
    v = model.vertices(actor.shape_para, ep)
    angles = np.deg2rad([8 * np.sin(2 * np.pi * t / 3.0 + actor.phase), 35 * np.sin(2 * np.pi * t / 4.0 + actor.phase),
                         6 * np.sin(2 * np.pi * t / 5.5)])
    mean_k = model.vertices()[model.kpt_ind]
    s = actor.width_frac * height / float(np.ptp(mean_k[:16, 0]))
    at0 = pose_vertices(v, make_pose_para(angles, [0.0, 0.0, 0.0], s), height)
    k = at0[model.kpt_ind]
    centre = actor.start + progress * (actor.end - actor.start)
    if single:  # a little drift around the centre
        centre = centre + np.array([0.06 * np.sin(2 * np.pi * t / 5.0), 0.03 * np.sin(2 * np.pi * t / 3.7)])
    shift = centre * [width, height] - (k[:, :2].min(0) + k[:, :2].max(0)) / 2.0
    tz = -float(at0[:, 2].mean()) + actor.depth
    pose = make_pose_para(angles, [shift[0], -shift[1], tz], s)
    _, illum = sr.sample_appearance(np.random.default_rng(7))  # one fixed light for the clip
    params = sr.FaceParams(actor.shape_para, ep, actor.tex_para, pose, actor.color, illum)
    return pose_vertices(v, pose, height), params


def talking_head_frames(
    model: MorphableModel, frames: int = 300, width: int = 640, height: int = 480, fps: float = 30.0,
    faces: int = 1, seed: int = 0, empty: Sequence[int] = (), keep_vertices: bool = False,
) -> Iterator[ClipFrame]:
    """Yield ``frames`` rendered :class:`ClipFrame` s (see module doc); frames listed in
    ``empty`` show the background only (a cut to an empty shot)."""
    if frames < 1 or width < 32 or height < 32 or fps <= 0:
        raise InputError(f"clip: expected frames >= 1, a size of at least 32x32 and fps > 0, "
                         f"got {frames} frames {width}x{height} at {fps}")
    if faces not in (1, 2):
        raise InputError(f"clip: faces must be 1 or 2, got {faces}")
    rng = np.random.default_rng(seed)
    actors = _actors(model, faces, rng)
    bg = sr.background(rng, max(width, height))[:height, :width]
    empty = set(int(i) for i in empty)
    for i in range(frames):
        t = i / fps
        progress = i / max(frames - 1, 1)
        img = bg.copy()
        kpts = np.full((faces, 68, 3), np.nan, np.float32)
        verts: list[np.ndarray] = []
        if i not in empty:
            front_z = np.full((height, width), -np.inf, np.float32)
            for k, actor in enumerate(actors):
                posed, params = _pose_face(model, actor, t, progress, width, height, faces == 1)
                shaded, coverage, depth = sr.shade_face(model, params, posed, height, width)
                near = (coverage > 0) & (depth > front_z)  # z-buffer across faces
                a = np.where(near, coverage, 0.0)[..., None]
                img = img + a * (shaded - img)
                front_z = np.where(near, depth, front_z)
                kpts[k] = posed[model.kpt_ind]
                verts.append(posed)
        img = img + rng.standard_normal(img.shape[:2] + (1,), dtype=np.float32) * np.float32(0.01)
        yield ClipFrame(i, sr.to_uint8(img), kpts, ~np.isnan(kpts[:, 0, 0]), verts if keep_vertices else None)
