"""Bounded inference pool: a fixed number of worker threads and a bounded wait queue.

Inference is CPU/GPU bound and must not run on the event loop. Requests beyond
``workers + queue_size`` in flight are refused at once (the route answers 503 with
Retry-After) instead of piling up memory and latency; a request that takes longer
than ``timeout_s`` is answered 504 while its worker finishes (its slot is held until
then, so the bound stays true).

:func:`run_in_pool` is what a route awaits: the job runs on the app's pool and its result
is rendered to JSON there too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Callable, TypeVar

from fastapi import Request
from fastapi.responses import Response

from prnet_keras.server.codec import ApiError
from prnet_keras.server.responses import render_json

T = TypeVar("T")


class PoolSaturated(Exception):
    """All workers busy and the wait queue full."""


class PoolTimeout(Exception):
    """The job did not finish within the time-out."""


class InferencePool:
    """``workers`` threads; at most ``workers + queue_size`` jobs admitted at a time."""

    def __init__(self, workers: int, queue_size: int, timeout_s: float) -> None:
        self.workers = int(workers)
        self.capacity = int(workers) + int(queue_size)
        self.timeout_s = float(timeout_s)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=self.workers,
                                                               thread_name_prefix="prnet-infer")
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._lock = threading.Lock()
        self._in_flight = 0
        self.rejected = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _release(self, _future: concurrent.futures.Future) -> None:
        with self._lock:
            self._in_flight -= 1
        self._slots.release()

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future:
        """Admit a job or raise :class:`PoolSaturated` (never blocks)."""
        if not self._slots.acquire(blocking=False):
            with self._lock:
                self.rejected += 1
            raise PoolSaturated()
        with self._lock:
            self._in_flight += 1
        try:
            future = self._executor.submit(fn, *args)
        except RuntimeError:  # executor shut down
            self._release(None)  # type: ignore[arg-type]
            raise PoolSaturated() from None
        future.add_done_callback(self._release)
        return future

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a worker; raise PoolSaturated / PoolTimeout."""
        future = self.submit(fn, *args)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=self.timeout_s)
        except asyncio.TimeoutError:
            raise PoolTimeout() from None

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _job_rendered(fn: Callable[..., Any], *args: Any) -> bytes:
    # Serialising large answers (meshes) on the worker keeps the event loop free.
    return render_json(fn(*args))


async def run_in_pool(request: Request, fn: Callable[..., Any], *args: Any) -> Response:
    """Run a synchronous job on the app's bounded pool and answer its JSON; 503 when saturated, 504 on time-out."""
    pool: InferencePool = request.app.state.pool
    try:
        body = await pool.run(_job_rendered, fn, *args)
        return Response(body, media_type="application/json")
    except PoolSaturated:
        raise ApiError(503, "busy", f"all {pool.workers} workers busy and the queue is full; retry shortly",
                       None, {"Retry-After": "1"}) from None
    except PoolTimeout:
        raise ApiError(504, "timeout", f"the request took longer than {pool.timeout_s:g} s") from None
