"""Benchmark: augmented training samples per second, and CPU time per sample, per worker kind.

Times the training input pipeline as ``train_model.py`` runs it: the training stream of
``AugmentedDataset`` (HDF5 read + crop decode + float16 map decode + augmentation:
rotation, translation, scale, colour, occlusion + label normalisation), batches of 16,
with N worker **threads** and N worker **processes** (which decode into shared memory),
measured side by side (A/B interleaved, ``--rounds`` times) because the machine may be
shared. Each measurement is one untimed warm-up epoch then ``--epochs`` timed ones, the
file listed ``--repeat`` times so epochs are long (steady state, not worker start-up).

Reported per setting: wall-clock samples/s and CPU ms per sample (the process and all its
worker processes; on a loaded machine CPU time is the steadier figure). Settings:

- the default storage format (JPEG crops, gzip maps) on 1 core and on 2 cores (CPU
  affinity), threads and processes: the per-core rate and a 16-core extrapolation
  (per-core rate × 16, stated as an extrapolation, not a measurement);
- ``--augment-on-device``: the CPU only decodes (augmentation runs in the train step): its
  CPU time per sample against full CPU augmentation;
- with ``--all-formats`` also ``--compression none`` and ``--crop-format raw --compression none``.

Input: ``--hdf5 FILE`` or a small synthetic 300W-LP set generated and built first (not
timed). Prints machine, versions and load, writes bench/results/generator.json and ends
with ``generator samples_per_s=<value>``: the default format with 2 workers, the faster
worker kind (the line before says which).

Usage: python bench/bench_generator.py [--hdf5 FILE] [--count 256] [--repeat 4] [--workers 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import benchenv  # noqa: E402

from prnet_keras.utils import usable_cores, write_json  # noqa: E402

# (label, crop_format, compression), in the order measured
FORMATS = [("jpeg+gzip (default)", "jpeg", "gzip"), ("jpeg+none", "jpeg", "none"), ("raw+none", "raw", "none")]


def environment() -> dict:
    return benchenv.environment("cv2", "h5py", "keras", "numba")


def make_inputs(tmp: Path, count: int, formats: list) -> dict[str, Path]:
    """One synthetic 300W-LP folder built into every measured format."""
    from prnet_keras.data.build import build_hdf5
    from prnet_keras.data.synth import generate_dataset

    generate_dataset(tmp / "src", layout="300wlp", count=count, seed=0, bfm="synthetic", workers=usable_cores())
    files = {}
    for label, crop_format, compression in formats:
        out = tmp / f"train-{crop_format}-{compression}.hdf5"
        build_hdf5(source=tmp / "src", out=out, layout="300wlp", bfm="synthetic", buildmode="train",
                   workers=usable_cores(), crop_format=crop_format, compression=compression)
        files[label] = out
    return files


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of other processes (our worker processes)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (FileNotFoundError, IndexError):
            pass
    return total


def measure(paths: list[Path], batch: int, workers: int, processes: bool, epochs: int, cores: set[int],
            on_device: bool = False) -> dict:
    """Samples/s and CPU ms/sample of the training stream, restricted to ``cores``."""
    from prnet_keras.train.dataset import AugmentedDataset

    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)  # worker processes inherit it
    try:
        ds = AugmentedDataset(paths, batch_size=batch, workers=workers, use_multiprocessing=processes,
                              on_device=on_device)
        stream = ds.stream(0, epochs + 1)
        steps, t0, cpu0, samples = len(ds), 0.0, 0.0, 0
        pids: list[int] = []
        for k, item in enumerate(stream):
            if k == steps:  # warm-up epoch done (workers started, caches warm)
                pool = ds.loader._pool
                pids = [p.pid for p in getattr(pool, "procs", [])]
                t0, cpu0 = time.perf_counter(), time.process_time() + _cpu_seconds(pids)
            if k >= steps:
                samples += len(item[0]["image"] if on_device else item[0])
        wall = time.perf_counter() - t0
        cpu = time.process_time() + _cpu_seconds(pids) - cpu0
        ds.close()
    finally:
        os.sched_setaffinity(0, previous)
    return {"workers": workers, "processes": processes, "on_device": on_device, "cores": len(cores),
            "batches_per_epoch": steps, "timed_epochs": epochs, "samples": samples, "seconds": wall,
            "samples_per_s": samples / wall, "cpu_ms_per_sample": cpu / samples * 1e3,
            "load_average_1min": os.getloadavg()[0]}


def median_of(runs: list[dict]) -> dict:
    out = dict(runs[0])
    for key in ("samples_per_s", "cpu_ms_per_sample", "seconds", "load_average_1min"):
        out[key] = statistics.median(r[key] for r in runs)
    out["rounds"] = [{k: r[k] for k in ("samples_per_s", "cpu_ms_per_sample", "load_average_1min")} for r in runs]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hdf5", help="training HDF5 to read (default: generate --count synthetic samples)")
    ap.add_argument("--count", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=4, help="list the file this many times (longer epochs)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1, help="timed epochs (after one warm-up epoch)")
    ap.add_argument("--rounds", type=int, default=2, help="A/B rounds of every setting (median reported)")
    ap.add_argument("--all-formats", action="store_true", help="also the two larger storage formats")
    args = ap.parse_args()

    env = environment()
    print("machine:", {k: env[k] for k in ("processor", "cpu_count", "affinity", "load_average_1min")})
    print("versions:", {k: env[k] for k in ("python", "numpy", "opencv", "numba", "h5py", "keras")})
    all_cores = sorted(os.sched_getaffinity(0))
    two = set(all_cores[:2])
    one = {all_cores[0]}
    formats = FORMATS if args.all_formats else FORMATS[:1]
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_generator_") as tmp:
        files = {FORMATS[0][0]: Path(args.hdf5)} if args.hdf5 else make_inputs(Path(tmp), args.count, formats)
        default = files[FORMATS[0][0]]
        settings = {  # name -> measure() arguments
            "threads, 2 cores": dict(processes=False, cores=two),
            "processes, 2 cores": dict(processes=True, cores=two),
            "threads, 1 core": dict(processes=False, cores=one),
            "processes, 1 core": dict(processes=True, cores=one),
            "processes, 2 cores, augmentation on the accelerator": dict(processes=True, cores=two, on_device=True),
        }
        runs: dict[str, list] = {name: [] for name in settings}
        for r in range(args.rounds):  # interleaved: every setting sees the same machine load
            for name, kw in settings.items():
                runs[name].append(measure([default] * args.repeat, args.batch, args.workers, epochs=args.epochs, **kw))
                last = runs[name][-1]
                print(f"round {r + 1} {name}: {last['samples_per_s']:.0f} samples/s, "
                      f"{last['cpu_ms_per_sample']:.2f} CPU ms/sample (load {last['load_average_1min']:.1f})")
        default_results = {name: median_of(v) for name, v in runs.items()}
        results[FORMATS[0][0]] = default_results
        for label, path in list(files.items())[1:]:
            results[label] = {name: median_of([measure([path] * args.repeat, args.batch, args.workers,
                                                       epochs=args.epochs, **settings[name])])
                              for name in ("threads, 2 cores", "processes, 2 cores")}
    d = default_results
    best_kind = max(("threads, 2 cores", "processes, 2 cores"), key=lambda k: d[k]["samples_per_s"])
    per_core = {kind: 1e3 / d[f"{kind}, 1 core"]["cpu_ms_per_sample"] for kind in ("threads", "processes")}
    cpu_aug = d["processes, 2 cores"]["cpu_ms_per_sample"]
    cpu_dev = d["processes, 2 cores, augmentation on the accelerator"]["cpu_ms_per_sample"]
    summary = {
        "per_core_samples_per_s": per_core,
        "extrapolated_16_cores_samples_per_s": {k: 16 * v for k, v in per_core.items()},
        "extrapolation_note": "16 x the 1-core rate (CPU time per sample); not measured",
        "scaling_1_to_2_cores": {kind: d[f"{kind}, 2 cores"]["samples_per_s"] / d[f"{kind}, 1 core"]["samples_per_s"]
                                 for kind in ("threads", "processes")},
        "cpu_ms_per_sample_cpu_augmentation": cpu_aug, "cpu_ms_per_sample_on_accelerator": cpu_dev,
        "cpu_saving_on_accelerator": 1 - cpu_dev / cpu_aug,
    }
    for name, res in d.items():
        print(f"{FORMATS[0][0]}, {args.workers} workers, {name}: {res['samples_per_s']:.0f} samples/s, "
              f"{res['cpu_ms_per_sample']:.2f} CPU ms/sample")
    print(f"per core (CPU time): threads {per_core['threads']:.0f}, processes {per_core['processes']:.0f} samples/s; "
          f"16 cores extrapolated: {16 * per_core['processes']:.0f} samples/s (not measured)")
    print(f"augmentation on the accelerator: CPU {cpu_dev:.2f} ms/sample vs {cpu_aug:.2f} "
          f"({100 * summary['cpu_saving_on_accelerator']:.0f} % less)")
    env["load_average_1m_after"] = os.getloadavg()[0]
    best = d[best_kind]["samples_per_s"]
    write_json(ROOT / "bench" / "results" / "generator.json", {
        "benchmark": "generator", "environment": env,
        "input": str(args.hdf5 or f"synthetic 300wlp x{args.count}, listed x{args.repeat}"),
        "batch": args.batch, "workers": args.workers, "augment": "packaged defaults.json 'augment' (all on)",
        "formats": results, "summary": summary, "samples_per_s": best, "reported_format": FORMATS[0][0],
        "reported_mode": best_kind, "target_samples_per_s": 1000})
    print(f"default format, {args.workers} workers: {best_kind} fastest")
    print(f"generator samples_per_s={best:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
