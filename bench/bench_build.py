"""Benchmark: GT position-map HDF5 build throughput (issue 3 §7).

Generates >= 1,000 300W-LP-layout samples (synthetic renders posed with a BFM-sized model:
the mean-only BFM when the reference data is present, else the synthetic model at BFM
density), then times ``build_hdf5`` on them with all cores (crops store, JPEG crops,
float16 position maps, shuffle + gzip). Input generation is not timed.

Prints the machine and versions, the per-stage split (decode, model, render, encode,
write: CPU ms per sample, summed over workers, so a shared machine's load does not inflate
them) and the rate those CPU costs allow on the given cores, writes
bench/results/build.json and ends with ``build samples_per_s=<value>`` (wall clock).

Usage: python bench/bench_build.py [--count 1000] [--workers N] [--bfm SPEC] [--store crops|raw]
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


import benchenv  # noqa: E402

from prnet_keras.utils import reference_data_dir, usable_cores, write_json  # noqa: E402


def environment() -> dict:
    return benchenv.environment("cv2", "h5py", "numba")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000, help="300W-LP images to build (even, >= 1000 for the report)")
    ap.add_argument("--workers", type=int, default=usable_cores())
    ap.add_argument("--bfm", default=None, help="model spec (default: mean-only BFM if present, else synthetic:bfm)")
    ap.add_argument("--store", default="crops", choices=["crops", "raw"])
    ap.add_argument("--keep", default=None, help="keep the generated input in this folder (reused when present)")
    args = ap.parse_args()

    from prnet_keras.data.build import build_hdf5
    from prnet_keras.data.synth import generate_dataset

    env = environment()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    ref = reference_data_dir()
    bfm = args.bfm or (str(ref / "bfm-mean") if ref else "synthetic:bfm")
    # the result names the model, not a path on the measuring machine
    bfm_label = "mean-only BFM (reference data)" if ref and not args.bfm else bfm
    work = Path(tempfile.mkdtemp(prefix="bench_build_"))
    src = Path(args.keep) if args.keep else work / "300W_LP"
    try:
        if not src.exists() or not any(src.rglob("*.jpg")):
            t0 = time.perf_counter()
            generate_dataset(src, layout="300wlp", count=args.count, seed=0, bfm=bfm, workers=args.workers)
            print(f"generated {args.count} inputs in {time.perf_counter() - t0:.1f} s (not timed)", flush=True)
        t0 = time.perf_counter()
        s = build_hdf5(src, work / "train.hdf5", bfm=bfm, workers=args.workers, store=args.store,
                       limit=args.count, seed=0)
        wall = time.perf_counter() - t0
        n = s.written + s.skipped
        rate = n / wall
        per = {k: 1000.0 * v / max(n, 1) for k, v in s.stage_seconds.items()}
        size = (work / "train.hdf5").stat().st_size
        print(f"bfm={bfm} store={args.store} workers={args.workers} samples={n} skipped={s.skipped} "
              f"wall={wall:.2f}s file={size / 2**20:.1f} MiB ({size / max(n, 1) / 1024:.0f} KiB/sample)")
        cpu_ms = sum(per.values())
        cpu_rate = 1000.0 * args.workers / cpu_ms if cpu_ms else 0.0
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        print("stages (CPU ms per sample): " + ", ".join(f"{k} {v:.2f}" for k, v in per.items())
              + f", total {cpu_ms:.2f} -> {cpu_rate:.0f} samples/s on {args.workers} free cores")
        print(f"load average during the run: {load}")
        result = {
            "name": "build", "environment": env, "bfm": bfm_label, "store": args.store, "workers": args.workers,
            "samples": n, "skipped": s.skipped, "wall_s": wall, "samples_per_s": rate,
            "stage_cpu_ms_per_sample": per, "cpu_ms_per_sample": cpu_ms, "cpu_bound_samples_per_s": cpu_rate,
            "load_average_1min": load, "file_bytes": size, "target_samples_per_s": 200,
        }
        (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
        write_json(ROOT / "bench" / "results" / "build.json", result)
        print(f"build samples_per_s={rate:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
