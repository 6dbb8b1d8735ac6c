"""Bounded inference pool: a fixed number of worker threads, a bounded wait queue, cancellation.

Inference is CPU/GPU bound and must not run on the event loop. Requests beyond
``workers + queue_size`` in flight are refused at once (the route answers 503 with
Retry-After) instead of piling up memory and latency.

Every job runs under its own :class:`~prnet_keras.cancel.CancelToken`: when its request
times out (504), its client goes away, or the server stops (:meth:`InferencePool.cancel_all`),
the token is cancelled and the job stops at its next check (between stages, inside ICP
iterations), so no abandoned request keeps a core busy. A job's slot is held until it has
really stopped, so the bound stays true. The threads are daemons: stopping the process never
waits for a job stuck inside one long library call.

:func:`run_in_pool` is what a JSON route awaits: the job runs on the app's pool and its result
is rendered to JSON there too; :func:`run_job` returns the job's result as is (``/v1/swap``'s image).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import Response

from prnet_keras.cancel import Cancelled, CancelToken, cancellable
from prnet_keras.server.codec import ApiError
from prnet_keras.server.responses import render_json

T = TypeVar("T")
_STOP = object()
log = logging.getLogger("prnet_keras.server")


class PoolSaturated(Exception):
    """All workers busy and the wait queue full."""


class PoolTimeout(Exception):
    """The job did not finish within the time-out (it has been cancelled)."""


class ClientGone(Exception):
    """The client disconnected before the job finished (it has been cancelled)."""


class InferencePool:
    """``workers`` daemon threads; at most ``workers + queue_size`` jobs admitted at a time."""

    def __init__(self, workers: int, queue_size: int, timeout_s: float) -> None:
        self.workers = int(workers)
        self.capacity = int(workers) + int(queue_size)
        self.timeout_s = float(timeout_s)
        self._queue: queue.Queue = queue.Queue()
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._lock = threading.Lock()
        self._tokens: set[CancelToken] = set()
        self._closed = False
        self.rejected = 0
        self.cancelled = 0
        self._threads: list[threading.Thread] = []  # started by the first job

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._tokens)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fn, args, future, token = item
            try:
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    token.check()  # cancelled while it waited in the queue
                    with cancellable(token):
                        result = fn(*args)
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            finally:
                with self._lock:
                    self._tokens.discard(token)
                self._slots.release()

    def submit(self, fn: Callable[..., T], *args: Any) -> tuple[concurrent.futures.Future, CancelToken]:
        """Admit a job or raise :class:`PoolSaturated` (never blocks); returns (future, token)."""
        if self._closed or not self._slots.acquire(blocking=False):
            with self._lock:
                self.rejected += 1
            raise PoolSaturated()
        future: concurrent.futures.Future = concurrent.futures.Future()
        token = CancelToken()
        with self._lock:
            self._tokens.add(token)
            if not self._threads:
                self._threads = [threading.Thread(target=self._loop, name=f"prnet-infer-{i}", daemon=True)
                                 for i in range(self.workers)]
                for t in self._threads:
                    t.start()
        self._queue.put((fn, args, future, token))
        return future, token

    async def run(self, fn: Callable[..., T], *args: Any,
                  disconnected: Callable[[], Awaitable[Any]] | None = None) -> T:
        """Run ``fn(*args)`` on a worker and return its result.

        Raises PoolSaturated, PoolTimeout (after ``timeout_s``), ClientGone (when the
        ``disconnected`` coroutine returns first) or Cancelled (server stopping); in the last
        three cases the job's token is cancelled so its work stops.
        """
        future, token = self.submit(fn, *args)
        job = asyncio.wrap_future(future)
        job.add_done_callback(_retrieve)
        watch = asyncio.ensure_future(disconnected()) if disconnected is not None else None
        try:
            done, _ = await asyncio.wait({job} | ({watch} if watch else set()), timeout=self.timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the request task itself was cancelled (shutdown)
            token.cancel("request cancelled")
            raise
        finally:
            if watch is not None and not watch.done():
                watch.cancel()
        if job in done:
            return job.result()
        with self._lock:
            self.cancelled += 1
        if watch is not None and watch in done:
            token.cancel("client disconnected")
            raise ClientGone()
        token.cancel(f"timed out after {self.timeout_s:g} s")
        raise PoolTimeout()

    def cancel_all(self, reason: str = "server stopping") -> int:
        """Cancel every admitted job (running or waiting) and refuse new ones; returns how many."""
        self._closed = True
        with self._lock:
            tokens = list(self._tokens)
        for token in tokens:
            token.cancel(reason)
        return len(tokens)

    def shutdown(self) -> None:
        self.cancel_all()
        for _ in self._threads:
            self._queue.put(_STOP)


def _retrieve(fut: asyncio.Future) -> None:
    # a job whose request already left still finishes (cancelled): read its outcome so asyncio
    # does not log "exception was never retrieved"
    if not fut.cancelled():
        fut.exception()


def _job_rendered(fn: Callable[..., Any], *args: Any) -> bytes:
    # Serialising large answers (meshes) on the worker keeps the event loop free.
    return render_json(fn(*args))


async def run_in_pool(request: Request, fn: Callable[..., Any], *args: Any) -> Response:
    """Run a synchronous job on the app's bounded pool and answer its JSON (see :func:`run_job`)."""
    body = await run_job(request, _job_rendered, fn, *args)
    return body if isinstance(body, Response) else Response(body, media_type="application/json")


async def run_job(request: Request, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on the app's bounded pool, its result as is (a 499 Response when the client left).

    503 when saturated (or stopping), 504 on time-out; a time-out, a client that
    disconnects and a server that stops all cancel the job's work.
    """
    pool: InferencePool = request.app.state.pool

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    try:
        return await pool.run(fn, *args, disconnected=disconnected)
    except PoolSaturated:
        raise ApiError(503, "busy", f"all {pool.workers} workers busy and the queue is full; retry shortly",
                       None, {"Retry-After": "1"}) from None
    except PoolTimeout:
        raise ApiError(504, "timeout", f"the request took longer than {pool.timeout_s:g} s; its work was stopped"
                       ) from None
    except ClientGone:
        log.info("%s %s: client disconnected; its work was stopped", request.method, request.url.path)
        return Response(status_code=499)
    except Cancelled as exc:
        raise ApiError(503, "unavailable", f"the server is stopping ({exc}); retry on another instance",
                       None, {"Retry-After": "1"}) from None


__all__ = ["Cancelled", "ClientGone", "InferencePool", "PoolSaturated", "PoolTimeout", "run_in_pool", "run_job"]
