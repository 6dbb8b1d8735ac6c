"""Data-parallel training seam: the one place that knows about tf.distribute / keras.distribution.

- TensorFlow backend: ``TF_CONFIG`` set -> ``tf.distribute.MultiWorkerMirroredStrategy``
  (several machines); more than one visible GPU -> ``tf.distribute.MirroredStrategy``;
  otherwise the default strategy. Build and compile the model inside ``plan.scope()``.
- JAX backend: more than one device -> ``keras.distribution.set_distribution(DataParallel)``
  (global; the scope is a no-op).
- Other backends / one device: nothing.

In every case the dataset's batch size is the *global* batch (split across replicas).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Callable

import keras


@dataclasses.dataclass
class DistributionPlan:
    """How training is spread: ``kind`` ("single" | "mirrored" | "multi_worker" | "jax_data_parallel"),
    ``replicas`` (devices sharing a batch) and ``scope`` (context manager for model + compile)."""

    kind: str
    replicas: int
    scope: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "replicas": self.replicas, "detail": self.detail}


def plan_distribution(mode: str = "auto") -> DistributionPlan:
    """Pick the data-parallel setup for the visible devices; ``mode="off"`` forces one device."""
    if mode == "off":
        return DistributionPlan("single", 1, detail="distribution disabled")
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if os.environ.get("TF_CONFIG"):
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
            return DistributionPlan("multi_worker", strategy.num_replicas_in_sync, strategy.scope,
                                    "tf.distribute.MultiWorkerMirroredStrategy from TF_CONFIG")
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) > 1:
            strategy = tf.distribute.MirroredStrategy([g.name for g in gpus])
            return DistributionPlan("mirrored", strategy.num_replicas_in_sync, strategy.scope,
                                    f"tf.distribute.MirroredStrategy over {len(gpus)} GPUs")
        return DistributionPlan("single", 1, detail=f"tensorflow, {len(gpus)} GPU(s)")
    if backend == "jax":
        import jax

        devices = jax.devices()
        if len(devices) > 1:
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
            return DistributionPlan("jax_data_parallel", len(devices),
                                    detail=f"keras.distribution.DataParallel over {len(devices)} "
                                           f"{devices[0].platform} devices")
        return DistributionPlan("single", 1, detail=f"jax, {devices[0].platform}")
    return DistributionPlan("single", 1, detail=f"{backend}: data parallelism not wired here")
