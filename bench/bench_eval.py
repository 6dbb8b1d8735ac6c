"""Benchmark: all six evaluation metrics over 2,000 AFLW2000-3D-like images (issue 5 §6).

Ground truth: BFM-sized position maps rendered through the real ground-truth path
(``data.gt.GroundTruthMaker``) for random poses (|yaw| uniform in 0-90°, so every yaw bin
is filled), with the mean-only BFM and the official UV layout when the reference data is
present, else the synthetic model at BFM density. Predictions: the ground-truth map plus
a smooth per-image warp (small rotation, shift, scale) and per-pixel noise, so ICP has
real work to do; the landmarks stand in for pt3d_68 with their own noise. Inputs are made
batch by batch and not timed; the timed part is ``evaluate.runner.score_batch`` (sparse
2D/3D, dense 2D/3D, ICP reconstruction 2D/3D) — the same code ``evaluate_model.py`` runs.

Model inference is reported separately (resfcn256, random weights, CPU, a few batches,
extrapolated to 2,000 images).

Prints machine and versions, writes bench/results/eval.json, and ends with
``eval seconds_2000=<metrics-only seconds>``.

Usage: python bench/bench_eval.py [--count 2000] [--batch 16] [--icp open3d|scipy] [--no-inference]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import benchenv  # noqa: E402

from prnet_keras.utils import reference_data_dir, write_json  # noqa: E402


def environment() -> dict:
    return benchenv.environment("scipy", "open3d")


def model_and_layout(spec: str | None):
    from prnet_keras.geometry import UVLayout, load_morphable_model

    ref = reference_data_dir()
    if spec is None and ref is not None:
        return (load_morphable_model(str(ref / "bfm-mean")), UVLayout.from_prnet_folder(ref / "prnet-uv-data"),
                "mean-only BFM + official uv-data (reference data)")
    spec = spec or "synthetic:bfm"
    model = load_morphable_model(spec)
    return model, UVLayout.from_model(model), spec


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    from prnet_keras.geometry import angles_to_rotation

    return angles_to_rotation(np.radians(rng.uniform(-max_deg, max_deg, 3)))


def make_batch(maker, model, layout, rng: np.random.Generator, start: int, b: int):
    """(GroundTruthBatch, Predictions) of b synthetic images; not timed."""
    from prnet_keras.data.sources import Fit
    from prnet_keras.evaluate.sources import GroundTruthBatch, Predictions, _from_maps

    image = np.zeros((450, 450, 3), np.uint8)
    items = []
    v0 = model.vertices()
    for _ in range(b):
        yaw = rng.uniform(0, 90) * rng.choice([-1, 1])
        pose = np.array([np.radians(rng.uniform(-15, 15)), np.radians(yaw), np.radians(rng.uniform(-15, 15)),
                         225 + rng.uniform(-15, 15), 225 + rng.uniform(-15, 15), 0.0, 0.0], np.float32)
        pose[6] = 180.0 / np.ptp(v0[:, 0]) * rng.uniform(0.9, 1.1)  # face ~180 px wide
        fit = Fit(pose, np.zeros(model.n_shape, np.float32), np.zeros(model.n_exp, np.float32), None, None)
        items.append(maker.make(image, fit, vertices=v0))
    maps = np.stack([it["position_map"] for it in items])
    gt = GroundTruthBatch(
        names=[f"image{start + i:05d}" for i in range(b)], crops=np.zeros((b, 8, 8, 3), np.uint8), maps=maps,
        transforms=np.stack([it["transform"] for it in items]), kpt68=np.stack([it["kpt68"] for it in items]),
        yaw=np.array([it["yaw"] for it in items]), image_size=np.tile([450, 450], (b, 1)),
        index=np.arange(start, start + b),
    )
    # prediction = GT map, rigidly perturbed about the face centre (3°, 3 px, 3 %), + 1 px noise
    pred_maps = maps.copy()
    face = layout.face_mask
    for i in range(b):
        pts = maps[i][face].astype(np.float64)
        c = pts.mean(0)
        moved = (pts - c) @ _rotation(rng, 3.0).T * rng.uniform(0.97, 1.03) + c + rng.uniform(-3, 3, 3)
        pred_maps[i][face] = moved + rng.normal(0, 1.0, moved.shape)
    kpt, dense = _from_maps(pred_maps, gt, layout)
    gt.kpt68 = gt.kpt68 + rng.normal(0, 1.5, gt.kpt68.shape).astype(np.float32)  # pt3d_68 is not the map
    return gt, Predictions(kpt, dense, [None] * b)


def time_inference(n_images: int, batch: int) -> dict:
    try:
        from prnet_keras.model import build_model

        net = build_model("resfcn256")
    except Exception as exc:  # noqa: BLE001 - report, do not fail the metrics benchmark
        return {"error": f"{type(exc).__name__}: {exc}"}
    x = np.random.default_rng(0).uniform(0, 1, (batch, 256, 256, 3)).astype(np.float32)
    net.predict(x, verbose=0)  # warm-up / graph build
    reps = max(1, n_images // batch)
    t = time.perf_counter()
    for _ in range(reps):
        net.predict(x, verbose=0)
    dt = time.perf_counter() - t
    per = dt / (reps * batch)
    return {"model": "resfcn256 (random weights)", "images_timed": reps * batch, "seconds_per_image": per,
            "extrapolated_seconds_2000": per * 2000}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--icp", default=None, choices=["open3d", "scipy"])
    ap.add_argument("--bfm", default=None, help="model spec (default: mean-only BFM if present, else synthetic:bfm)")
    ap.add_argument("--inference-images", type=int, default=32)
    ap.add_argument("--no-inference", action="store_true")
    args = ap.parse_args()

    from prnet_keras.data.gt import GroundTruthMaker
    from prnet_keras.evaluate.runner import build_summary, make_settings, score_batch

    env = environment()
    print("machine:", {k: env[k] for k in ("processor", "cpu_count", "affinity", "load_average_1min", "platform")})
    print("versions:", {k: env[k] for k in ("python", "numpy", "scipy", "open3d")})
    model, layout, source = model_and_layout(args.bfm)
    settings = make_settings(icp=args.icp)  # default open3d (scipy when open3d is missing), as prnet-evaluate
    print(f"ground truth: {source}; {layout.n_vertices} face points; ICP {settings.icp} {settings.icp_method}")
    maker = GroundTruthMaker(model, layout)
    rng = np.random.default_rng(0)
    rows, t_metrics, t_inputs, cpu_metrics = [], 0.0, 0.0, 0.0
    per_metric_seconds = {}
    for start in range(0, args.count, args.batch):
        b = min(args.batch, args.count - start)
        t = time.perf_counter()
        gt, pred = make_batch(maker, model, layout, rng, start, b)
        t_inputs += time.perf_counter() - t
        t, c = time.perf_counter(), time.process_time()
        scores = score_batch(gt, pred, layout, settings)
        t_metrics += time.perf_counter() - t
        cpu_metrics += time.process_time() - c
        rows += [{"name": n, "yaw": float(gt.yaw[i]), "error": "", **{m: float(v[i]) for m, v in scores.items()}}
                 for i, n in enumerate(gt.names)]
        if start // args.batch % 25 == 0:
            print(f"  {start + b}/{args.count} images, metrics {t_metrics:.1f} s", flush=True)
    # split: alignment metrics alone on one more batch, to attribute time
    gt, pred = make_batch(maker, model, layout, rng, args.count, args.batch)
    for group in (("sparse_2d", "sparse_3d"), ("dense_2d", "dense_3d"), ("reconstruction_2d", "reconstruction_3d")):
        t = time.perf_counter()
        score_batch(gt, pred, layout, dataclasses.replace(settings, metrics=group))
        per_metric_seconds["+".join(group)] = (time.perf_counter() - t) / args.batch
    summary = build_summary(rows, settings,
                            {"model": "synthetic perturbation", "data": source, "layout": layout.hash()},
                            args.count)
    inference = {"skipped": True} if args.no_inference else time_inference(args.inference_images, args.batch)
    result = {
        "benchmark": "eval", "count": args.count, "batch": args.batch, "icp": settings.icp,
        "face_points": layout.n_vertices, "ground_truth": source,
        "metrics_seconds": t_metrics, "metrics_ms_per_image": 1000 * t_metrics / args.count,
        "metrics_cpu_seconds_all_threads": cpu_metrics,
        "load_average_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "seconds_per_image_by_group": per_metric_seconds, "input_synthesis_seconds_untimed": t_inputs,
        "inference": inference, "target_seconds": 180.0,
        "mean_nme": {m: s["mean_all"] for m, s in summary["metrics"].items()}, "environment": env,
    }
    out = ROOT / "bench" / "results" / "eval.json"
    write_json(out, result)
    print(f"per image by group (s): {', '.join(f'{k} {v:.4f}' for k, v in per_metric_seconds.items())}")
    print(f"mean NME %: {', '.join(f'{k} {v:.2f}' for k, v in result['mean_nme'].items())}")
    if "seconds_per_image" in inference:
        print(f"inference (separate): {1000 * inference['seconds_per_image']:.1f} ms/image, "
              f"~{inference['extrapolated_seconds_2000']:.0f} s for 2000")
    print(f"metrics: {t_metrics:.1f} s wall, {cpu_metrics:.1f} s CPU (all threads) for {args.count} images; "
          f"load average now {result['load_average_after']}")
    print(f"wrote {out.relative_to(ROOT)}")
    print(f"eval seconds_2000={t_metrics * 2000 / args.count:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
