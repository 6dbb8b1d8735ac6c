"""Crops that calibrate and validate the int8 network (``--engine openvino-int8``).

:class:`CalibrationData` is what ``model.engines.openvino_int8_forward`` asks for: a cheap
``source`` string (compared with the cached int8 model's, so a different data set makes a
new one) and ``load(layout)``, which reads or renders the crops only when quantisation
actually runs.

* From an HDF5 dataset (``prnet-build-dataset`` output): ``count`` samples spread evenly over
  the file, the crop images and — when the file's UV layout is the network's — their
  position maps as labels.
* Without one: synthetic faces rendered by the synthetic-data pipeline (``data.synth``:
  random identity, expression, pose, light and background; seed fixed), cropped as in
  training; labels when the network uses the synthetic model's UV layout (the quickstart
  models), else the fp32 outputs stand in for labels (``model.quantize``).

The last ``validation`` crops are held out: calibration never sees them, the accuracy
report is measured on them.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import cv2
import numpy as np

from prnet_keras.errors import InputError
from prnet_keras.geometry import UVLayout
from prnet_keras.model.quantize import Calibration


class CalibrationData:
    """Lazy calibration crops (see module doc): ``hdf5`` path or None (synthetic faces)."""

    def __init__(self, hdf5: str | os.PathLike | None = None, count: int = 300, validation: int = 100,
                 seed: int = 0) -> None:
        if count < 2 or not 1 <= validation < count:
            raise InputError(f"calibration: expected count >= 2 and 1 <= validation < count, got {count}, {validation}")
        self.count, self.validation, self.seed = int(count), int(validation), int(seed)
        self.hdf5 = None if hdf5 is None else Path(hdf5)
        if self.hdf5 is not None:
            if not self.hdf5.is_file():
                raise InputError(f"--calibration {self.hdf5}: file not found")
            st = self.hdf5.stat()
            self.source = f"hdf5 {self.hdf5.resolve()} {st.st_size} {st.st_mtime_ns} n={self.count}/{self.validation}"
        else:
            self.source = f"synthetic seed={self.seed} n={self.count}/{self.validation}"

    def load(self, layout: UVLayout) -> Calibration:
        crops, labels = self._from_hdf5(layout) if self.hdf5 is not None else self._synthetic(layout)
        # a file smaller than ``count``: the same share held out, at least one crop each side
        validation = min(self.validation, max(1, len(crops) * self.validation // self.count), len(crops) - 1)
        return Calibration(crops, labels, layout.face_ind, layout.kpt_flat, validation, self.source)

    def _from_hdf5(self, layout: UVLayout) -> tuple[np.ndarray, np.ndarray | None]:
        from prnet_keras.data.hdf5 import PositionMapDataset

        ds = PositionMapDataset(self.hdf5)
        try:
            if ds.layout.resolution != layout.resolution:
                raise InputError(f"--calibration {self.hdf5}: crops are {ds.layout.resolution} px, the network "
                                 f"takes {layout.resolution} px")
            if len(ds) < 2:
                raise InputError(f"--calibration {self.hdf5}: needs at least 2 samples, has {len(ds)}")
            idx = np.unique(np.linspace(0, len(ds) - 1, min(self.count, len(ds))).round().astype(int))
            batch = ds.read_batch(idx, meta=False)
        finally:
            ds.close()
        crops = batch["image"].astype(np.float32) / np.float32(255.0)
        return crops, batch["position_map"] if ds.layout == layout else None

    def _synthetic(self, layout: UVLayout) -> tuple[np.ndarray, np.ndarray | None]:
        from prnet_keras.data.synth import render_sample
        from prnet_keras.geometry import (
            crop_transform, pose_vertices, render_uv_map, training_crop, uv_pixel_coords, vertices_to_crop,
        )
        model = _synthetic_model()
        with_labels = UVLayout.from_model(model, resolution=layout.resolution) == layout
        r = layout.resolution
        uv_px = uv_pixel_coords(model.uv_coords, r) if with_labels else None
        crops = np.empty((self.count, r, r, 3), np.float32)
        labels = np.empty((self.count, r, r, 3), np.float32) if with_labels else None
        streams = np.random.SeedSequence([self.seed, 8]).spawn(self.count)
        for i, ss in enumerate(streams):
            rngs = [np.random.default_rng(s) for s in ss.spawn(4)]
            image, params, kpts, _ = render_sample(model, rngs, 0.6, 0.2, size=320)
            t = crop_transform(*training_crop(kpts[:, :2], rng=None), r)
            crops[i] = cv2.warpAffine(image, t[:2], (r, r), flags=cv2.INTER_LINEAR) / np.float32(255.0)
            if labels is not None:
                posed = pose_vertices(model.vertices(params.shape_para, params.exp_para), params.pose_para, 320)
                labels[i] = render_uv_map(uv_px, model.triangles, vertices_to_crop(posed, t), r)
        return crops, labels


@functools.lru_cache(maxsize=1)
def _synthetic_model():
    from prnet_keras.geometry.synthetic import build_synthetic_model

    return build_synthetic_model(seed=0)


def calibration_source(hdf5: str | os.PathLike | None) -> CalibrationData:
    """The CLI's ``--calibration`` value (None: synthetic faces) as a :class:`CalibrationData`."""
    return CalibrationData(hdf5)
