"""Benchmark: UV position-map rendering of a BFM-sized mesh at 256², on one CPU core.

Mesh: the mean-only BFM (53,215 vertices, 105,954 triangles) when the reference data is
present, else the synthetic model at BFM density, else (if that module is unavailable) a
BFM-sized procedural grid. Each iteration renders a different posed face (crop-frame
vertices), as dataset generation does.

Reported: ``ms_per_map`` = median CPU time (of the one pinned thread) of ``render_uv_map``
in steady state (cached UV render plan, the path every GT generator takes), plus the direct
rasteriser (``cache=False``), the one-off plan build, and the image-space renders used per inference image (depth,
visibility, shading at 450²). Writes bench/results/rasterizer.json; the last line printed
is ``rasterizer ms_per_map=<median>``.

Usage: python bench/bench_rasterizer.py [--repeats 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prnet_keras.geometry import (  # noqa: E402
    MorphableModel, crop_transform, make_pose_para, pose_vertices, render_depth, render_shaded, render_uv_map,
    training_crop, uv_pixel_coords, uv_render_plan, vertex_visibility, vertices_to_crop,
)
from prnet_keras.utils import reference_data_dir, write_json  # noqa: E402


def pin_one_core() -> str:
    """Run on a single CPU (the target is per core); returns a description."""
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to cpu {cpu}"
    except (AttributeError, OSError):
        return "not pinned (sched_setaffinity unavailable)"


def grid_model(nx: int = 230, ny: int = 232) -> MorphableModel:
    """BFM-sized fallback mesh (53,360 vertices, 105,570 triangles): a bump on a UV grid."""
    u, v = np.meshgrid(np.linspace(0.02, 0.98, nx), np.linspace(0.02, 0.98, ny))
    x, y = (u - 0.5) * 160, (v - 0.5) * 200
    pts = np.stack([x, y, 80 * np.exp(-(x**2 + y**2) / 8000)], -1).reshape(-1).astype(np.float32)
    idx = np.arange(nx * ny).reshape(ny, nx)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    tri = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])
    n3 = pts.size
    z = lambda k: np.zeros((n3, k), np.float32)  # noqa: E731
    return MorphableModel("grid", pts, z(1), np.ones(1), np.zeros(n3), z(1), np.ones(1), np.zeros(n3), z(1),
                          np.ones(1), tri, np.zeros((0, 3)), np.arange(68) * 700,
                          np.stack([u.ravel(), v.ravel()], 1))


def load_mesh() -> tuple[MorphableModel, str]:
    ref = reference_data_dir()
    if ref is not None and (ref / "bfm-mean").is_dir():
        from prnet_keras.geometry import load_mean_bfm

        return load_mean_bfm(ref / "bfm-mean"), "mean-only BFM (reference data)"
    try:
        from prnet_keras.geometry.synthetic import build_synthetic_model

        return build_synthetic_model(seed=0, density="bfm"), "synthetic model, BFM density"
    except Exception as exc:  # noqa: BLE001 - any failure of the optional module: fall back
        print(f"note: synthetic model unavailable ({type(exc).__name__}: {exc}); using a BFM-sized grid")
        return grid_model(), "procedural BFM-sized grid"


def posed_faces(model: MorphableModel, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Crop-frame vertices of the mean face under random poses (yaw up to ±90°)."""
    mean = model.vertices()
    scale = 180.0 / float(np.ptp(mean[:, 0]))
    out = []
    for _ in range(count):
        angles = np.radians(rng.uniform([-30, -90, -30], [30, 90, 30]))
        p = make_pose_para(angles, [225 + rng.uniform(-20, 20), 225 + rng.uniform(-20, 20), 0], scale)
        v_img = pose_vertices(mean, p, 450)
        centre, size = training_crop(v_img[model.kpt_ind], rng)
        out.append(vertices_to_crop(v_img, crop_transform(centre, size)))
    return out


