"""The augmenting ``keras.utils.PyDataset`` over position-map HDF5 files.

A batch is ``(image, label)`` or ``(image, label, sample_weight)``: image (B, 256, 256, 3)
float32 crop / 255 in [0, 1]; label (B, 256, 256, 3) float32 position map / LABEL_SCALE
(281.6), so the network's sigmoid × 281.6 is crop pixels; sample_weight (B,) float32.

Determinism: the sample order of epoch e is a permutation drawn from (seed, e) and the
augmentation of batch i of epoch e from (seed, e, i), so a batch does not depend on
which worker produced it or on how many workers there are, and a resumed run sees the
same data as an uninterrupted one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np

from prnet_keras import LABEL_SCALE
from prnet_keras.errors import InputError, PRNetError
from prnet_keras.geometry.uv import UVLayout
from prnet_keras.train.augment import AugmentConfig, augment_batch

MODES = ("train", "val")


class ArraySource:
    """In-memory source with the ``PositionMapDataset`` reading API (tests, small arrays).

    images (N, R, R, 3) uint8 crops; position_maps (N, R, R, 3) float32 crop px.
    """

    store = "crops"
    fresh_batches = True  # read_batch returns copies (fancy indexing)

    def __init__(self, images: np.ndarray, position_maps: np.ndarray, layout: UVLayout | None = None) -> None:
        images, position_maps = np.asarray(images), np.asarray(position_maps, np.float32)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise InputError(f"images: expected (N, R, R, 3) uint8, got {images.shape} {images.dtype}")
        if position_maps.shape != images.shape:
            raise InputError(f"position_maps: expected shape {images.shape}, got {position_maps.shape}")
        self.images, self.position_maps, self.layout = images, position_maps, layout

    def __len__(self) -> int:
        return len(self.images)

    def read_batch(self, indices: Sequence[int], rng: np.random.Generator | None = None,
                   meta: bool = True) -> dict[str, Any]:
        idx = np.asarray(indices, np.int64)
        return {"image": self.images[idx], "position_map": self.position_maps[idx]}


def open_source(paths: str | Path | Sequence[str | Path]) -> Any:
    """Open HDF5 file(s) as a ``prnet_keras.data.hdf5.PositionMapDataset``."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise InputError(f"dataset file(s) not found: {', '.join(missing)} (expected HDF5 built by build_dataset.py)")
    from prnet_keras.data.hdf5 import PositionMapDataset

    return PositionMapDataset([Path(p) for p in paths])


