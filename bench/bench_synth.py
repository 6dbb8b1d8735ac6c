"""Benchmark: synthetic dataset generation throughput and MTCNN face-likeness (issue 3 §1).

1. Generates ``--count`` AFLW2000-3D-layout images (JPEG + .mat, default settings: random
   pose with AFLW2000's yaw mix, occluders on) with ``--workers`` processes and times it.
   Also measures CPU milliseconds per image in one process (comparable across loads).
2. Face-likeness: renders ``--mtcnn-count`` near-frontal images (|yaw| <= 30°, no occluders,
   otherwise default settings and a different seed) and runs MTCNN (mtcnn 1.0) on each; a
   face counts as detected when a box overlaps the 68-landmark box with IoU >= 0.3. The
   same rate over the near-frontal images of step 1 (occluders on) is reported too.

Prints the machine and versions, writes bench/results/synth.json and ends with
``synth samples_per_s=<value> mtcnn_frontal_rate=<value>``.

Usage: python bench/bench_synth.py [--count 1000] [--workers N] [--mtcnn-count 100] [--bfm synthetic]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import benchenv  # noqa: E402

from prnet_keras.utils import usable_cores, write_json  # noqa: E402


def environment() -> dict:
    return benchenv.environment("cv2", "numba", "scipy")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    lo, hi = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    union = float(np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2])) - inter
    return inter / union if union > 0 else 0.0


def mtcnn_rate(paths: list[Path], max_yaw: float = 30.0) -> tuple[float, int, float]:
    """(detected share, images tested, seconds per image) over the images with |yaw| <= max_yaw."""
    import cv2
    import scipy.io
    from mtcnn import MTCNN

    detector = MTCNN()
    hits = tested = 0
    t0 = time.perf_counter()
    for p in paths:
        mat = scipy.io.loadmat(str(p.with_suffix(".mat")))
        if abs(np.degrees(mat["Pose_Para"][0, 1])) > max_yaw:
            continue
        k = mat["pt3d_68"][:2].T
        kbox = np.concatenate([k.min(0), k.max(0)])
        rgb = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        boxes = [np.array([d["box"][0], d["box"][1], d["box"][0] + d["box"][2], d["box"][1] + d["box"][3]], float)
                 for d in detector.detect_faces(rgb)]
        hits += any(_iou(b, kbox) >= 0.3 for b in boxes)
        tested += 1
    return (hits / tested if tested else float("nan")), tested, (time.perf_counter() - t0) / max(tested, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000, help="images to generate and time (>= 1000 for the report)")
    ap.add_argument("--workers", type=int, default=usable_cores())
    ap.add_argument("--mtcnn-count", type=int, default=100, help="near-frontal renders checked with MTCNN")
    ap.add_argument("--bfm", default="synthetic")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from prnet_keras.data.synth import generate_dataset

    env = environment()
    print("machine:", {k: env[k] for k in ("processor", "cpu_count", "affinity", "platform", "load_average_1min")})
    print("versions:", {k: env[k] for k in ("python", "numpy", "scipy", "opencv", "numba")})
    tmp = Path(tempfile.mkdtemp(prefix="bench_synth_"))
    try:
        generate_dataset(tmp / "warm", layout="aflw2000", count=2, seed=args.seed,
                         bfm=args.bfm)  # numba JIT, model cache
        t0 = time.perf_counter()
        paths = generate_dataset(tmp / "timed", layout="aflw2000", count=args.count, seed=args.seed, bfm=args.bfm,
                                 workers=args.workers)
        seconds = time.perf_counter() - t0
        rate = len(paths) / seconds
        print(f"generated {len(paths)} images in {seconds:.1f} s with {args.workers} workers: {rate:.1f} images/s")
        # CPU time per image in one process: comparable across machines and loads.
        n_cpu = min(100, args.count)
        c0 = time.process_time()
        generate_dataset(tmp / "cpu", layout="aflw2000", count=n_cpu, seed=args.seed + 2, bfm=args.bfm)
        cpu_ms = (time.process_time() - c0) / n_cpu * 1000
        print(f"one process: {cpu_ms:.1f} ms CPU per image ({1000 / cpu_ms:.1f} images/s per free core)")
        frontal = generate_dataset(tmp / "frontal", layout="aflw2000", count=args.mtcnn_count, seed=args.seed + 1,
                                   bfm=args.bfm, workers=args.workers, occluders=False, near_frontal_fraction=1.0)
        clean_rate, clean_n, det_s = mtcnn_rate(frontal)
        print(f"MTCNN, near-frontal, no occluders: {clean_rate:.3f} of {clean_n} ({det_s * 1000:.0f} ms per image)")
        occ_rate, occ_n, _ = mtcnn_rate(paths[: max(args.mtcnn_count * 3 // 2, 1)])
        print(f"MTCNN, near-frontal of the default mix (occluders on): {occ_rate:.3f} of {occ_n}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    import mtcnn

    env["mtcnn"] = getattr(mtcnn, "__version__", "1.0")
    result = {
        "name": "synth", "layout": "aflw2000", "bfm": args.bfm, "count": args.count, "workers": args.workers,
        "seconds": seconds, "samples_per_s": rate, "cpu_ms_per_image_one_process": cpu_ms,
        "mtcnn_frontal_rate": clean_rate, "mtcnn_frontal_tested": clean_n,
        "mtcnn_frontal_rate_with_occluders": occ_rate, "mtcnn_frontal_tested_with_occluders": occ_n,
        "environment": env,
    }
    out = ROOT / "bench" / "results" / "synth.json"
    write_json(out, result)
    print(f"wrote {out.relative_to(ROOT)}")
    print(f"synth samples_per_s={rate:.1f} mtcnn_frontal_rate={clean_rate:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
