"""Cross-request micro-batching of network calls.

Each request crops its own faces, but the network is far more efficient on one batch of
many crops than on many batches of one (per-call overhead on CPU, idle cores / SMs on a
GPU). :class:`BatchingForward` is a drop-in network callable (crops -> position maps)
shared by all worker threads: one batcher thread takes the first waiting call, gathers
whatever else arrives within ``window_s`` (or is already queued while the previous batch
ran) up to ``max_batch`` crops, runs the network once and hands every caller its slice.
A lone request waits at most ``window_s`` extra.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from typing import Any, Callable

import numpy as np

_STOP = object()


class BatchingForward:
    """Callable ``(B, R, R, 3) float32 [0, 1] -> (B, R, R, 3) crop pixels`` that batches across threads.

    forward: the real network call with the same contract; max_batch: crops per network
    call (a single larger call is passed through whole); window_s: how long the first
    call of a batch waits for company. ``name`` and ``layout`` mirror the wrapped network.
    """

    def __init__(self, forward: Callable[[np.ndarray], np.ndarray], max_batch: int = 8, window_s: float = 0.004,
                 name: str | None = None, layout: Any = None) -> None:
        self._forward = forward
        self.max_batch = max(1, int(max_batch))
        self.window_s = max(0.0, float(window_s))
        self.name = name
        self.layout = layout
        self.batches = 0
        self.items = 0
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="prnet-batcher", daemon=True)
        self._thread.start()

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((np.asarray(crops, np.float32), future))
        return future.result()

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=5)

    def _gather(self, first: tuple) -> list[tuple]:
        items, n = [first], len(first[0])
        deadline = time.monotonic() + self.window_s
        while n < self.max_batch:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _STOP:
                self._queue.put(_STOP)  # seen again by the loop after this batch
                break
            items.append(item)
            n += len(item[0])
        return items

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            items = self._gather(first)
            try:
                batch = items[0][0] if len(items) == 1 else np.concatenate([x for x, _ in items])
                out = np.asarray(self._forward(batch), np.float32)
                if out.shape != batch.shape:
                    raise ValueError(f"network output {out.shape} does not match its input {batch.shape}")
            except BaseException as exc:  # noqa: BLE001 - every waiting caller must be released
                for _, fut in items:
                    fut.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(batch)
            start = 0
            for x, fut in items:
                fut.set_result(out[start:start + len(x)])
                start += len(x)


def batched_predictor(predictor: Any, window_ms: float, max_batch: int = 8) -> Any:
    """A Predictor like ``predictor`` whose network calls are micro-batched across threads.

    Uses only the Predictor's public API: the batcher's forward is ``predictor.run_network``
    (which takes 0-255 crops, hence the × 255 of the [0, 1] crops it is handed).
    """
    from prnet_keras.inference import Predictor

    batcher = BatchingForward(lambda x: predictor.run_network(x * np.float32(255.0)), max_batch=max_batch,
                              window_s=window_ms / 1000.0, name=getattr(predictor.network, "name", None),
                              layout=None)
    # requests hand the batcher at most max_batch crops at a time, so no network call is larger
    return Predictor(batcher, predictor.layout, batch_size=max_batch,
                     detector=predictor.detector, min_confidence=predictor.min_confidence,
                     min_face_size=predictor.min_face_size, crop_config=predictor.crop_config)