class AugmentedDataset(keras.utils.PyDataset):
    """Batches of (image, label[, sample_weight]) from HDF5 files or a source object.

    Args:
        source: HDF5 path(s) (opened lazily, once per process, so forked workers never
            share an h5py handle) or an object with ``__len__``, ``read_batch(indices,
            rng=None, meta=True)`` and ``store`` (e.g. :class:`ArraySource` or an open
            ``PositionMapDataset``); ``fresh_batches = True`` on it says read_batch
            returns new arrays, which the labels may then overwrite.
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
        workers, use_multiprocessing, max_queue_size: see ``keras.utils.PyDataset``.
        skip_log: CSV file (name, reason) that samples skipped as unreadable or non-finite
            are appended to (the trainer passes ``<run>/skipped_samples.csv``).
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
        max_queue_size: int = 10,
        skip_log: str | Path | None = None,
    ) -> None:
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        if mode not in MODES:
            raise InputError(f"dataset mode: expected one of {MODES}, got {mode!r}")
        if int(batch_size) < 1:
            raise InputError(f"batch size: expected a positive integer, got {batch_size!r}")
        self.mode, self.batch_size, self.seed, self.epoch = mode, int(batch_size), int(seed), int(epoch)
        if isinstance(source, (str, Path, list, tuple)):
            self._paths, self._source = source, None
        else:
            self._paths, self._source = None, source
        self._pid = os.getpid()
        self.skip_log = None if skip_log is None else str(skip_log)
        self.skipped: dict[int, str] = {}
        if isinstance(augment, AugmentConfig):
            self.augment = augment
        elif mode == "train":
            self.augment = AugmentConfig.from_dict(augment)
        else:
            self.augment = AugmentConfig.disabled() if augment is None else AugmentConfig.from_dict(augment)
        self.n_samples = len(self.source)
        if self.n_samples == 0:
            raise InputError(f"dataset {self._describe()}: holds no samples")
        if mode == "train" and self.n_samples < self.batch_size:
            raise InputError(f"dataset {self._describe()}: {self.n_samples} samples, fewer than one batch of "
                             f"{self.batch_size}")
        self.max_batches = None if max_batches is None else int(max_batches)
        self.sample_weight = None
        if sample_weight is not None:
            w = np.asarray(sample_weight, np.float32).reshape(-1)
            if w.shape[0] != self.n_samples:
                raise InputError(f"sample_weight: expected {self.n_samples} values, got {w.shape[0]}")
            self.sample_weight = w

    # ---- source handling ---------------------------------------------------------------
    def _describe(self) -> str:
        return str(self._paths) if self._paths is not None else type(self._source).__name__

    @property
    def source(self) -> Any:
        """The underlying reader, reopened after a fork (h5py handles must not cross processes)."""
        if self._paths is not None and (self._source is None or self._pid != os.getpid()):
            self._source, self._pid = open_source(self._paths), os.getpid()
        return self._source

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self._paths is not None:
            state["_source"] = None  # reopened in the receiving process
        return state

    @property
    def layout(self) -> UVLayout | None:
        return getattr(self.source, "layout", None)

    # ---- PyDataset protocol ------------------------------------------------------------
    @property
    def num_batches(self) -> int:
        full = self.n_samples // self.batch_size if self.mode == "train" else -(-self.n_samples // self.batch_size)
        return full if self.max_batches is None else min(full, self.max_batches)

    def __len__(self) -> int:
        return self.num_batches

    def order(self, epoch: int | None = None) -> np.ndarray:
        """(N,) sample order of an epoch: a seeded permutation in train mode, file order in val."""
        if self.mode != "train":
            return np.arange(self.n_samples)
        e = self.epoch if epoch is None else int(epoch)
        return np.random.default_rng([self.seed, e]).permutation(self.n_samples)

    def batch_indices(self, index: int, epoch: int | None = None) -> np.ndarray:
        if not 0 <= index < self.num_batches:
            raise IndexError(f"batch {index} out of range [0, {self.num_batches})")
        # Sorted within the batch: HDF5 reads want increasing indices.
        return np.sort(self.order(epoch)[index * self.batch_size:(index + 1) * self.batch_size])

    def _read(self, idx: np.ndarray, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(images, maps, indices) of a batch; a sample that cannot be read or holds non-finite
        values is skipped (recorded, see :meth:`_skip`) and its place taken by a good sample of
        the same batch, so batches keep their size and bad data never reaches the loss."""
        try:
            data = self.source.read_batch(idx, rng=rng, meta=False)
            images, maps = data["image"], data["position_map"]
            bad = np.flatnonzero(~np.isfinite(np.add.reduce(maps.reshape(len(maps), -1), axis=1)))
            reasons = {int(i): "position_map holds NaN or infinite values" for i in bad}
        except (PRNetError, OSError, ValueError, KeyError):
            images, maps, reasons = None, None, {}
            for b, i in enumerate(idx):  # isolate the unreadable sample(s)
                try:
                    one = self.source.read_batch([int(i)], rng=rng, meta=False)
                except (PRNetError, OSError, ValueError, KeyError) as exc:
                    reasons[b] = f"unreadable: {exc}"
                    continue
                if images is None:
                    images = np.zeros((len(idx),) + one["image"].shape[1:], one["image"].dtype)
                    maps = np.zeros((len(idx),) + one["position_map"].shape[1:], np.float32)
                images[b], maps[b] = one["image"][0], one["position_map"][0]
                if not np.isfinite(maps[b].sum()):
                    reasons[b] = "position_map holds NaN or infinite values"
        if not reasons:
            return images, maps, idx
        good = [b for b in range(len(idx)) if b not in reasons]
        for b, why in reasons.items():
            self._skip(int(idx[b]), why)
        if not good:
            raise InputError(f"dataset {self._describe()}: no usable sample in batch {idx.tolist()} "
                             f"({next(iter(reasons.values()))})")
        fill = [good[k % len(good)] for k in range(len(reasons))]
        rows = np.array(good + fill)
        return images[rows], maps[rows], idx[rows]

    def _skip(self, index: int, reason: str) -> None:
        """Remember a skipped sample; the first time, one line on stderr and one row in ``skip_log``."""
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

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        idx = self.batch_indices(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        raw = getattr(self.source, "store", "crops") == "raw"
        crop_rng = rng if (raw and self.mode == "train" and self.augment.crop_perturbation) else None
        images, maps, idx = self._read(idx, crop_rng)
        # Sources that return new arrays per call let the labels reuse the map memory.
        fresh = bool(getattr(self.source, "fresh_batches", False))
        if self.mode == "train":
            x, y = augment_batch(images, maps, self.augment, rng, label_factor=1.0 / LABEL_SCALE,
                                 overwrite_maps=fresh)
        else:
            x = np.asarray(images, np.float32) * np.float32(1.0 / 255.0)
            y = np.asarray(maps, np.float32)
            y = np.multiply(y, np.float32(1.0 / LABEL_SCALE), out=y if fresh and y is maps else None)
        if self.sample_weight is not None:
            return x, y, self.sample_weight[idx]
        return x, y

    def on_epoch_end(self) -> None:
        # The next epoch gets a fresh permutation and fresh augmentation draws.
        self.epoch += 1


def yaw_balanced_weights(yaw_deg: np.ndarray, bins: Sequence[float] = (0, 30, 60, 90)) -> np.ndarray:
    """(N,) per-sample weights ∝ 1 / (count of the sample's |yaw| bin), mean 1.

    Counters the frontal bias of 300W-LP when passed as ``sample_weight``.
    """
    a = np.abs(np.asarray(yaw_deg, np.float64))
    b = np.clip(np.digitize(a, np.asarray(bins[1:-1], np.float64)), 0, len(bins) - 2)
    counts = np.bincount(b, minlength=len(bins) - 1).astype(np.float64)
    w = 1.0 / counts[b]
    return (w / w.mean()).astype(np.float32)
