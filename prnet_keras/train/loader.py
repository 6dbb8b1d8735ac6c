"""Make batches ahead of use on worker threads or worker processes, handed out in order.

:class:`BatchLoader` runs :meth:`BatchMaker.make <prnet_keras.train.batches.BatchMaker.make>`
for keys ``(epoch, step, shard, num_shards)``:

- ``workers=1``: in the calling thread.
- threads: a thread pool; OpenCV, numba, libdeflate and the JPEG decoder release the GIL.
- processes: persistent spawned processes (no TensorFlow in them) that decode and augment
  **straight into a ring of shared batch buffers**; only a slot number and a sample count
  travel back, never the 256×256×3 arrays. The buffers live in one anonymous memory file
  (``memfd``) handed to the workers as a file descriptor: it has no name in ``/dev/shm``,
  so nothing can leak, whatever kills the processes, and Docker's small ``/dev/shm`` does
  not limit it. Workers ignore Ctrl-C (the parent stops them) and exit when the parent dies.

A batch returned by :meth:`BatchLoader.get` from a shared buffer is a view: its slot is
reused only once nothing references those arrays any more (Keras' adapters copy batches
into tensors at once, so in training slots turn over immediately). When the consumer keeps
every slot, the next batch is made in the calling thread instead (correct, slower).

This module is imported by the worker processes: keep Keras / TensorFlow out of it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import mmap
import multiprocessing
import multiprocessing.reduction
import os
import queue
import signal
import sys
import tempfile
import threading
import weakref
from typing import Any, Iterable, Iterator

import numpy as np

from prnet_keras.train.batches import BatchMaker

Key = tuple  # (epoch, step, shard, num_shards)
_ALIGN = 64
_POLL_S = 0.5


def _layout(maker: BatchMaker, n: int) -> tuple[dict[str, tuple[int, tuple, np.dtype]], int]:
    """name -> (byte offset, shape for n rows, dtype) inside one slot, and the slot size."""
    offset, out = 0, {}
    for name, (shape, dtype) in maker.fields(n).items():
        out[name] = (offset, shape, dtype)
        offset += -(-int(np.prod(shape, dtype=np.int64)) * dtype.itemsize // _ALIGN) * _ALIGN
    return out, max(offset, _ALIGN)


def _slot_views(anchor: np.ndarray, layout: dict, n: int | None = None) -> dict[str, np.ndarray]:
    views = {}
    for name, (offset, shape, dtype) in layout.items():
        rows = shape[0] if n is None else n
        count = rows * int(np.prod(shape[1:], dtype=np.int64))
        views[name] = anchor[offset:offset + count * dtype.itemsize].view(dtype).reshape((rows, *shape[1:]))
    return views


class _SharedFd:
    """A file descriptor that travels to a spawned process with the process' arguments."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self):
        return (_SharedFd._rebuild, (multiprocessing.reduction.DupFd(self.fd),))

    @staticmethod
    def _rebuild(dup: Any) -> "_SharedFd":
        return _SharedFd(dup.detach())


def _anonymous_file(size: int) -> int:
    """fd of ``size`` bytes of shareable memory with no name (memfd; else an unlinked file)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("prnet-batches", os.MFD_CLOEXEC)
    else:  # pragma: no cover - macOS: an unlinked temporary file, in /dev/shm where present
        f = tempfile.TemporaryFile(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        fd = os.dup(f.fileno())
        f.close()
    os.ftruncate(fd, size)
    return fd


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start spawned workers without re-running the user's ``__main__`` script in them.

    The workers need only this package, and a script without an ``if __name__ ==
    "__main__"`` guard would otherwise start training again in every worker.
    """
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main is not None and k in main.__dict__}
    try:
        if main is not None:
            main.__dict__.pop("__file__", None)
            main.__dict__["__spec__"] = None
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)
            if "__spec__" not in saved:
                main.__dict__.pop("__spec__", None)


def _limit_native_threads() -> None:
    """One process per core already: OpenCV's / BLAS' own threads would only contend."""
    import cv2

    cv2.setNumThreads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - optional
        pass


