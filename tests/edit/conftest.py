"""Synthetic scenes for texture editing: faces of the synthetic morphable model with known
per-vertex colours, rendered flat (colour = albedo) over a cluttered background, and an
oracle that stands in for the detector and the network with the ground-truth crops and
position maps, so every expected pixel is known without a trained model."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from prnet_keras.data.synth_render import background
from prnet_keras.geometry import (
    crop_transform, make_pose_para, pose_vertices, rasterize, render_uv_map, training_crop, uv_pixel_coords,
    vertices_to_crop,
)
from prnet_keras.inference import Predictor
from prnet_keras.inference.detect import detections_from_landmarks


@dataclasses.dataclass
class SceneFace:
    vertices: np.ndarray   # (n, 3) model vertices posed into the image frame
    colors: np.ndarray     # (n, 3) albedo in [0, 1]
    kpts: np.ndarray       # (68, 3) image frame
    transform: np.ndarray  # (3, 3) training crop (no jitter): what the Predictor uses with landmarks
    gt_map: np.ndarray     # (256, 256, 3) crop-pixel position map


@dataclasses.dataclass
class Scene:
    image: np.ndarray      # (h, w, 3) uint8 RGB
    faces: list[SceneFace]
    coverage: np.ndarray   # (h, w) int: index of the face drawn at each pixel, -1 background


def skin_colors(model, tone: float, seed: int = 0) -> np.ndarray:
    """The model's texture with random coefficients, scaled by a skin tone gain (0.45 dark .. 1.15 light)."""
    rng = np.random.default_rng(seed)
    tp = np.clip(rng.standard_normal(model.n_tex), -2, 2) * model.tex_ev
    return np.clip(model.colors(tp) * np.float32(tone), 0.0, 1.0)


def pattern_colors(model, kind: str) -> np.ndarray:
    """Bold colour patterns over UV ("stripes": vertical red/cyan bands, "checker": a blue/yellow
    checkerboard) so two faces' textures hardly correlate."""
    u, v = model.uv_coords[:, 0], model.uv_coords[:, 1]
    if kind == "stripes":
        s = 0.5 + 0.5 * np.cos(2 * np.pi * 7 * (u - 0.5))  # mirror symmetric, like the checker
        return np.stack([0.2 + 0.7 * s, 0.8 - 0.6 * s, 0.8 - 0.6 * s], 1).astype(np.float32)
    c = ((np.floor(u * 9) + np.floor(v * 9)) % 2).astype(np.float32)
    return np.stack([0.15 + 0.75 * c, 0.15 + 0.7 * c, 0.85 - 0.7 * c], 1).astype(np.float32)


def make_scene(model, specs: list[dict], size: tuple[int, int] = (200, 200), seed: int = 0) -> Scene:
    """specs: per face {"colors": (n, 3), "yaw": deg, "pitch": deg, "centre": (x, y), "width": px}."""
    h, w = size
    uv_px = uv_pixel_coords(model.uv_coords, 256)
    tri = model.all_triangles
    faces, verts, cols, tris = [], [], [], []
    mean_k = model.vertices()[model.kpt_ind]
    for k, spec in enumerate(specs):
        v = model.vertices()
        s = spec["width"] / float(np.ptp(mean_k[:, 0]))
        cx, cy = spec["centre"]
        pose = make_pose_para(np.deg2rad([spec.get("pitch", 0.0), spec.get("yaw", 0.0), 0.0]),
                              [cx, h - 1 - cy, 0.0], s)
        posed = pose_vertices(v, pose, h)
        posed[:, 2] -= posed[:, 2].min()
        kpts = posed[model.kpt_ind]
        centre, side = training_crop(kpts[:, :2], rng=None, scale=1.5)
        t = crop_transform(centre, side)
        gt = render_uv_map(uv_px, tri, vertices_to_crop(posed, t), 256)
        faces.append(SceneFace(posed, spec["colors"], kpts, t, gt))
        verts.append(posed)
        cols.append(np.concatenate([spec["colors"], np.full((len(posed), 1), k, np.float32)], 1))
        tris.append(tri + sum(len(x) for x in verts[:-1]))
    img, _, tri_index = rasterize(np.concatenate(verts), np.concatenate(tris), np.concatenate(cols), h, w)
    covered = tri_index >= 0
    bg = cv2.resize(background(np.random.default_rng(seed), max(h, w)), (w, h))
    rgb = np.where(covered[..., None], img[..., :3], bg)
    image = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    coverage = np.where(covered, np.rint(img[..., 3]).astype(int), -1)
    return Scene(image, faces, coverage)


