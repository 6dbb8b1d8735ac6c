"""What a training batch holds and how one is made: pure numpy, no Keras.

:class:`BatchPlan` says which samples form batch ``step`` of ``epoch`` and how a global
batch is split into shards (one per replica or per process). :class:`BatchMaker` reads and
augments one shard of one batch, optionally straight into caller-owned arrays (the shared
buffers of :mod:`.loader`'s worker processes).

Determinism: the sample order of epoch e is a permutation drawn from (seed, e); every
sample's random draws (augmentation, crop perturbation of raw-store files) come from its
own generator seeded with (seed, e, sample index). So a sample looks the same whichever
batch position, shard, replica, worker thread or worker process makes it, and the union of
the shards of a step is exactly the single-process global batch.

This module is imported by spawned worker processes: keep Keras / TensorFlow out of it.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from numba import njit

from prnet_keras import LABEL_SCALE
from prnet_keras.errors import InputError, PRNetError
from prnet_keras.train.augment import AugmentConfig, apply_params, sample_params_per_sample

MODES = ("train", "val")
PARAM_FIELDS = {"matrix": ((6,), np.float32), "scale": ((), np.float32), "color": ((3,), np.float32),
                "occluder": ((4,), np.int32), "occluder_noise": ((), np.int32), "occluder_color": ((3,), np.float32),
                "noise_grain": ((), np.int32), "noise_seed": ((), np.int32)}


class ArraySource:
    """In-memory source with the ``PositionMapDataset`` reading API (tests, small arrays).

    images (N, R, R, 3) uint8 crops; position_maps (N, R, R, 3) float32 crop px.
    """

    store = "crops"
    fresh_batches = True  # read_batch returns copies (fancy indexing)

    def __init__(self, images: np.ndarray, position_maps: np.ndarray, layout: Any = None) -> None:
        images, position_maps = np.asarray(images), np.asarray(position_maps, np.float32)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise InputError(f"images: expected (N, R, R, 3) uint8, got {images.shape} {images.dtype}")
        if position_maps.shape != images.shape:
            raise InputError(f"position_maps: expected shape {images.shape}, got {position_maps.shape}")
        self.images, self.position_maps, self.layout = images, position_maps, layout

    def __len__(self) -> int:
        return len(self.images)

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    def read_batch(self, indices: Sequence[int], rng: Any = None, meta: bool = True,
                   out: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        idx = np.asarray(indices, np.int64)
        if out is None:
            return {"image": self.images[idx], "position_map": self.position_maps[idx]}
        np.take(self.images, idx, axis=0, out=out["image"])
        out["position_map"][...] = self.position_maps[idx]
        return dict(out)


def open_source(paths: str | Path | Sequence[str | Path]) -> Any:
    """Open HDF5 file(s) as a ``prnet_keras.data.hdf5.PositionMapDataset``."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise InputError(f"dataset file(s) not found: {', '.join(missing)} (expected HDF5 built by build_dataset.py)")
    from prnet_keras.data.hdf5 import PositionMapDataset

    return PositionMapDataset([Path(p) for p in paths])


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """Which samples make up each batch of each epoch.

    ``mode`` "train": a fresh seeded permutation per epoch, full batches only (static
    shapes), at most ``max_batches`` per epoch (a fresh subset each epoch). "val": file
    order, the last partial batch kept, cut to a multiple of ``multiple_of`` (so that every
    replica gets an equal share; at most ``multiple_of - 1`` samples are left out).
    """

    n_samples: int
    batch_size: int
    mode: str = "train"
    seed: int = 0
    max_batches: int | None = None
    multiple_of: int = 1  # val: the last partial batch is cut to a multiple of this (replicas)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"dataset mode: expected one of {MODES}, got {self.mode!r}")
        if int(self.batch_size) < 1:
            raise InputError(f"batch size: expected a positive integer, got {self.batch_size!r}")

    @property
    def used_samples(self) -> int:
        """Samples an epoch covers (before ``max_batches``)."""
        n, b = self.n_samples, self.batch_size
        if self.mode == "train":
            return n - n % b
        return n - n % b + (n % b) // self.multiple_of * self.multiple_of

    @property
    def num_batches(self) -> int:
        full = -(-self.used_samples // self.batch_size)
        return full if self.max_batches is None else min(full, int(self.max_batches))

    def order(self, epoch: int) -> np.ndarray:
        """(N,) sample order of an epoch."""
        if self.mode != "train":
            return np.arange(self.n_samples)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(self.n_samples)

    def batch_indices(self, epoch: int, step: int) -> np.ndarray:
        """The global batch ``step`` of ``epoch`` in permutation order (not sorted)."""
        if not 0 <= step < self.num_batches:
            raise IndexError(f"batch {step} out of range [0, {self.num_batches})")
        return self.order(epoch)[step * self.batch_size:min((step + 1) * self.batch_size, self.used_samples)]

    def shard_indices(self, epoch: int, step: int, shard: int = 0, num_shards: int = 1) -> np.ndarray:
        """Sorted sample indices of shard ``shard`` of ``num_shards`` contiguous, near-equal
        parts of the global batch (sorted: HDF5 reads want increasing indices)."""
        if not 0 <= shard < num_shards:
            raise IndexError(f"shard {shard} out of range [0, {num_shards})")
        return np.sort(np.array_split(self.batch_indices(epoch, step), num_shards)[shard])

    def max_shard_size(self, num_shards: int = 1) -> int:
        return -(-min(self.batch_size, self.n_samples) // num_shards)


_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple, dtype: Any) -> np.ndarray:
    """A per-thread reusable array (fresh multi-MB arrays page-fault on every batch)."""
    key = (name, shape, np.dtype(dtype).str)
    buf = getattr(_SCRATCH, "buffers", None)
    if buf is None:
        buf = _SCRATCH.buffers = {}
    if key not in buf:
        buf[key] = np.empty(shape, dtype)
    return buf[key]


class BatchMaker:
    """Reads and augments shards of batches; picklable (sources reopen in each process).

    Args:
        source: HDF5 path(s) (opened lazily, once per process) or an object with
            ``__len__``, ``read_batch(indices, rng=None, meta=True, out=None)``, ``store``.
        plan: the :class:`BatchPlan`.
        augment: :class:`AugmentConfig` (train mode; ignored in val mode).
        sample_weight: optional (N,) float32 per-sample loss weights.
        on_device: train mode only: leave the augmentation to the accelerator
            (:mod:`.device_augment`) and return the decoded crop, the position map and the
            sampled parameters instead of augmented float32 arrays.
        skip_log: CSV file that samples skipped as unreadable or non-finite are appended to
            (``name,reason``; one row per sample and process).

    Outputs of :meth:`make` (n = samples in the shard, R = resolution):
        CPU: image (n, R, R, 3) float32 crop / 255 (augmented in train mode), label
        (n, R, R, 3) float32 position map / LABEL_SCALE, weight (n,) float32 if weighted.
        on_device: image (n, R, R, 3) uint8, position_map in crop px (:meth:`map_field`:
        float16 byte planes, float16 or float32), the :data:`PARAM_FIELDS` arrays, weight.
    """

    def __init__(self, source: Any, plan: BatchPlan, augment: AugmentConfig | None = None,
                 sample_weight: np.ndarray | None = None, on_device: bool = False,
                 skip_log: str | Path | None = None) -> None:
        if isinstance(source, (str, Path, list, tuple)):
            self._paths, self._source = source, None
        else:
            self._paths, self._source = None, source
        self._pid = os.getpid()
        self.plan = plan
        self.augment = augment if (augment is not None and plan.mode == "train") else AugmentConfig.disabled()
        self.on_device = bool(on_device) and plan.mode == "train"
        self.skip_log = None if skip_log is None else str(skip_log)
        self.skipped: dict[int, str] = {}  # sample index -> why it was left out (in this process)
        self.sample_weight = None if sample_weight is None else np.asarray(sample_weight, np.float32).reshape(-1)
        if self.sample_weight is not None and self.sample_weight.shape[0] != plan.n_samples:
            raise InputError(f"sample_weight: expected {plan.n_samples} values, got {self.sample_weight.shape[0]}")

    # ---- source ----------------------------------------------------------------------------
    @property
    def source(self) -> Any:
        """The reader, reopened after a fork or in a spawned process (h5py handles stay put)."""
        if self._paths is not None and (self._source is None or self._pid != os.getpid()):
            self._source, self._pid = open_source(self._paths), os.getpid()
        return self._source

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self._paths is not None:
            state["_source"] = None
        return state

    def describe(self) -> str:
        return str(self._paths) if self._paths is not None else type(self._source).__name__

    @property
    def resolution(self) -> int:
        layout = getattr(self.source, "layout", None)
        return int(layout.resolution) if layout is not None else int(self.source.resolution)

    def map_field(self, n: int) -> tuple[tuple[int, ...], np.dtype]:
        """(shape, dtype) of ``position_map`` in on-device batches: what needs least CPU work.

        HDF5 crops files store float16: deflated (shuffled) chunks travel as their two byte
        planes, uint8 (n, 2, R, R, 3), which the accelerator interleaves; plain ones as
        float16. Anything else: float32.
        """
        r, src = self.resolution, self.source
        modes = src.read_modes() if hasattr(src, "read_modes") and getattr(src, "store", "") == "crops" else []
        if modes and all(m == "deflate" for _, m in modes):
            return (n, 2, r, r, 3), np.dtype(np.uint8)
        if modes:
            return (n, r, r, 3), np.dtype(np.float16)
        return (n, r, r, 3), np.dtype(np.float32)

    # ---- outputs ---------------------------------------------------------------------------
    def fields(self, n: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """name -> (shape, dtype) of the arrays a shard of ``n`` samples yields, in order."""
        r = self.resolution
        if self.on_device:
            out = {"image": ((n, r, r, 3), np.dtype(np.uint8)), "position_map": self.map_field(n)}
            out.update({k: ((n, *shape), np.dtype(dt)) for k, (shape, dt) in PARAM_FIELDS.items()})
        else:
            out = {"image": ((n, r, r, 3), np.dtype(np.float32)), "label": ((n, r, r, 3), np.dtype(np.float32))}
        if self.sample_weight is not None:
            out["weight"] = ((n,), np.dtype(np.float32))
        return out

    def sample_rngs(self, epoch: int, indices: np.ndarray) -> list[np.random.Generator]:
        return [np.random.default_rng([self.plan.seed, int(epoch), int(i)]) for i in indices]

    def make(self, epoch: int, step: int, shard: int = 0, num_shards: int = 1,
             out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Shard ``shard`` of ``num_shards`` of batch ``step`` of ``epoch`` (see class doc).

        ``out``: arrays of :meth:`fields` for at least as many samples, filled in place
        (their first len(shard) rows); the returned dict holds views of exactly that many.
        """
        idx = self.plan.shard_indices(epoch, step, shard, num_shards)
        n = idx.size
        fields = self.fields(n)
        out = {k: np.empty(*fields[k]) if out is None else out[k][:n] for k in fields}
        train = self.plan.mode == "train"
        rngs = self.sample_rngs(epoch, idx) if train else None
        raw_store = getattr(self.source, "store", "crops") == "raw"
        perturb = rngs if (train and raw_store and self.augment.crop_perturbation) else None
        r = self.resolution
        if self.on_device:
            rows = self._read_checked(idx, perturb, out["image"], out["position_map"])
            params = sample_params_per_sample(self.augment, rngs, r).to_arrays()
            for key in PARAM_FIELDS:
                out[key][...] = params[key]
        else:
            images = _scratch("image", (n, r, r, 3), np.uint8)
            shape, dtype = self.map_field(n) if train else ((), None)
            # Deflated float16 maps stay byte planes until the label warp widens them (one pass, not three).
            maps = _scratch("planes", shape, dtype) if dtype == np.uint8 else out["label"]
            rows = self._read_checked(idx, perturb, images, maps)
            if train:
                params = sample_params_per_sample(self.augment, rngs, r)
                apply_params(images, maps, params, 1.0 / LABEL_SCALE, out=(out["image"], out["label"]))
            else:
                np.multiply(images, np.float32(1.0 / 255.0), out=out["image"])
                np.multiply(out["label"], np.float32(1.0 / LABEL_SCALE), out=out["label"])
        if self.sample_weight is not None:
            out["weight"][...] = self.sample_weight[rows]
        return out

    # ---- reading, bad samples ----------------------------------------------------------------
    def _read_checked(self, idx: np.ndarray, rngs: list | None, images: np.ndarray, maps: np.ndarray) -> np.ndarray:
        """Read the batch into ``images`` / ``maps``; returns the sample index now in each row.

        A sample that cannot be read or holds non-finite values is skipped (:meth:`skip`) and
        its row filled with a good sample of the same batch (keeping that row's random draws),
        so batches keep their size and bad data never reaches the loss.
        """
        reasons: dict[int, str] = {}
        try:
            self._read(idx, rngs, images, maps)
            reasons = {int(b): NON_FINITE for b in np.flatnonzero(~_finite_rows(maps))}
        except (PRNetError, OSError, ValueError, KeyError):
            for b in range(idx.size):  # isolate the unreadable sample(s)
                try:
                    self._read(idx[b:b + 1], None if rngs is None else rngs[b:b + 1], images[b:b + 1], maps[b:b + 1])
                except (PRNetError, OSError, ValueError, KeyError) as exc:
                    reasons[b] = f"unreadable: {exc}"
                    continue
                if not _finite_rows(maps[b:b + 1])[0]:
                    reasons[b] = NON_FINITE
        rows = idx.copy()
        if not reasons:
            return rows
        for b, why in reasons.items():
            self.skip(int(idx[b]), why)
        good = [b for b in range(idx.size) if b not in reasons]
        if not good:
            raise InputError(f"dataset {self.describe()}: no usable sample in batch {idx.tolist()} "
                             f"({next(iter(reasons.values()))})")
        for k, b in enumerate(sorted(reasons)):
            g = good[k % len(good)]
            images[b], maps[b], rows[b] = images[g], maps[g], idx[g]
        return rows

    def skip(self, index: int, reason: str) -> None:
        """Record a skipped sample; the first time (in this process), one line on stderr and one
        row ``name,reason`` appended to ``skip_log``."""
        if index in self.skipped:
            return
        names = getattr(self.source, "names", None)
        name = names[index] if names is not None else str(index)
        self.skipped[index] = reason
        print(f"[data] skipped sample {name}: {reason}", file=sys.stderr, flush=True)
        if self.skip_log is not None:
            line = f"{name},{reason.replace(',', ';')}\n".encode("utf-8")
            fd = os.open(self.skip_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
            try:
                os.write(fd, line)  # one write per row: appends from several workers do not interleave
            finally:
                os.close(fd)

    def _read(self, idx: np.ndarray, rngs: list | None, images: np.ndarray, maps: np.ndarray) -> None:
        src = self.source
        if "out" in inspect.signature(src.read_batch).parameters:
            src.read_batch(idx, rng=rngs, meta=False, out={"image": images, "position_map": maps})
        else:  # a user source without ``out``: copy
            data = src.read_batch(idx, rng=rngs, meta=False)
            images[...] = data["image"]
            maps[...] = data["position_map"]


NON_FINITE = "position_map holds NaN or infinite values"


@njit(cache=True, nogil=True)
def _finite_planes(planes):
    # float16 byte planes (B, 2, ...): a value is inf or NaN when its exponent bits (0x7C of the
    # high byte) are all ones. One pass, no temporaries; counting (no early exit) vectorises.
    b_count = planes.shape[0]
    high = planes.reshape(b_count, 2, -1)
    ok = np.ones(b_count, np.bool_)
    for b in range(b_count):
        hits = 0
        for k in range(high.shape[2]):
            hits += (high[b, 1, k] & 0x7C) == 0x7C
        ok[b] = hits == 0
    return ok


def _finite_rows(maps: np.ndarray) -> np.ndarray:
    """(B,) whether each map is finite: float values, or float16 byte planes (B, 2, ...)."""
    if maps.dtype == np.uint8:
        return _finite_planes(np.ascontiguousarray(maps))
    return np.isfinite(np.add.reduce(maps.reshape(len(maps), -1), axis=1, dtype=np.float32))
