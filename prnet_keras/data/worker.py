"""The per-chunk work of a build, run in worker processes (or inline with one worker).

A chunk of samples becomes one part file ``OUT.partial/part-KKKKKK.h5``, written under a
temporary name, fsynced and renamed: it exists complete or not at all.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from prnet_keras.data.gt import VERTEX_GROUP, GroundTruthMaker, sample_rng, warp_crop
from prnet_keras.data.images import decode_image
from prnet_keras.data.rotate import rotate_for_build
from prnet_keras.data.sources import SampleRef, load_mat_bytes, read_sample_bytes
from prnet_keras.data.writer import append_rows, create_file, encode_chunk, encode_jpeg
from prnet_keras.errors import InputError
from prnet_keras.geometry import MorphableModel, UVLayout, load_morphable_model
from prnet_keras.utils import atomic_path

STAGES = ("decode", "model", "render", "encode", "write")
# Stage times are CPU seconds of the worker thread: on a shared machine wall-clock splits
# mostly measure the neighbours. (The summary's samples/s is wall-clock.)
_clock = time.thread_time

_STATE: dict[str, Any] = {}


def init_worker(model: MorphableModel | str, layout: UVLayout, settings: dict, attrs: dict,
                 in_pool: bool = False) -> None:
    if isinstance(model, str):  # spawned workers load the model themselves (cheaper than pickling it)
        model = load_morphable_model(model)
    if in_pool:  # one process per core already: OpenCV's own threads would only contend
        import cv2

        cv2.setNumThreads(1)
        try:  # same for BLAS threads in the model GEMMs (threadpoolctl is optional)
            from threadpoolctl import threadpool_limits

            threadpool_limits(1)
        except ImportError:
            pass
    _STATE.update(maker=GroundTruthMaker(model, layout, settings["crop_config"]), layout=layout,
                  layout_bytes=layout.to_bytes(), settings=settings, attrs=attrs)


def _encode_row(ref: SampleRef, gt: dict, settings: dict, image_bytes: bytes, fit) -> dict[str, Any]:
    row = {
        "name": ref.name, "source_path": ref.relpath or ref.image_path, "transform": gt["transform"],
        "pose_para": fit.pose_para, "yaw": np.float32(np.degrees(fit.pose_para[1])), "kpt68": gt["kpt68"],
        "image_size": np.asarray(gt["image_size"], np.int32),
    }
    if settings["store"] == "raw":
        row.update(image=np.frombuffer(image_bytes, np.uint8), shape_para=fit.shape_para, exp_para=fit.exp_para)
    else:
        crop = gt["crop"]
        compression = settings["compression"]
        row["crop"] = (encode_jpeg(crop, settings["jpeg_quality"]) if settings["crop_format"] == "jpeg"
                       else encode_chunk(crop, compression))
        row["position_map"] = encode_chunk(gt["position_map"].astype(np.float16), compression)
    return row


def build_chunk(task: tuple[int, list[SampleRef], str]) -> tuple[int, int, list, dict[str, float]]:
    """Build one part file; returns (chunk index, rows written, skipped entries, stage seconds)."""
    k, refs, part_path = task
    maker: GroundTruthMaker = _STATE["maker"]
    settings = _STATE["settings"]
    times = dict.fromkeys(STAGES, 0.0)
    skipped: list[tuple[str, str, str]] = []
    loaded = []
    clock = _clock()
    for ref in refs:
        try:
            img_bytes, mat_bytes = read_sample_bytes(ref, settings["max_image_pixels"])
            image = decode_image(img_bytes, ref.name, settings["max_image_pixels"])
            fit = maker.parse(load_mat_bytes(mat_bytes, ref.name), ref.name)
            image, fit, img_bytes = rotate_for_build(ref, image, fit, img_bytes, settings)  # --rotate
            loaded.append((ref, img_bytes, image, fit))
        except Exception as exc:  # a bad sample never aborts a build
            skipped.append((ref.name, ref.relpath or ref.image_path, _reason(exc)))
    now = _clock()
    times["decode"] += now - clock
    clock = now
    rows = []
    for start in range(0, len(loaded), VERTEX_GROUP):  # one GEMM per group of samples
        group = loaded[start:start + VERTEX_GROUP]
        try:
            verts = maker.model_vertices([g[3] for g in group])
        except Exception:
            verts = [None] * len(group)  # fall back to per-sample errors below
        now = _clock()
        times["model"] += now - clock
        clock = now
        for (ref, img_bytes, image, fit), v in zip(group, verts):
            try:
                rows.append(_one_sample(maker, settings, ref, img_bytes, image, fit, v, times))
            except Exception as exc:
                skipped.append((ref.name, ref.relpath or ref.image_path, _reason(exc)))
            clock = _clock()
    with atomic_path(part_path) as tmp:
        with create_file(tmp, _STATE["attrs"], _STATE["layout"], _STATE["layout_bytes"]) as f:
            append_rows(f, rows, skipped)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
    times["write"] += _clock() - clock
    return k, len(rows), skipped, times


def _one_sample(maker, settings, ref, img_bytes, image, fit, vertices, times) -> dict[str, Any]:
    t0 = _clock()
    if vertices is None:
        vertices = maker.model_vertices([fit])[0]
    h = image.shape[0]
    kpts = maker.keypoints(vertices, fit, h)
    rng = sample_rng(settings["seed"], ref.name) if settings["buildmode"] == "train" else None
    transform = maker.crop_of(kpts, rng)
    maker.check_placement(kpts, image.shape, transform)
    kpt68 = fit.pt3d_68 if fit.pt3d_68 is not None else kpts
    gt = {"transform": transform, "kpt68": np.asarray(kpt68, np.float32), "image_size": image.shape[:2]}
    crop_v = maker.crop_vertices(vertices, fit, h, transform) if settings["store"] == "crops" else None
    t1 = _clock()
    if crop_v is not None:
        gt["position_map"] = maker.position_map(crop_v)
        gt["crop"] = warp_crop(image, transform, maker.resolution)
        maker.check_crop(gt["crop"])
    t2 = _clock()
    row = _encode_row(ref, gt, settings, img_bytes, fit)
    t3 = _clock()
    times["model"] += t1 - t0
    times["render"] += t2 - t1
    times["encode"] += t3 - t2
    return row


def _reason(exc: Exception) -> str:
    msg = str(exc).replace("\n", " ").strip()
    return msg if isinstance(exc, InputError) else f"{type(exc).__name__}: {msg}"
