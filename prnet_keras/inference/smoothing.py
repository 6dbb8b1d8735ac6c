"""Temporal smoothing of per-frame face geometry with the One Euro filter (Casiez et al., CHI 2012).

The One Euro filter is a first-order low-pass filter whose cut-off frequency rises with the
signal's speed: at rest it removes jitter strongly (cut-off ``min_cutoff`` Hz), in fast motion
it follows closely (cut-off ``min_cutoff + beta * speed``), so a still face stops trembling
and a turning head does not lag. It works element-wise on arrays of any shape and on real
timestamps (frames dropped by a webcam only lengthen the step).

    f = OneEuroFilter(min_cutoff=1.0, beta=0.5)
    smoothed = [f(x, t) for t, x in zip(times_s, noisy)]   # x: any float array, same shape

``speed_scale`` expresses speeds in a unit of the caller's choice: the video path divides by
the face's crop size, so ``beta`` means the same for a small and a large face.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from prnet_keras.errors import InputError


@dataclasses.dataclass(frozen=True)
class OneEuroParams:
    """min_cutoff (Hz): cut-off at rest (lower = smoother when still, more lag);
    beta (1/unit): how fast the cut-off rises with speed (higher = less lag in motion);
    d_cutoff (Hz): cut-off of the speed estimate itself."""

    min_cutoff: float = 1.0
    beta: float = 0.5
    d_cutoff: float = 1.0

    def __post_init__(self) -> None:
        for name in ("min_cutoff", "d_cutoff"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise InputError(f"One Euro {name}: expected a positive number of Hz, got {v}")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise InputError(f"One Euro beta: expected >= 0, got {self.beta}")


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One Euro filter over float arrays; the first sample passes unchanged.

    ``__call__(x, t, speed_scale=1.0)``: x any-shape array (the same shape every call),
    t seconds (increasing). Returns the filtered float32 array (a new array).
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.5, d_cutoff: float = 1.0) -> None:
        self.params = OneEuroParams(min_cutoff, beta, d_cutoff)
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def __call__(self, x: np.ndarray, t: float, speed_scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self._x is None or self._x.shape != x.shape:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        dt = float(t) - self._t
        if not dt > 0:  # a repeated or out-of-order timestamp: keep the state, return it
            return self._x.copy()
        p = self.params
        dx = (x - self._x) / np.float32(dt)
        a_d = np.float32(_alpha(p.d_cutoff, dt))
        self._dx = self._dx + a_d * (dx - self._dx)
        cutoff = p.min_cutoff + (p.beta / max(float(speed_scale), 1e-12)) * np.abs(self._dx)
        a = _alpha(cutoff, dt).astype(np.float32)
        self._x = self._x + a * (x - self._x)
        self._t = float(t)
        return self._x.copy()
