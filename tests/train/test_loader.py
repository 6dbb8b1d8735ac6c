"""Batch loader: worker processes writing into shared buffers give the thread workers' batches,
and nothing outlives an interrupted epoch or a killed parent (no /dev/shm entry, no worker)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from prnet_keras.train.batches import BatchMaker, BatchPlan
from prnet_keras.train.loader import BatchLoader

ROOT = Path(__file__).resolve().parents[2]


def shm_entries() -> set[str]:
    """Named shared memory (multiprocessing's short-lived semaphores aside: other programs on
    the machine make them too)."""
    names = os.listdir("/dev/shm") if os.path.isdir("/dev/shm") else []
    return {n for n in names if not n.startswith("sem.")}


def mapped_batch_memory() -> int:
    """Mappings of the loader's shared buffers in this process."""
    with open(f"/proc/{os.getpid()}/maps") as f:
        return sum("prnet-batches" in line for line in f)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inspects /proc")
def test_process_workers_give_the_thread_batches_and_leave_nothing(toy_hdf5_dir):
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    from prnet_keras.train.dataset import AugmentedDataset

    files = [toy_hdf5_dir / "train.hdf5"]
    before = shm_entries()
    threads = AugmentedDataset(files, batch_size=4, seed=3, workers=2)
    procs = AugmentedDataset(files, batch_size=4, seed=3, workers=2, use_multiprocessing=True)
    adapter = PyDatasetAdapter(procs)  # Keras' own iteration, as fit drives it
    for _ in range(2):
        adapter.on_epoch_begin()
        got = list(adapter.get_numpy_iterator())
        adapter.on_epoch_end()
        assert len(got) == 4
        for i, (x, y) in enumerate(got):
            ref = threads[i]
            np.testing.assert_array_equal(x, ref[0])
            np.testing.assert_array_equal(y, ref[1])
        threads.on_epoch_end()
    pool = procs.loader._pool
    workers = [p.pid for p in pool.procs]
    assert len(workers) == 2 and mapped_batch_memory() >= 1
    assert shm_entries() == before, "shared buffers have no name in /dev/shm"

    # An interrupted epoch: one batch taken, the rest made ahead, then Ctrl-C in the consumer.
    with pytest.raises(KeyboardInterrupt):
        try:
            for i in range(len(procs)):
                procs[i]
                raise KeyboardInterrupt
        finally:
            procs.close()
    del got, x, y, adapter, pool
    deadline = time.time() + 20
    while any(alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers)
    assert mapped_batch_memory() == 0 and shm_entries() == before
    # ... and a later access starts fresh workers.
    np.testing.assert_array_equal(procs[0][0], threads.__class__(files, batch_size=4, seed=3, epoch=2)[0][0])
    procs.close()
    threads.close()


KILLED_PARENT = """
import sys, time
from prnet_keras.train.batches import BatchMaker, BatchPlan
from prnet_keras.train.loader import BatchLoader
maker = BatchMaker([sys.argv[1]], BatchPlan(16, 4, "train", 0))
loader = BatchLoader(maker, workers=2, processes=True)
loader.get((0, 0, 0, 1), ahead=[(0, 1, 0, 1), (0, 2, 0, 1)])
print(*[p.pid for p in loader._pool.procs], flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inspects /proc")
def test_workers_exit_when_the_parent_is_killed(toy_hdf5_dir, tmp_path):
    """kill -9 of the training process: its batch workers stop by themselves, nothing stays in /dev/shm."""
    before = shm_entries()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_PARENT, str(toy_hdf5_dir / "train.hdf5")], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        workers = [int(v) for v in proc.stdout.readline().split()]
        assert len(workers) == 2, proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    deadline = time.time() + 30
    while any(alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in workers), "orphaned batch workers"
    assert shm_entries() == before


def test_worker_errors_reach_the_caller_and_held_batches_are_never_overwritten(toy_data, layout, write_toy,
                                                                               tmp_path):
    import h5py

    from prnet_keras.errors import InputError
    from prnet_keras.train.augment import AugmentConfig

    path = tmp_path / "bad.hdf5"
    write_toy(path, *toy_data, layout)
    with h5py.File(path, "r+") as f:  # batch 2 (samples 4, 5) has no usable sample: an error, not a skip
        f["crop"][4] = f["crop"][5] = np.frombuffer(b"not a jpeg", np.uint8)
    maker = BatchMaker([path], BatchPlan(12, 2, "val"), AugmentConfig.disabled())
    with BatchLoader(maker, workers=1, processes=True, depth=1) as loader:
        held = [loader.get((0, s, 0, 1), ahead=[(0, s + 1, 0, 1)]) for s in range(2)]  # keep every batch
        assert loader.inline_fallbacks == 0
        more = [loader.get((0, s, 0, 1), ahead=[(0, s + 1, 0, 1)]) for s in (3, 4, 5)]
        assert loader.inline_fallbacks > 0, "with every slot held, batches are made in the caller"
        for s, batch in zip((0, 1, 3, 4, 5), held + more):
            np.testing.assert_array_equal(batch["image"], maker.make(0, s)["image"])
        with pytest.raises(InputError, match="no usable sample in batch .4, 5."):  # raised in the worker
            loader.get((0, 2, 0, 1))