def render_colors(face: SceneFace, colors: np.ndarray, model, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(RGB float (h, w, 3), covered (h, w)) of this face's geometry painted with other per-vertex colours."""
    img, _, tri = rasterize(face.vertices, model.all_triangles, colors, *size)
    return img, tri >= 0


def frontal_network(layout, width: float = 150.0):
    """A network stand-in for real photos: the layout's frontal canonical face, its landmark box
    ``width`` crop pixels wide and centred (where a detector's crop puts a face), for every crop."""
    r = layout.resolution
    full = np.zeros((r * r, 3))
    full[layout.face_ind] = layout.canonical_vertices
    full = full[layout.nearest_face_index]
    kp = full[layout.kpt_flat]
    lo, hi = kp.min(0), kp.max(0)
    s = width / (hi[0] - lo[0]) * r / 256.0
    c = (lo + hi) / 2.0
    pm = np.stack([r / 2 + s * (full[:, 0] - c[0]), r / 2 + 0.05 * r - s * (full[:, 1] - c[1]),
                   s * (full[:, 2] - full[:, 2].min())], 1).reshape(r, r, 3).astype(np.float32)
    return lambda x: np.repeat(pm[None], len(x), axis=0)


class Oracle:
    """Detector + network stand-in for a set of scenes: the detector returns each face's 68
    landmarks (so the Predictor takes the training crop), the network the ground-truth map of
    the face whose crop matches the input crop."""

    def __init__(self, scenes: list[Scene]):
        self.scenes = scenes
        self.crops, self.maps = [], []
        for sc in scenes:
            for f in sc.faces:
                crop = cv2.warpAffine(sc.image, f.transform[:2], (256, 256), flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                self.crops.append(crop.astype(np.float32) / 255.0)
                self.maps.append(f.gt_map)

    def detector(self, image: np.ndarray):
        for sc in self.scenes:
            if sc.image.shape == image.shape and np.array_equal(sc.image, image):
                return detections_from_landmarks(np.stack([f.kpts for f in sc.faces]))
        return []

    def network(self, x: np.ndarray) -> np.ndarray:
        out = []
        for crop in x:
            err = [np.abs(crop - c).mean() for c in self.crops]
            assert min(err) < 0.02, "the oracle was given a crop it does not know"
            out.append(self.maps[int(np.argmin(err))])
        return np.stack(out)

    def predictor(self, layout) -> Predictor:
        return Predictor(self.network, layout, detector=self.detector)


@pytest.fixture(scope="session")
def scenes(synthetic_model):
    """a: one light-skinned frontal-ish face; b: a darker face turned the other way; p/q: the same
    poses with stripe / checker patterns; g: two faces in one image."""
    m = synthetic_model
    light, dark = skin_colors(m, 1.1, 1), skin_colors(m, 0.5, 2)
    stripes, checker = pattern_colors(m, "stripes"), pattern_colors(m, "checker")
    pose_a = {"yaw": 20.0, "pitch": 5.0, "centre": (98, 104), "width": 110}
    pose_b = {"yaw": -35.0, "pitch": -5.0, "centre": (104, 98), "width": 100}
    return {
        "a": make_scene(m, [dict(pose_a, colors=light)], seed=1),
        "b": make_scene(m, [dict(pose_b, colors=dark)], seed=2),
        "p": make_scene(m, [dict(pose_a, colors=stripes)], seed=1),
        "q": make_scene(m, [dict(pose_b, colors=checker)], seed=2),
        "g": make_scene(m, [{"yaw": 25.0, "centre": (62, 100), "width": 70, "colors": light},
                            {"yaw": -15.0, "centre": (190, 96), "width": 90, "colors": checker}],
                        size=(200, 260), seed=3),
        "colors": {"light": light, "dark": dark, "stripes": stripes, "checker": checker},
    }


@pytest.fixture(scope="session")
def oracle(scenes):
    return Oracle([scenes[k] for k in ("a", "b", "p", "q", "g")])


@pytest.fixture(scope="session")
def edit_predictor(oracle, synthetic_layout):
    return oracle.predictor(synthetic_layout)


@pytest.fixture(scope="session")
def edit_helpers():
    """Helper functions for the test modules (importlib mode: tests cannot import conftest)."""
    import types

    return types.SimpleNamespace(make_scene=make_scene, render_colors=render_colors, skin_colors=skin_colors,
                                 pattern_colors=pattern_colors, Oracle=Oracle, frontal_network=frontal_network)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory, synthetic_layout):
    """An untrained light network (width 0.25) saved as .keras with the synthetic layout beside it."""
    from prnet_keras.model import build_model

    folder = tmp_path_factory.mktemp("tiny_model")
    build_model("light", width=0.25).save(folder / "model.keras")
    synthetic_layout.save(folder / "uv_layout.npz")
    return folder / "model.keras"
