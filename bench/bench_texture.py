"""Benchmark: texture editing per face (``prnet_keras.edit.edit_texture``) on 450² images.

Two faces of the synthetic model at BFM density (~53k vertices, like the real BFM) are posed
into 450x450 images and turned into ``Face`` objects from their ground-truth position maps, so
the network is not timed (see bench_inference.py for it). Each repeat makes fresh faces (their
visibility is computed again, as for a new photo) and edits A with B: the whole face and the
eyes, with the texture at 256² and 512² (the default), Poisson blending.

Reported: median wall time per edit (ms) for each case. Writes bench/results/texture.json; the
last line printed is ``texture ms_face_512=<median> ms_eyes_512=<median>``.

Usage: python bench/bench_texture.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchenv import environment  # noqa: E402

from prnet_keras.edit import edit_texture  # noqa: E402
from prnet_keras.geometry import (  # noqa: E402
    UVLayout, crop_transform, make_pose_para, pose_vertices, rasterize, render_uv_map, training_crop,
    uv_pixel_coords, vertices_to_crop,
)
from prnet_keras.geometry.synthetic import build_synthetic_model  # noqa: E402
from prnet_keras.inference.postprocess import face_from_position_map  # noqa: E402
from prnet_keras.utils import write_json  # noqa: E402

SIZE = 450


def posed_face(model, layout, yaw: float, tone: float, seed: int):
    """(image (450, 450, 3) uint8, ground-truth crop-pixel map, crop transform)."""
    rng = np.random.default_rng(seed)
    v = model.vertices()
    k = v[model.kpt_ind]
    pose = make_pose_para(np.deg2rad([5.0, yaw, 0.0]), [SIZE / 2, SIZE / 2, 0.0], 0.5 * SIZE / float(np.ptp(k[:, 0])))
    posed = pose_vertices(v, pose, SIZE)
    colors = np.clip(model.colors(rng.standard_normal(model.n_tex) * model.tex_ev) * tone, 0, 1)
    img, _, tri = rasterize(posed, model.all_triangles, colors, SIZE, SIZE)
    background = rng.uniform(0.2, 0.8, 3).astype(np.float32)
    image = (np.where((tri >= 0)[..., None], img, background) * 255 + 0.5).astype(np.uint8)
    centre, side = training_crop(posed[model.kpt_ind][:, :2], rng=None, scale=1.5)
    t = crop_transform(centre, side)
    gt = render_uv_map(uv_pixel_coords(model.uv_coords, layout.resolution), model.all_triangles,
                       vertices_to_crop(posed, t), layout.resolution)
    return image, gt, t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    model = build_synthetic_model(seed=0, density="bfm")
    layout = UVLayout.from_model(model)
    a, b = posed_face(model, layout, 20.0, 1.1, 1), posed_face(model, layout, -30.0, 0.6, 2)

    def faces():
        return [face_from_position_map(gt, t, layout, img) for img, gt, t in (a, b)]

    cases = {f"ms_{region}_{size}": (region, size) for size in (256, 512) for region in ("face", "eyes")}
    edit_texture(*faces(), "face")  # compile the numba kernels, fill the caches
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeats):
        for key, (region, size) in cases.items():  # interleaved: load changes hit every case alike
            target, source = faces()
            t0 = time.perf_counter()
            edit_texture(target, source, region, texture_size=size)
            times[key].append(1000 * (time.perf_counter() - t0))
    result = {k: round(statistics.median(v), 1) for k, v in times.items()}
    out = {"benchmark": "texture", "image": f"{SIZE}x{SIZE}", "mesh_vertices": layout.n_vertices,
           "repeats": args.repeats, "median_ms": result, "env": environment("cv2", "numba")}
    write_json(ROOT / "bench" / "results" / "texture.json", out)
    for key, value in result.items():
        print(f"{key}: {value} ms")
    print(f"texture ms_face_512={result['ms_face_512']} ms_eyes_512={result['ms_eyes_512']}")


if __name__ == "__main__":
    main()
