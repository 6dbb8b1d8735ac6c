"""One Euro filter: still input passes unchanged, jitter is cut, a ramp is followed with bounded lag.

Speeds are in crop sizes per second, as the video path filters them (face crop 250 px here).
"""

from __future__ import annotations

import numpy as np
import pytest

from prnet_keras.errors import InputError
from prnet_keras.inference.smoothing import OneEuroFilter, OneEuroParams

FPS = 30.0
CROP = 250.0


def _run(signal: np.ndarray, min_cutoff: float = 1.0, beta: float = 0.5) -> np.ndarray:
    f = OneEuroFilter(min_cutoff=min_cutoff, beta=beta)
    return np.stack([f(x, i / FPS, speed_scale=CROP) for i, x in enumerate(signal)])


def test_constant_input_is_unchanged():
    x = np.random.default_rng(0).normal(100.0, 30.0, (68, 3)).astype(np.float32)
    still = np.repeat(x[None], 60, axis=0)
    np.testing.assert_array_equal(_run(still), still)


def test_jitter_on_a_still_face_is_reduced():
    # defaults (1 Hz at rest) at 30 fps: position error RMS / 3, frame-to-frame trembling / 6
    rng = np.random.default_rng(1)
    truth = np.full((300, 68, 2), 200.0, np.float32)
    noisy = truth + rng.normal(0.0, 1.0, truth.shape).astype(np.float32)  # 1 px landmark jitter
    out = _run(noisy)
    rms_raw = np.sqrt(((noisy[30:] - truth[30:]) ** 2).mean())
    rms = np.sqrt(((out[30:] - truth[30:]) ** 2).mean())
    step_raw = np.abs(np.diff(noisy[30:], axis=0)).mean()  # what the eye sees as trembling
    step = np.abs(np.diff(out[30:], axis=0)).mean()
    assert rms < rms_raw / 3 and step < step_raw / 6, (rms, rms_raw, step, step_raw)


def test_lag_on_a_ramp_is_bounded_and_beta_shortens_it():
    # a face moving 150 px/s (5 px per frame): 0.6 crop sizes per second
    ramp = (150.0 * np.arange(90) / FPS)[:, None].astype(np.float32) * np.ones((1, 68), np.float32)
    lag = (ramp - _run(ramp))[30:].mean()
    assert 0 <= lag <= 4 * 5.0, lag  # stated bound: at most 4 frames of motion behind, once settled
    lag_without_speed_term = (ramp - _run(ramp, beta=0.0))[30:].mean()
    assert lag_without_speed_term > 1.5 * lag, (lag_without_speed_term, lag)


def test_parameters_are_checked_and_reset_restarts():
    for bad in ({"min_cutoff": 0.0}, {"beta": -1.0}, {"d_cutoff": float("nan")}):
        with pytest.raises(InputError, match="One Euro"):
            OneEuroParams(**bad)
    f = OneEuroFilter()
    f(np.zeros(3), 0.0)
    f(np.ones(3), 1 / FPS)
    f.reset()
    np.testing.assert_array_equal(f(np.full(3, 7.0), 2 / FPS), np.full(3, 7.0))
