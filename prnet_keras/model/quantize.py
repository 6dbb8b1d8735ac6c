"""Post-training INT8 quantisation of a converted network with NNCF, and its accuracy check.

``quantize_int8(ov_model, crops)`` runs NNCF's post-training quantisation (min-max ranges
from calibration crops, fast bias correction; weights and activations int8, symmetric
activations — the ``performance`` preset the CPU's VNNI/AMX units want; depthwise
convolutions stay fp32, see :data:`KEEP_FP32_TYPES`) on the OpenVINO model that
``model.engines`` converted from Keras.

``accuracy_report`` measures what quantisation cost on validation crops that calibration
never saw:

* position-map error vs fp32: Euclidean distance in crop pixels (at the network's
  resolution) between the int8 and fp32 maps over the face pixels of the UV layout —
  mean and 99th percentile;
* 68-landmark NME (2D, normalised by the square root of the landmark box area, %, as
  AFLW2000-3D's protocol does) of fp32 and of int8 against the labels, and its change in
  percentage points. Without labels the fp32 landmarks stand in for them (then the change
  is the int8 NME against fp32 itself: an upper bound).

The bound (:data:`INT8_BOUND`): NME change <= +0.1 pp and map error p99 <= 1 px. Only a
model within it is picked by the ``auto`` engine (``model.engines``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import sys
from typing import Any, Callable

import numpy as np

from prnet_keras import LABEL_SCALE
from prnet_keras.errors import InputError

INT8_BOUND = {"nme_change_pp": 0.1, "map_p99_px": 1.0}
# Depthwise convolutions stay fp32: with batch norm folded in, their output channels span very
# different ranges, which one int8 scale per tensor cannot hold (the quickstart light model's
# maps moved by ~100 px with them quantised, ~7 px without); resfcn256 has none.
KEEP_FP32_TYPES = ("GroupConvolution",)
# what decides the quantised model besides the weights and the data: part of its cache key
SETTINGS = f"nncf ptq performance preset, fast bias correction, fp32 {','.join(KEEP_FP32_TYPES)}"


@dataclasses.dataclass
class Calibration:
    """Crops for quantisation: ``crops`` (N, R, R, 3) float32 in [0, 1]; ``labels`` (N, R, R, 3)
    float32 crop-pixel position maps or None; ``face_ind`` / ``kpt_flat``: the UV layout's face
    pixels and 68 landmark pixels (flat indices); ``validation``: how many of the last crops
    are held out to measure accuracy (never used for calibration); ``source``: what the crops
    are (recorded in the report and the cache key)."""

    crops: np.ndarray
    labels: np.ndarray | None
    face_ind: np.ndarray
    kpt_flat: np.ndarray
    validation: int
    source: str

    def __post_init__(self) -> None:
        n = len(self.crops)
        if self.crops.ndim != 4 or self.crops.shape[-1] != 3:
            raise InputError(f"calibration crops: expected (N, R, R, 3), got {self.crops.shape}")
        if not 1 <= self.validation < n:
            raise InputError(f"calibration: {n} crops cannot hold out {self.validation} for validation")
        if self.labels is not None and self.labels.shape != self.crops.shape:
            raise InputError(f"calibration labels: expected {self.crops.shape}, got {self.labels.shape}")

    @property
    def calibration_crops(self) -> np.ndarray:
        return self.crops[:len(self.crops) - self.validation]

    @property
    def validation_slice(self) -> slice:
        return slice(len(self.crops) - self.validation, len(self.crops))

    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256(self.source.encode())
        h.update(np.ascontiguousarray(self.crops[::7]).data)
        return h.hexdigest()[:16]


def quantize_int8(ov_model: Any, crops: np.ndarray, log: Callable[[str], None] | None = None) -> Any:
    """NNCF post-training quantisation of an OpenVINO model on (N, R, R, 3) float32 crops."""
    try:
        import nncf
    except ImportError:
        raise InputError('engine \'openvino-int8\': quantising needs nncf (pip install "prnet-keras[int8]")') from None
    if log:
        log(f"quantising to int8 with NNCF on {len(crops)} calibration crops (once; the result is cached)")
    dataset = nncf.Dataset([crops[i:i + 1] for i in range(len(crops))])
    nncf.set_log_level(logging.WARNING)  # its INFO lines list every node it leaves out
    # its progress bars neither into the command's output nor into logs (our line above says what runs)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return nncf.quantize(ov_model, dataset, subset_size=len(crops), preset=nncf.QuantizationPreset.PERFORMANCE,
                             target_device=nncf.TargetDevice.CPU, fast_bias_correction=True,
                             ignored_scope=nncf.IgnoredScope(types=list(KEEP_FP32_TYPES), validate=False))


def _run(forward: Callable[[np.ndarray], np.ndarray], crops: np.ndarray, batch: int = 8) -> np.ndarray:
    return np.concatenate([np.asarray(forward(crops[i:i + batch]), np.float32) for i in range(0, len(crops), batch)])


def landmark_nme(pred_kpts: np.ndarray, true_kpts: np.ndarray) -> np.ndarray:
    """(B,) 2D NME in % of sqrt(landmark box area) for (B, 68, 2|3) points."""
    t = true_kpts[..., :2]
    size = np.sqrt(np.prod(t.max(1) - t.min(1), axis=-1))
    return 100.0 * np.linalg.norm(pred_kpts[..., :2] - t, axis=-1).mean(-1) / np.maximum(size, 1e-6)


def accuracy_report(fp32: Callable[[np.ndarray], np.ndarray], int8: Callable[[np.ndarray], np.ndarray],
                    calibration: Calibration) -> dict[str, Any]:
    """Compare the two forwards (raw network outputs, sigmoid range) on the held-out crops (see module doc)."""
    sl = calibration.validation_slice
    crops = calibration.crops[sl]
    r = crops.shape[1]
    scale = np.float32(LABEL_SCALE * r / 256.0)  # crop pixels at this resolution
    a = _run(fp32, crops).reshape(len(crops), -1, 3) * scale
    b = _run(int8, crops).reshape(len(crops), -1, 3) * scale
    dist = np.linalg.norm(b[:, calibration.face_ind] - a[:, calibration.face_ind], axis=-1)
    if calibration.labels is not None:
        truth = calibration.labels[sl].reshape(len(crops), -1, 3)[:, calibration.kpt_flat]
        reference = "labels"
    else:
        truth = a[:, calibration.kpt_flat]
        reference = "fp32 landmarks (no labels)"
    nme_fp32 = landmark_nme(a[:, calibration.kpt_flat], truth)
    nme_int8 = landmark_nme(b[:, calibration.kpt_flat], truth)
    report = {
        "validation_crops": int(len(crops)), "calibration_crops": int(len(calibration.crops) - len(crops)),
        "source": calibration.source, "nme_reference": reference,
        "map_mean_px": float(dist.mean()), "map_p99_px": float(np.percentile(dist, 99)),
        "nme_fp32_pct": float(nme_fp32.mean()), "nme_int8_pct": float(nme_int8.mean()),
        "nme_change_pp": float(nme_int8.mean() - nme_fp32.mean()), "bound": dict(INT8_BOUND),
    }
    report["within_bound"] = within_bound(report)
    return report


def within_bound(report: dict[str, Any]) -> bool:
    """Whether a report's accuracy cost is within :data:`INT8_BOUND` (read at call time)."""
    try:
        return bool(report["nme_change_pp"] <= INT8_BOUND["nme_change_pp"]
                    and report["map_p99_px"] <= INT8_BOUND["map_p99_px"])
    except (KeyError, TypeError):
        return False


def describe(report: dict[str, Any]) -> str:
    """One line: the accuracy cost and whether it is within the bound."""
    verdict = "within the bound" if within_bound(report) else "OUTSIDE the bound"
    return (f"int8 vs fp32 on {report['validation_crops']} validation crops: map error mean "
            f"{report['map_mean_px']:.3f} px, p99 {report['map_p99_px']:.3f} px; landmark NME "
            f"{report['nme_fp32_pct']:.3f}% -> {report['nme_int8_pct']:.3f}% ({report['nme_change_pp']:+.3f} pp) "
            f"- {verdict} (NME +{INT8_BOUND['nme_change_pp']} pp, p99 {INT8_BOUND['map_p99_px']} px)")


def int8_capable_cpu() -> bool:
    """True on CPUs with int8 dot-product units (x86 VNNI / AMX; Arm dot-product), where int8
    inference is faster than fp32; without them int8 is often slower."""
    flags = ""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith(("flags", "Features")):
                        flags = line
                        break
        except OSError:
            return False
    words = set(flags.split())
    return bool(words & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})