def _picklable(exc: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - anything unpicklable becomes its text
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _worker_main(maker: BatchMaker, shared: _SharedFd, size: int, slot_bytes: int, layout: dict,
                 tasks: Any, results: Any, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    memory = mmap.mmap(shared.fd, size)
    os.close(shared.fd)
    buffer = np.frombuffer(memory, np.uint8)
    _limit_native_threads()
    results.put(("ready", os.getpid(), None))
    while True:
        try:
            task = tasks.get(timeout=_POLL_S)
        except queue.Empty:
            if os.getppid() != parent:  # the parent died (kill -9): nobody will read our work
                return
            continue
        if task is None:
            return
        seq, slot, key = task
        try:
            anchor = buffer[slot * slot_bytes:(slot + 1) * slot_bytes]
            made = maker.make(*key, out=_slot_views(anchor, layout))
            results.put((seq, len(made["image"]), None))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
            results.put((seq, 0, _picklable(exc)))


class _ProcessPool:
    """Worker processes writing into ``slots`` shared batch buffers."""

    def __init__(self, maker: BatchMaker, workers: int, slots: int, max_rows: int) -> None:
        self.maker, self.workers, self.slots = maker, workers, slots
        self.layout, self.slot_bytes = _layout(maker, max_rows)
        size = self.slot_bytes * slots
        fd = _anonymous_file(size)
        ctx = multiprocessing.get_context("spawn")
        self.tasks, self.results = ctx.Queue(), ctx.Queue()
        try:
            self.memory = mmap.mmap(fd, size)
            self.procs = [ctx.Process(target=_worker_main, daemon=True, name=f"prnet-batch-worker-{i}",
                                      args=(maker, _SharedFd(fd), size, self.slot_bytes, self.layout, self.tasks,
                                            self.results, os.getpid()))
                          for i in range(workers)]
            with _main_module_hidden():
                for p in self.procs:
                    p.start()
        finally:
            os.close(fd)  # the workers hold their own copies; the memory lives while mapped
        self.anchors = [np.frombuffer(self.memory, np.uint8, self.slot_bytes, s * self.slot_bytes)
                        for s in range(slots)]
        self._base_refs = sys.getrefcount(self.anchors[0])
        self.busy: dict[int, int] = {}  # seq -> slot, in flight
        self.done: dict[int, tuple[int, BaseException | None]] = {}
        self._ready = 0
        while self._ready < workers:
            self._receive()

    def _receive(self) -> None:
        try:
            seq, n, err = self.results.get(timeout=_POLL_S)
        except queue.Empty:
            dead = [p for p in self.procs if not p.is_alive()]
            if dead:
                raise RuntimeError(f"data worker process {dead[0].pid} died (exit code {dead[0].exitcode}); "
                                   "see the messages above") from None
            return
        if seq == "ready":
            self._ready += 1
        else:
            self.done[seq] = (n, err)

    def free_slot(self) -> int | None:
        """A slot neither in flight nor referenced by the consumer, or None."""
        taken = set(self.busy.values())
        for s in range(self.slots):
            if s not in taken and sys.getrefcount(self.anchors[s]) <= self._base_refs:
                return s
        return None

    def submit(self, seq: int, key: Key, slot: int) -> None:
        self.busy[seq] = slot
        self.tasks.put((seq, slot, key))

    def wait(self, seq: int) -> tuple[int, int, BaseException | None]:
        while seq not in self.done:
            self._receive()
        n, err = self.done.pop(seq)
        return self.busy.pop(seq), n, err

    def views(self, slot: int, n: int) -> dict[str, np.ndarray]:
        return _slot_views(self.anchors[slot], self.layout, n)

    def close(self) -> None:
        for _ in self.procs:
            self.tasks.put(None)
        for p in self.procs:
            p.join(timeout=5)
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for q in (self.tasks, self.results):
            q.close()
            q.join_thread()
        self.anchors = []
        try:
            self.memory.close()
        except BufferError:  # the consumer still holds batch views; the mapping goes with them
            pass


class BatchLoader:
    """Makes batches of a :class:`BatchMaker` ahead of use (see module doc).

    Args:
        maker: the batch maker (pickled once to each worker process).
        workers: threads or processes making batches; 1 makes them in the calling thread.
        processes: worker processes with shared buffers instead of threads.
        depth: batches made ahead (default: 2 per worker).
        max_rows: rows of the largest shard requested (sizes the shared buffers).
    """

    def __init__(self, maker: BatchMaker, workers: int = 1, processes: bool = False, depth: int | None = None,
                 max_rows: int | None = None) -> None:
        self.maker, self.workers, self.processes = maker, max(1, int(workers)), bool(processes)
        self.depth = max(1, int(depth if depth is not None else 2 * self.workers))
        self.max_rows = int(max_rows or maker.plan.max_shard_size())
        self._pending: collections.OrderedDict[Key, Any] = collections.OrderedDict()
        self._seq = 0
        self._pool: Any = None
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, BatchLoader._shutdown, [None])
        self.inline_fallbacks = 0  # batches made in the caller because the consumer held every slot

    @property
    def parallel(self) -> bool:
        return self.workers > 1 or self.processes

    def _start(self) -> Any:
        if self._pool is None:
            if self.processes:
                self._pool = _ProcessPool(self.maker, self.workers, self.depth + 2, self.max_rows)
            else:
                self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="prnet-batch")
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, BatchLoader._shutdown, [self._pool])
        return self._pool

    def get(self, key: Key, ahead: Iterable[Key] = ()) -> dict[str, np.ndarray]:
        """The batch for ``key``; starts making the ``ahead`` keys (up to ``depth``) meanwhile.

        Keys made ahead but never asked for are dropped when another key is asked for first.
        """
        key = tuple(int(k) for k in key)
        if not self.parallel:
            return self.maker.make(*key)
        with self._lock:
            pool = self._start()
            if key not in self._pending:
                self._drop_pending()
                self._submit(pool, key)
            for k in ahead:
                k = tuple(int(v) for v in k)
                if len(self._pending) >= self.depth:
                    break
                if k not in self._pending and not self._submit(pool, k):
                    break
            return self._collect(pool, key)

    def iterate(self, keys: Iterable[Key]) -> Any:
        """Yield the batches of ``keys`` in order, ``depth`` made ahead."""
        window: collections.deque = collections.deque()
        it = iter(keys)
        for k in it:
            window.append(k)
            if len(window) > self.depth:
                yield self.get(window.popleft(), ahead=list(window))
        while window:
            yield self.get(window.popleft(), ahead=list(window))

    def _submit(self, pool: Any, key: Key) -> bool:
        if not self.processes:
            self._pending[key] = pool.submit(self.maker.make, *key)
            return True
        slot = pool.free_slot()
        if slot is None:
            return False
        self._seq += 1
        pool.submit(self._seq, key, slot)
        self._pending[key] = self._seq
        return True

    def _collect(self, pool: Any, key: Key) -> dict[str, np.ndarray]:
        if key not in self._pending:  # processes, no free slot: the consumer holds them all
            self.inline_fallbacks += 1
            return self.maker.make(*key)
        handle = self._pending.pop(key)
        if not self.processes:
            return handle.result()
        slot, n, err = pool.wait(handle)
        if err is not None:
            raise err
        return pool.views(slot, n)

    def _drop_pending(self) -> None:
        """Forget batches made ahead for keys that were not asked for next (their results are
        waited for, so no worker still writes into a slot that is handed out again)."""
        while self._pending:
            _, handle = self._pending.popitem(last=False)
            if self.processes:
                self._pool.wait(handle)
            else:
                handle.cancel()

    def close(self) -> None:
        """Stop the workers (idempotent); a later :meth:`get` starts new ones."""
        with self._lock:
            pool, self._pool = self._pool, None
            self._pending.clear()
            self._finalizer.detach()
            BatchLoader._shutdown([pool])

    @staticmethod
    def _shutdown(holder: list) -> None:
        pool = holder[0]
        if pool is None:
            return
        if isinstance(pool, concurrent.futures.ThreadPoolExecutor):
            pool.shutdown(wait=True, cancel_futures=True)
        else:
            pool.close()

    def __enter__(self) -> "BatchLoader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_pool=None, _pending=collections.OrderedDict(), _lock=None, _finalizer=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, BatchLoader._shutdown, [None])
