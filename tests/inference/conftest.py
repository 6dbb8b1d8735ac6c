"""Fixtures for inference tests: ground-truth position maps made from the mean BFM posed by real
AFLW2000-3D fits, fed "in place of the network" to pin every coordinate convention."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.io

from prnet_keras.geometry import (
    UVLayout, crop_transform, pose_vertices, render_uv_map, training_crop, uv_pixel_coords, vertices_to_crop,
)
from prnet_keras.inference import load_image

AFLW_NAMES = ("image00050", "image00081", "image00251", "image00430", "image00475")


@dataclasses.dataclass
class PosedSample:
    name: str
    image: np.ndarray          # RGB uint8
    pose_para: np.ndarray      # (7,)
    pt3d: np.ndarray           # (68, 3)
    vertices: np.ndarray       # (n, 3) image frame, z re-based like the crop (min 0)
    kpts: np.ndarray           # (68, 3) model keypoints, image frame
    transform: np.ndarray      # (3, 3) training crop, no jitter
    gt_map: np.ndarray         # (256, 256, 3) crop pixels
    gt_image_map: np.ndarray   # (256, 256, 3) image frame, rendered directly


@pytest.fixture(scope="session")
def bfm_layout(mean_bfm) -> UVLayout:
    """Layout derived from the mean BFM: its canonical face *is* the posed mesh, so pose is exact."""
    return UVLayout.from_model(mean_bfm)


def make_posed_sample(model, folder, name: str) -> PosedSample:
    image = load_image(folder / f"{name}.jpg")
    mat = scipy.io.loadmat(folder / f"{name}.mat")
    pose = mat["Pose_Para"].reshape(-1).astype(np.float64)
    v = pose_vertices(model.vertices(), pose, image.shape[0])
    kpts = v[model.kpt_ind]
    centre, size = training_crop(kpts, rng=None, scale=1.5)
    t = crop_transform(centre, size)
    uv_px = uv_pixel_coords(model.uv_coords, 256)
    gt_map = render_uv_map(uv_px, model.triangles, vertices_to_crop(v, t), 256)
    v = v - np.array([0.0, 0.0, v[:, 2].min()], np.float32)
    gt_image_map = render_uv_map(uv_px, model.triangles, v, 256)
    return PosedSample(name, image, pose, mat["pt3d_68"].T.astype(np.float64), v, v[model.kpt_ind], t, gt_map,
                       gt_image_map)


@pytest.fixture(scope="session")
def posed_samples(mean_bfm, reference_data) -> list[PosedSample]:
    return [make_posed_sample(mean_bfm, reference_data / "aflw2000-3d", n) for n in AFLW_NAMES]


class MapNetwork:
    """A stand-in network: returns fixed crop-pixel maps (one per crop, in call order)."""

    def __init__(self, maps: list[np.ndarray]):
        self.maps = list(maps)
        self.calls: list[int] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
        start = sum(self.calls)
        self.calls.append(len(x))
        return np.stack(self.maps[start:start + len(x)])


@pytest.fixture(scope="session")
def map_network():
    return MapNetwork
