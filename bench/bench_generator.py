"""Benchmark: augmented training samples per second (issue 4 §7).

Times the training input pipeline (HDF5 read + crop decode + float16 map decode + full
augmentation: rotation, translation, scale, colour, occlusion + label normalisation) as
``train_model.py`` runs it: ``AugmentedDataset`` behind Keras' own PyDataset adapter with
``workers`` threads (the default) and processes, batches of 16, all cores.

Storage decides the read cost, so each file format ``build_dataset.py`` can write is
measured: the default (JPEG crops, gzip maps), ``--compression none`` (JPEG crops, plain
maps) and ``--crop-format raw --compression none`` (nothing to decode). Epochs are long
(the file listed ``--repeat`` times: 256 x 8 = 2,048 samples, 128 batches) so the figure is
the steady state of a real epoch, not worker start-up; a first epoch warms up untimed.
Also reports one-core stage times (read, augment) per format.

Input: ``--hdf5 FILE`` (only that file) or a small synthetic 300W-LP set generated and built
in each format first (not timed). Prints machine and versions, writes
bench/results/generator.json and ends with ``generator samples_per_s=<value>``: the fastest
format's threaded figure (the line before it names the format).

Usage: python bench/bench_generator.py [--hdf5 FILE] [--count 256] [--repeat 8] [--workers N] [--epochs 2]
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

from prnet_keras.utils import usable_cores, write_json  # noqa: E402

# (label, crop_format, compression), in the order measured
FORMATS = [("jpeg+gzip (default)", "jpeg", "gzip"), ("jpeg+none", "jpeg", "none"), ("raw+none", "raw", "none")]


def environment() -> dict:
    return benchenv.environment("cv2", "h5py", "keras", "numba")


def make_inputs(tmp: Path, count: int) -> dict[str, Path]:
    """One synthetic 300W-LP folder built into every measured format."""
    from prnet_keras.data.build import build_hdf5
    from prnet_keras.data.synth import generate_dataset

    generate_dataset(tmp / "src", layout="300wlp", count=count, seed=0, bfm="synthetic", workers=usable_cores())
    files = {}
    for label, crop_format, compression in FORMATS:
        out = tmp / f"train-{crop_format}-{compression}.hdf5"
        build_hdf5(source=tmp / "src", out=out, layout="300wlp", bfm="synthetic", buildmode="train",
                   workers=usable_cores(), crop_format=crop_format, compression=compression)
        files[label] = out
    return files


def single_process(path: Path, batch: int, repeats: int = 8) -> dict:
    """ms per sample on one core: HDF5 read + decode (training read: arrays only), augmentation."""
    from prnet_keras.data.hdf5 import PositionMapDataset
    from prnet_keras.train.augment import AugmentConfig, augment_batch

    src = PositionMapDataset([path])
    cfg = AugmentConfig.from_dict()
    rng = np.random.default_rng(0)
    batches = [np.sort(rng.permutation(len(src))[:batch]) for _ in range(repeats)]
    data = src.read_batch(batches[0], meta=False)
    augment_batch(data["image"], data["position_map"], cfg, rng)  # numba compile / cache load
    t = time.perf_counter()
    for idx in batches:
        data = src.read_batch(idx, meta=False)
    read = (time.perf_counter() - t) / (repeats * batch)
    t = time.perf_counter()
    for _ in range(repeats):
        augment_batch(data["image"], data["position_map"].copy(), cfg, rng, overwrite_maps=True)
    aug = (time.perf_counter() - t) / (repeats * batch)
    return {"read_ms": read * 1e3, "augment_ms": aug * 1e3, "file_bytes_per_sample": path.stat().st_size / len(src),
            "read_modes": src.read_modes()[0]}


def keras_pipeline(paths: list[Path], batch: int, workers: int, epochs: int, multiprocessing: bool) -> dict:
    """Samples/s through Keras' PyDataset adapter (OrderedEnqueuer), timed epochs after one warm-up epoch."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    from prnet_keras.train.dataset import AugmentedDataset

    ds = AugmentedDataset(paths, batch_size=batch, workers=workers, use_multiprocessing=multiprocessing,
                          max_queue_size=2 * workers)
    adapter = PyDatasetAdapter(ds)
    samples, seconds, per_epoch = 0, 0.0, []
    for epoch in range(epochs + 1):
        t = time.perf_counter()
        n = 0
        adapter.on_epoch_begin()
        for x, _ in adapter.get_numpy_iterator():
            n += len(x)
        adapter.on_epoch_end()
        dt = time.perf_counter() - t
        if epoch:  # the first epoch starts workers and warms caches
            samples, seconds = samples + n, seconds + dt
            per_epoch.append(n / dt)
    return {"workers": workers, "use_multiprocessing": multiprocessing, "batches_per_epoch": len(ds),
            "timed_epochs": epochs, "samples": samples, "seconds": seconds, "samples_per_s": samples / seconds,
            "per_epoch_samples_per_s": per_epoch}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hdf5", help="training HDF5 to read (default: generate --count synthetic samples per format)")
    ap.add_argument("--count", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=8, help="list the file this many times (longer epochs)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=usable_cores())
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up epoch)")
    ap.add_argument("--no-processes", action="store_true", help="skip the (slow) worker-process runs")
    args = ap.parse_args()

    env = environment()
    print("machine:", {k: env[k] for k in ("processor", "cpu_count", "affinity", "load_average_1min")})
    print("versions:", {k: env[k] for k in ("python", "numpy", "opencv", "numba", "h5py", "keras")})
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_generator_") as tmp:
        files = {"given file": Path(args.hdf5)} if args.hdf5 else make_inputs(Path(tmp), args.count)
        for label, path in files.items():
            single = single_process(path, args.batch)
            paths = [path] * args.repeat
            threads = keras_pipeline(paths, args.batch, args.workers, args.epochs, False)
            procs = None if args.no_processes else keras_pipeline(paths, args.batch, args.workers, 1, True)
            results[label] = {"single_process": single, "threads": threads, "processes": procs}
            print(f"{label}: {single['file_bytes_per_sample'] / 1e3:.0f} kB/sample; one core: read "
                  f"{single['read_ms']:.2f} ms/sample, augment {single['augment_ms']:.2f} ms/sample; "
                  f"{args.workers} worker threads: {threads['samples_per_s']:.0f} samples/s"
                  + ("" if procs is None
                     else f"; {args.workers} worker processes: {procs['samples_per_s']:.0f} samples/s"))
    best_label = max(results, key=lambda k: results[k]["threads"]["samples_per_s"])
    best = results[best_label]["threads"]["samples_per_s"]
    env["load_average_1m_after"] = os.getloadavg()[0]
    write_json(ROOT / "bench" / "results" / "generator.json", {
        "benchmark": "generator", "environment": env,
        "input": str(args.hdf5 or f"synthetic 300wlp x{args.count}, listed x{args.repeat}"),
        "batch": args.batch, "augment": "packaged defaults 'augment' (all on)", "formats": results,
        "samples_per_s": best, "reported_format": best_label, "reported_mode": "threads",
        "target_samples_per_s": 1000})
    print(f"fastest format: {best_label}, {args.workers} worker threads")
    print(f"generator samples_per_s={best:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
