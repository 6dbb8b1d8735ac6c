"""The augmenting ``keras.utils.PyDataset`` over position-map HDF5 files, and the training stream.

A batch is ``(image, label)`` or ``(image, label, sample_weight)``: image (B, 256, 256, 3)
float32 crop / 255 in [0, 1]; label (B, 256, 256, 3) float32 position map / LABEL_SCALE
(281.6), so the network's sigmoid × 281.6 is crop pixels; sample_weight (B,) float32.
With on-accelerator augmentation (``on_device``) a training batch is instead a dict of the
decoded crop (uint8), the position map and the sampled augmentation parameters, which
:mod:`.device_augment` applies inside the train step.

Batches are made by :class:`~prnet_keras.train.batches.BatchMaker` (deterministic per
sample, see there) on :class:`~prnet_keras.train.loader.BatchLoader` workers: threads, or
processes that decode into shared buffers. Keras sees a single-threaded PyDataset; the
loader makes batches ahead itself and keeps its workers for the whole run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np

from prnet_keras.errors import InputError
from prnet_keras.geometry.uv import UVLayout
from prnet_keras.train.augment import AugmentConfig
from prnet_keras.train.batches import (
    MODES,
    ArraySource,
    BatchMaker,
    BatchPlan,
    open_source,
)
from prnet_keras.train.distribute import DistributionPlan, distributed_input
from prnet_keras.train.loader import BatchLoader

__all__ = ["ArraySource", "AugmentedDataset", "TrainStream", "open_source", "yaw_balanced_weights"]


def _as_tuple(batch: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    out = (batch["image"], batch["label"])
    return out + (batch["weight"],) if "weight" in batch else out


def _as_device_inputs(batch: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray]]:
    return (dict(batch),)


class AugmentedDataset(keras.utils.PyDataset):
    """Batches of (image, label[, sample_weight]) from HDF5 files or a source object.

    Args:
        source: HDF5 path(s) (opened lazily, once per process) or an object with
            ``__len__``, ``read_batch(indices, rng=None, meta=True[, out=None])`` and
            ``store`` (e.g. :class:`ArraySource` or an open ``PositionMapDataset``).
        batch_size: samples per batch.
        mode: "train" (shuffled each epoch, augmented, last partial batch dropped so
            shapes stay static) or "val" (file order, no augmentation, all samples).
        augment: :class:`AugmentConfig`, a dict of overrides of the configured defaults,
            or None (defaults in train mode, nothing in val mode).
        seed: seeds shuffling and augmentation.
        epoch: first epoch (a resumed run passes its start epoch).
        max_batches: cap on batches per epoch (quick runs); the cap takes a fresh shuffled
            subset each epoch in train mode.
        sample_weight: optional (N,) per-sample weights returned as the third element.
        workers: batch-making workers (1: in the calling thread).
        use_multiprocessing: workers are processes writing into shared buffers (no pickled
            arrays) instead of threads.
        max_queue_size: batches made ahead (default 2 per worker).
        on_device: leave augmentation to the accelerator (batches are dicts, see module doc).
        shard, num_shards: this process' part of every global batch (multi-process data
            parallelism): ``__getitem__`` returns shard ``shard`` of ``num_shards``.
        replicas: val mode: devices sharing each batch; the last partial batch is cut to a
            multiple of it (every replica gets an equal share).
        skip_log: CSV file (name, reason) that samples skipped as unreadable or non-finite
            are appended to (the trainer passes ``<run>/skipped_samples.csv``); a skipped
            sample's place in its batch is taken by a good sample of the same batch.
    """

    def __init__(
        self,
        source: Any,
        batch_size: int = 16,
        mode: str = "train",
        augment: AugmentConfig | dict | None = None,
        seed: int = 0,
        epoch: int = 0,
        max_batches: int | None = None,
        sample_weight: np.ndarray | None = None,
        workers: int = 1,
        use_multiprocessing: bool = False,
        max_queue_size: int | None = None,
        on_device: bool = False,
        shard: int = 0,
        num_shards: int = 1,
        replicas: int = 1,
        skip_log: str | Path | None = None,
    ) -> None:
        # Keras sees one in-process worker: the loader below owns the parallelism.
        super().__init__(workers=1, use_multiprocessing=False)
        if mode not in MODES:
            raise InputError(f"dataset mode: expected one of {MODES}, got {mode!r}")
        if int(batch_size) < 1:
            raise InputError(f"batch size: expected a positive integer, got {batch_size!r}")
        if isinstance(augment, AugmentConfig):
            augment_cfg = augment
        elif mode == "train":
            augment_cfg = AugmentConfig.from_dict(augment)
        else:
            augment_cfg = AugmentConfig.disabled() if augment is None else AugmentConfig.from_dict(augment)
        self.maker = BatchMaker(source, BatchPlan(1, 1, mode), augment_cfg, on_device=on_device, skip_log=skip_log)
        n = len(self.maker.source)
        if n == 0:
            raise InputError(f"dataset {self.maker.describe()}: holds no samples")
        if mode == "train" and n < int(batch_size):
            raise InputError(f"dataset {self.maker.describe()}: {n} samples, fewer than one batch of {batch_size}")
        self.n_samples, self.mode, self.epoch = n, mode, int(epoch)
        self.shard, self.num_shards = int(shard), int(num_shards)
        self.plan = BatchPlan(n, int(batch_size), mode, int(seed), None if max_batches is None else int(max_batches),
                              int(replicas) if mode == "val" else 1)
        self.maker.plan = self.plan
        self.sample_weight = sample_weight
        self.loader = BatchLoader(self.maker, workers, use_multiprocessing, max_queue_size,
                                  max_rows=self.plan.max_shard_size(self.num_shards))
        self.data_workers, self.data_processes = self.loader.workers, self.loader.processes

    # ---- attributes kept from the first version of this class -------------------------------
    batch_size = property(lambda self: self.plan.batch_size)
    seed = property(lambda self: self.plan.seed)
    max_batches = property(lambda self: self.plan.max_batches)
    augment = property(lambda self: self.maker.augment)
    on_device = property(lambda self: self.maker.on_device)

    @property
    def sample_weight(self) -> np.ndarray | None:
        return self.maker.sample_weight

    @sample_weight.setter
    def sample_weight(self, value: np.ndarray | None) -> None:
        w = None if value is None else np.asarray(value, np.float32).reshape(-1)
        if w is not None and w.shape[0] != self.n_samples:
            raise InputError(f"sample_weight: expected {self.n_samples} values, got {w.shape[0]}")
        self.maker.sample_weight = w

    @property
    def source(self) -> Any:
        return self.maker.source

    @property
    def skipped(self) -> dict[int, str]:
        """Samples left out as unreadable or non-finite (by this process: worker processes
        report theirs on stderr and in ``skip_log``)."""
        return self.maker.skipped

    @property
    def layout(self) -> UVLayout | None:
        return getattr(self.source, "layout", None)

    # ---- PyDataset protocol ------------------------------------------------------------------
    @property
    def num_batches(self) -> int:
        return self.plan.num_batches

    def __len__(self) -> int:
        return self.num_batches

    def order(self, epoch: int | None = None) -> np.ndarray:
        """(N,) sample order of an epoch: a seeded permutation in train mode, file order in val."""
        return self.plan.order(self.epoch if epoch is None else int(epoch))

    def batch_indices(self, index: int, epoch: int | None = None) -> np.ndarray:
        """Sorted sample indices of (this process' shard of) batch ``index``."""
        e = self.epoch if epoch is None else int(epoch)
        return self.plan.shard_indices(e, index, self.shard, self.num_shards)

    def key(self, index: int, epoch: int | None = None) -> tuple[int, int, int, int]:
        return (self.epoch if epoch is None else int(epoch), int(index), self.shard, self.num_shards)

    def __getitem__(self, index: int) -> tuple:
        if not 0 <= index < self.num_batches:
            raise IndexError(f"batch {index} out of range [0, {self.num_batches})")
        ahead = [self.key(i) for i in range(index + 1, min(index + 1 + self.loader.depth, self.num_batches))]
        batch = self.loader.get(self.key(index), ahead)
        return _as_device_inputs(batch) if self.on_device else _as_tuple(batch)

    def on_epoch_end(self) -> None:
        # The next epoch gets a fresh permutation and fresh augmentation draws.
        self.epoch += 1

    def close(self) -> None:
        """Stop the data workers (a later access starts them again)."""
        self.loader.close()

    def output_signature(self, num_shards: int = 1) -> tuple:
        """The structure of one item of :meth:`stream`: nested (shape, dtype) with the
        batch dimension (None where the last validation batch is smaller)."""
        rows = self.plan.batch_size // num_shards if self.mode == "train" else None
        fields = {k: ((rows, *shape[1:]), dtype) for k, (shape, dtype) in self.maker.fields(1).items()}
        if self.on_device:
            return (fields,)
        out = (fields["image"], fields["label"])
        return out + (fields["weight"],) if "weight" in fields else out

    def stream(self, first_epoch: int, epochs: int, shards: tuple[int, ...] | None = None,
               num_shards: int | None = None, record: str | None = None) -> "TrainStream":
        """The batches of epochs ``first_epoch .. epochs - 1`` back to back (see :class:`TrainStream`)."""
        return TrainStream(self, first_epoch, epochs, shards, num_shards, record)


class TrainStream(keras.utils.PyDataset):
    """Training batches addressed by position: item k is batch ``k % steps`` of epoch
    ``first_epoch + k // steps``.

    Given to ``fit`` with ``steps_per_epoch=steps``, Keras keeps one iterator across epochs,
    so which data an epoch sees depends only on its number, never on how often Keras called
    ``on_epoch_end`` or on a look-ahead batch it took and dropped. ``shards`` (of
    ``num_shards``) are the parts of every global batch this process makes, one item per
    shard in order (one per local replica for ``tf.distribute``). ``record``: append
    "k epoch step shard i1 i2 ..." per item handed out (a debugging aid, used by the
    multi-worker tests to prove each sample is seen once per epoch).
    """

    def __init__(self, dataset: AugmentedDataset, first_epoch: int, epochs: int,
                 shards: tuple[int, ...] | None = None, num_shards: int | None = None,
                 record: str | None = None) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        self.dataset, self.first_epoch, self.epochs = dataset, int(first_epoch), int(epochs)
        self.num_shards = int(num_shards or dataset.num_shards)
        self.shards = tuple(shards) if shards is not None else (dataset.shard,)
        self.steps = dataset.num_batches
        self.record = record

    @property
    def num_batches(self) -> int:
        return (self.epochs - self.first_epoch) * self.steps * len(self.shards)

    def __len__(self) -> int:
        return self.num_batches

    def key(self, k: int) -> tuple[int, int, int, int]:
        per_epoch = self.steps * len(self.shards)
        epoch, rest = divmod(int(k), per_epoch)
        step, j = divmod(rest, len(self.shards))
        return (self.first_epoch + epoch, step, self.shards[j], self.num_shards)

    def __getitem__(self, k: int) -> tuple:
        if not 0 <= k < self.num_batches:
            raise IndexError(f"stream item {k} out of range [0, {self.num_batches})")
        depth = self.dataset.loader.depth
        ahead = [self.key(i) for i in range(k + 1, min(k + 1 + depth, self.num_batches))]
        key = self.key(k)
        batch = self.dataset.loader.get(key, ahead)
        if self.record:
            idx = self.dataset.plan.shard_indices(*key)
            with open(self.record, "a") as f:
                f.write(" ".join(str(v) for v in (k, *key[:3], *idx.tolist())) + "\n")
        return _as_device_inputs(batch) if self.dataset.on_device else _as_tuple(batch)

    def __iter__(self):
        for k in range(self.num_batches):
            yield self[k]


def fit_inputs(plan: DistributionPlan, train_ds: AugmentedDataset, val_ds: AugmentedDataset | None,
               first_epoch: int, epochs: int, record: str | None = None) -> tuple[Any, Any]:
    """(training, validation) inputs for ``fit``: this process' shards of every batch, the
    epochs ``first_epoch .. epochs - 1`` back to back (:class:`TrainStream`), through
    ``tf.data`` / ``tf.distribute`` on TensorFlow. ``record``: a folder; each process appends
    what it trains on to ``worker-<rank>.txt`` (see :class:`TrainStream`)."""
    record_file = None
    if record:
        Path(record).mkdir(parents=True, exist_ok=True)
        record_file = str(Path(record) / f"worker-{plan.worker_index}.txt")

    def train_stream(shards: tuple[int, ...], num_shards: int) -> Any:
        return train_ds.stream(first_epoch, epochs, shards, num_shards, record_file)

    def val_stream(shards: tuple[int, ...], num_shards: int) -> Any:
        return val_ds.stream(0, 1, shards, num_shards)

    train_input = distributed_input(plan, train_stream, train_ds.output_signature(plan.input_shards()[1]))
    if val_ds is None:
        return train_input, None
    if plan.replicas == 1 and keras.backend.backend() != "tensorflow":
        return train_input, val_ds
    return train_input, distributed_input(plan, val_stream, val_ds.output_signature(plan.input_shards()[1]),
                                          repeat=True)


def yaw_balanced_weights(yaw_deg: np.ndarray, bins: Any = (0, 30, 60, 90)) -> np.ndarray:
    """(N,) per-sample weights ∝ 1 / (count of the sample's |yaw| bin), mean 1.

    Counters the frontal bias of 300W-LP when passed as ``sample_weight``.
    """
    a = np.abs(np.asarray(yaw_deg, np.float64))
    b = np.clip(np.digitize(a, np.asarray(bins[1:-1], np.float64)), 0, len(bins) - 2)
    counts = np.bincount(b, minlength=len(bins) - 1).astype(np.float64)
    w = 1.0 / counts[b]
    return (w / w.mean()).astype(np.float32)

