"""Cooperative cancellation of work running on a thread.

Whoever starts a piece of work (the server's inference pool) hands it a :class:`CancelToken`
with :func:`cancellable`; the work calls :func:`check_cancelled` between its stages and inside
its loops (the predictor between detection, crops, network and post-processing; ICP once per
iteration), which raises :class:`Cancelled` once the token is cancelled: when the request
timed out, its client went away, or the process is stopping. Outside :func:`cancellable`
(scripts, CLIs, tests) :func:`check_cancelled` does nothing.

    token = CancelToken()
    with cancellable(token):
        predictor.predict(image)   # raises Cancelled soon after token.cancel("timed out")
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_LOCAL = threading.local()


class Cancelled(Exception):
    """The work was cancelled; the message says why (timed out, client gone, stopping)."""


class CancelToken:
    """A flag that work checks; :meth:`cancel` is safe from any thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "cancelled") -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` when cancelled."""
        if self._event.is_set():
            raise Cancelled(self.reason)


@contextlib.contextmanager
def cancellable(token: CancelToken) -> Iterator[CancelToken]:
    """Make ``token`` the one :func:`check_cancelled` consults on this thread while inside."""
    previous = getattr(_LOCAL, "token", None)
    _LOCAL.token = token
    try:
        yield token
    finally:
        _LOCAL.token = previous


def current_token() -> CancelToken | None:
    """The token of the work running on this thread, if any (to hand on to helper threads)."""
    return getattr(_LOCAL, "token", None)


def check_cancelled() -> None:
    """Raise :class:`Cancelled` if this thread's work has been cancelled; else return at once."""
    token = getattr(_LOCAL, "token", None)
    if token is not None and token._event.is_set():
        raise Cancelled(token.reason)
