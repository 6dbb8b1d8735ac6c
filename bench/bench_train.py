"""Benchmark: training-step throughput (images/s) per network and setting, on any Keras backend.

For each model (resfcn256, light) and setting — ``fp32`` (the trainer's default: float32,
no XLA), ``fp32_jit`` (``jit_compile=True``) and ``bf16`` (``mixed_bfloat16`` policy, where
the device supports it) — it compiles the model with the project's loss (weighted MSE) and
landmark-NME metric, runs ``--warmup`` steps (tracing / compilation, timed apart), then
``--steps`` timed ``train_on_batch`` steps on a fixed random batch already on the device
(so the figure is the network, not the input pipeline). Wall time is the figure; process CPU
time and the load average are recorded because the machines here are shared.

Backend-agnostic: set ``KERAS_BACKEND`` (tensorflow, jax, torch); TensorFlow is imported
only when it is the backend. On JAX, ``jit_compile=False`` means op-by-op eager execution,
not a training mode: ``fp32`` runs jitted there (Keras' JAX default) and ``fp32_jit`` is skipped.

Writes bench/results/train.json (``--out``); the last line is
``train images_per_s=<resfcn256 fp32 value>``.

Usage: python bench/bench_train.py [--models resfcn256,light] [--batch 16] [--steps 3]
       KERAS_BACKEND=jax python bench/bench_train.py --batch 128 --steps 20   # a GPU machine
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from prnet_keras.utils import write_json  # noqa: E402

SETTINGS = ("fp32", "fp32_jit", "bf16")


def accelerators(backend: str) -> list[str]:
    """Names of the accelerators the backend sees (empty on CPU)."""
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform != "cpu"]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def environment(backend: str) -> dict:
    import keras

    versions = {"python": platform.python_version(), "numpy": np.__version__, "keras": keras.__version__}
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    if module:
        versions[module] = __import__(module).__version__
    gpu_info = None
    try:
        gpu_info = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                   "--format=csv,noheader"],
                                  capture_output=True, text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "machine": platform.machine(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(), "keras_backend": backend, "versions": versions,
        "accelerators": accelerators(backend), "nvidia_smi": gpu_info,
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def make_batch(batch: int, seed: int = 0):
    """A fixed random batch, a face-square weight mask and 68 landmark pixels (256²)."""
    rng = np.random.default_rng(seed)
    x = rng.random((batch, 256, 256, 3), np.float32)
    y = rng.random((batch, 256, 256, 3), np.float32)
    mask = np.zeros((256, 256), np.float32)
    mask[32:224, 32:224] = 3 / 16
    kpt = np.stack([rng.integers(40, 216, 68), rng.integers(40, 216, 68)])
    mask[kpt[1], kpt[0]] = 1.0
    return x, y, mask, kpt


def run_setting(model_name: str, setting: str, batch: int, steps: int, warmup: int, backend: str) -> dict:
    """Time one (model, setting); returns a result row (status 'ok', 'skipped' or 'failed')."""
    import keras

    from prnet_keras.model import LandmarkNME, build_model, get_loss

    row = {"model": model_name, "setting": setting, "batch": batch, "steps": steps}
    if setting == "fp32_jit" and backend == "jax":
        return {**row, "status": "skipped", "reason": "JAX always jit-compiles training (fp32 row)"}
    jit = setting == "fp32_jit" or (backend == "jax")
    policy = "mixed_bfloat16" if setting == "bf16" else "float32"
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_model(model_name)
        x, y, mask, kpt = make_batch(batch)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=get_loss("weighted_mse", mask),
                      metrics=[LandmarkNME(kpt)], jit_compile=jit)
        # Device-resident inputs: measure the step, not host->device copies of a fixed batch.
        xt, yt = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
        t0 = time.perf_counter()
        for _ in range(warmup):
            model.train_on_batch(xt, yt)  # returns host floats: the step has finished
        compile_s = time.perf_counter() - t0
        cpu0, t0 = time.process_time(), time.perf_counter()
        for _ in range(steps):
            logs = model.train_on_batch(xt, yt, return_dict=True)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        if not np.isfinite(float(logs["loss"])):
            return {**row, "status": "failed", "reason": f"non-finite loss {logs['loss']}"}
        return {**row, "status": "ok", "jit_compile": jit, "policy": policy,
                "params": int(sum(int(np.prod(w.shape)) for w in model.weights)),
                "images_per_s": round(batch * steps / wall, 3), "step_ms": round(1000 * wall / steps, 2),
                "cpu_s_per_step": round(cpu / steps, 3), "warmup_s": round(compile_s, 2)}
    except Exception as exc:  # noqa: BLE001 - an unsupported setting is a result, not a crash
        reason = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        return {**row, "status": "failed", "reason": reason}
    finally:
        keras.mixed_precision.set_global_policy("float32")
        keras.backend.clear_session()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resfcn256,light", help="comma-separated model names")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated subset of {SETTINGS}")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 16 on CPU, 128 with a GPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 3 on CPU, 20 with a GPU)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (compilation)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "train.json"))
    args = parser.parse_args(argv)

    import keras

    backend = keras.backend.backend()
    env = environment(backend)
    gpu = bool(env["accelerators"])
    batch = args.batch or (128 if gpu else 16)
    steps = args.steps or (20 if gpu else 3)
    print(f"backend {backend}  keras {env['versions']['keras']}  {env['versions']}")
    print(f"machine {env['platform']}  cpus {env['affinity']}/{env['cpu_count']}"
          f"  accelerators {env['accelerators'] or 'none'}  load {env['loadavg_1_5_15']}")
    print(f"batch {batch}  steps {steps}  warmup {args.warmup}")
    settings = [s for s in args.settings.split(",") if s]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        print(f"error: unknown setting(s) {', '.join(unknown)}; expected {', '.join(SETTINGS)}", file=sys.stderr)
        return 2
    rows: list[dict] = []

    def save(final: bool) -> dict | None:
        """Write the JSON (after every row too, so an interrupted run keeps what it measured)."""
        head = next((r for r in rows if r["model"] == "resfcn256" and r["setting"] == "fp32" and r["status"] == "ok"),
                    None)
        env["loadavg_after"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
        write_json(args.out, {"benchmark": "train", "complete": final, "environment": env, "batch": batch,
                              "steps": steps, "warmup": args.warmup, "results": rows,
                              "headline": {"model": "resfcn256", "setting": "fp32",
                                           "images_per_s": head["images_per_s"] if head else None}})
        return head

    for model_name in [m for m in args.models.split(",") if m]:
        for setting in settings:
            row = run_setting(model_name, setting, batch, steps, args.warmup, backend)
            rows.append(row)
            save(final=False)
            if row["status"] == "ok":
                print(f"{model_name:10s} {setting:9s} {row['images_per_s']:9.2f} images/s"
                      f"  {row['step_ms']:9.1f} ms/step"
                      f"  (warm-up {row['warmup_s']:.1f} s, cpu {row['cpu_s_per_step']:.2f} s/step)", flush=True)
            else:
                print(f"{model_name:10s} {setting:9s} {row['status']}: {row['reason']}", flush=True)
    headline = save(final=True)
    print(f"wrote {args.out}")
    print(f"train images_per_s={headline['images_per_s'] if headline else 'nan'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