def time_ms(fn, args_list, repeats: int) -> tuple[list[float], list[float]]:
    """(CPU-time ms, wall ms) per call. CPU time of this thread is what one core spends and
    is robust to other processes sharing the machine; wall time is recorded alongside."""
    fn(*args_list[0])  # compile / warm caches
    cpu, wall = [], []
    for i in range(repeats):
        args = args_list[i % len(args_list)]
        c0, w0 = time.thread_time(), time.perf_counter()
        fn(*args)
        cpu.append((time.thread_time() - c0) * 1e3)
        wall.append((time.perf_counter() - w0) * 1e3)
    return cpu, wall


def summary(times: tuple[list[float], list[float]]) -> dict:
    cpu, wall = times
    return {"median_ms": statistics.median(cpu), "min_ms": min(cpu), "wall_median_ms": statistics.median(wall),
            "repeats": len(cpu)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "rasterizer.json"))
    args = ap.parse_args()
    pinned = pin_one_core()
    import numba

    machine = {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "affinity": pinned, "python": platform.python_version(),
        "numpy": np.__version__, "numba": numba.__version__,
    }
    try:
        with open("/proc/cpuinfo") as f:
            machine["cpu_model"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    for k, v in machine.items():
        print(f"{k}: {v}")

    model, source = load_mesh()
    tri = model.all_triangles
    with open("/proc/loadavg") as f:
        machine["loadavg_at_start"] = f.read().split()[0]
    print(f"load average at start: {machine['loadavg_at_start']}")
    print(f"mesh: {source}: {model.n_vertices} vertices, {len(tri)} triangles; UV map 256x256")
    uv = uv_pixel_coords(model.uv_coords, 256)
    rng = np.random.default_rng(0)
    faces = posed_faces(model, 16, rng)

    t0 = time.perf_counter()
    uv_render_plan(uv, tri, 256)
    first = (time.perf_counter() - t0) * 1e3
    results = {
        "uv_map_cached": summary(time_ms(lambda a: render_uv_map(uv, tri, a, 256), [(f,) for f in faces],
                                         args.repeats)),
        "uv_map_direct": summary(time_ms(lambda a: render_uv_map(uv, tri, a, 256, cache=False),
                                         [(f,) for f in faces], max(20, args.repeats // 4))),
    }
    plan_cls = type(uv_render_plan(uv, tri, 256))
    results["uv_plan_build"] = summary(time_ms(plan_cls, [(uv, tri, 256)], 5))
    results["uv_plan_first_call_ms"] = first

    # Image-space renders at the inference image size (450², vertices in image frame).
    imgs = []
    for f in faces[:8]:
        v = f.copy()
        v[:, :2] = v[:, :2] * (450 / 256)
        imgs.append((v,))
    colors = model.colors()
    n = max(10, args.repeats // 10)
    results["depth_450"] = summary(time_ms(lambda v: render_depth(v, tri, 450, 450), imgs, n))
    results["visibility_450"] = summary(time_ms(lambda v: vertex_visibility(v, tri, 450, 450), imgs, n))
    results["shaded_450"] = summary(time_ms(lambda v: render_shaded(v, tri, colors, 450, 450), imgs, n))

    for name, r in results.items():
        if isinstance(r, dict):
            print(f"{name:16s} cpu median {r['median_ms']:7.3f} ms  min {r['min_ms']:7.3f} ms  "
                  f"wall median {r['wall_median_ms']:7.3f} ms  (n={r['repeats']})")
        else:
            print(f"{name:16s} {r:7.3f} ms")
    ms = results["uv_map_cached"]["median_ms"]
    write_json(args.out, {
        "benchmark": "rasterizer", "machine": machine, "mesh": source, "n_vertices": model.n_vertices,
        "n_triangles": int(len(tri)), "resolution": 256, "results": results, "ms_per_map": ms,
        "target_ms_per_map": 2.5,
    })
    print(f"wrote {args.out}")
    print(f"rasterizer ms_per_map={ms:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
