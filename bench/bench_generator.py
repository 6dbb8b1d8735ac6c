"""Benchmark: augmented training samples per second (issue 4 §7).

Times the training input pipeline (HDF5 read + JPEG decode + float16 map decode + full
augmentation: rotation, translation, scale, colour, occlusion + label normalisation) as
``train_model.py`` runs it: ``AugmentedDataset`` behind Keras' own PyDataset adapter with
``workers`` processes (``use_multiprocessing=True``), batches of 16, all cores. Also
reports single-process figures per stage (read, augment) so the split is visible.

Input: ``--hdf5 FILE`` or a small synthetic 300W-LP set generated and built first (not timed).
Prints machine and versions, writes bench/results/generator.json and ends with
``generator samples_per_s=<value>``.

Usage: python bench/bench_generator.py [--hdf5 FILE] [--count 256] [--workers N] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import benchenv  # noqa: E402

from prnet_keras.utils import write_json  # noqa: E402


def environment() -> dict:
    return benchenv.environment("cv2", "h5py", "keras", "numba")


def make_input(tmp: Path, count: int) -> Path:
    from prnet_keras.data.build import build_hdf5
    from prnet_keras.data.synth import generate_dataset

    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    generate_dataset(tmp / "src", layout="300wlp", count=count, seed=0, bfm="synthetic", workers=workers)
    out = tmp / "train.hdf5"
    build_hdf5(source=tmp / "src", out=out, layout="300wlp", bfm="synthetic", buildmode="train", workers=workers)
    return out


def single_process(path: Path, batch: int, repeats: int = 4) -> dict:
    """ms per sample on one core: HDF5 read+decode, augmentation, and both through the dataset."""
    from prnet_keras.data.hdf5 import PositionMapDataset
    from prnet_keras.train.augment import AugmentConfig, augment_batch
    from prnet_keras.train.dataset import AugmentedDataset

    src = PositionMapDataset([path])
    cfg = AugmentConfig.from_dict()
    rng = np.random.default_rng(0)
    idx = np.arange(batch)
    data = src.read_batch(idx)
    augment_batch(data["image"], data["position_map"], cfg, rng)  # numba compile / cache load
    t = time.perf_counter()
    for _ in range(repeats):
        data = src.read_batch(idx)
    read = (time.perf_counter() - t) / (repeats * batch)
    t = time.perf_counter()
    for _ in range(repeats):
        augment_batch(data["image"], data["position_map"], cfg, rng)
    aug = (time.perf_counter() - t) / (repeats * batch)
    ds = AugmentedDataset([path], batch_size=batch)
    n = min(len(ds), repeats)
    t = time.perf_counter()
    for i in range(n):
        ds[i]
    full = (time.perf_counter() - t) / (n * batch)
    return {"read_ms": read * 1e3, "augment_ms": aug * 1e3, "dataset_ms": full * 1e3,
            "augment_only_samples_per_s": 1.0 / aug, "dataset_samples_per_s": 1.0 / full}


def keras_pipeline(path: Path, batch: int, workers: int, epochs: int, multiprocessing: bool) -> dict:
    """Samples/s through Keras' PyDataset adapter (OrderedEnqueuer), whole epochs incl. worker start-up."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    from prnet_keras.train.dataset import AugmentedDataset

    ds = AugmentedDataset([path], batch_size=batch, workers=workers, use_multiprocessing=multiprocessing,
                          max_queue_size=2 * workers)
    adapter = PyDatasetAdapter(ds)
    samples, seconds = 0, 0.0
    for _ in range(epochs):
        t = time.perf_counter()
        adapter.on_epoch_begin()
        for x, y in adapter.get_numpy_iterator():
            samples += len(x)
        adapter.on_epoch_end()
        seconds += time.perf_counter() - t
    return {"workers": workers, "use_multiprocessing": multiprocessing, "batches_per_epoch": len(ds),
            "epochs": epochs, "samples": samples, "seconds": seconds, "samples_per_s": samples / seconds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hdf5", help="training HDF5 to read (default: generate --count synthetic samples)")
    ap.add_argument("--count", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else os.cpu_count())
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()

    env = environment()
    print("machine:", {k: env[k] for k in ("processor", "cpu_count", "affinity", "load_average_1min")})
    print("versions:", {k: env[k] for k in ("python", "numpy", "opencv", "numba", "h5py", "keras")})
    with tempfile.TemporaryDirectory(prefix="bench_generator_") as tmp:
        path = Path(args.hdf5) if args.hdf5 else make_input(Path(tmp), args.count)
        single = single_process(path, args.batch)
        print(f"one core: read {single['read_ms']:.2f} ms/sample, augment {single['augment_ms']:.2f} ms/sample, "
              f"dataset {single['dataset_ms']:.2f} ms/sample")
        procs = keras_pipeline(path, args.batch, args.workers, args.epochs, True)
        print(f"keras PyDataset, {args.workers} worker processes: {procs['samples_per_s']:.0f} samples/s")
        threads = keras_pipeline(path, args.batch, args.workers, args.epochs, False)
        print(f"keras PyDataset, {args.workers} worker threads: {threads['samples_per_s']:.0f} samples/s")
    best = max(procs, threads, key=lambda r: r["samples_per_s"])
    env["load_average_1m_after"] = os.getloadavg()[0]
    result = {"benchmark": "generator", "environment": env, "input": str(args.hdf5 or f"synthetic 300wlp x{args.count}"),
              "batch": args.batch, "augment": "configure/defaults.json 'augment' (all on)",
              "single_process": single, "processes": procs, "threads": threads,
              "samples_per_s": best["samples_per_s"],
              "reported_mode": "processes" if best is procs else "threads", "target_samples_per_s": 1000}
    write_json(ROOT / "bench" / "results" / "generator.json", result)
    print(f"generator samples_per_s={best['samples_per_s']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
