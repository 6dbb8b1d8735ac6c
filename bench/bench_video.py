"""Benchmark: video end to end (decode → track → network → smoothing → overlay → encode), frames/s.

The clip: a synthetic talking head from our renderer (``data.synth_video``: a face turning
±35°, opening its mouth, drifting), 640×480, 300 frames at 30 fps, written as MP4 (mp4v)
and read back through ``inference.videoio`` as a user's file would be.

Each variant runs ``inference.video.run_stream`` over the whole clip as ``prnet-predict
--video`` does (MTCNN on the first frame and every 10th, crops from the previous landmarks
otherwise, One Euro smoothing, landmarks + pose overlays, annotated MP4 and frames.csv):
light and resfcn256, fp32 (OpenVINO) and int8 (OpenVINO, NNCF-quantised on 64 synthetic
crops). The networks have untrained weights (timing only): each crop really goes through the
engine, and its output is then replaced by the ground-truth map of the face in that crop
(the tests' oracle, ``tests/inference/oracle.py``), so tracking behaves as with a trained
network. The oracle's own time (rendering those maps) is measured and subtracted.

Wall time on a shared machine inflates with its load, so the process CPU time per frame
(all threads, the oracle's subtracted) is recorded too, with the load average.

Writes bench/results/video.json; the last line is
``video fps_light=<v> fps_resfcn256=<v>`` (the best engine of each model).

Usage: python bench/bench_video.py [--frames 300] [--width 640] [--height 480]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import benchenv  # noqa: E402

from prnet_keras.utils import write_json  # noqa: E402


class TimedOracle:
    """The real engine on every crop (its cost counts), then the oracle's map (its cost does not)."""

    def __init__(self, forward, oracle):
        self.forward, self.oracle, self.oracle_s, self.oracle_cpu_s = forward, oracle, 0.0, 0.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.forward(x)
        t0, c0 = time.perf_counter(), time.process_time()
        out = self.oracle(x)
        self.oracle_s += time.perf_counter() - t0
        self.oracle_cpu_s += time.process_time() - c0
        return out


def run_variant(name: str, engine: str, clip: Path, truth: list, model, layout, calibration, out: Path) -> dict:
    from prnet_keras.inference import Predictor
    from prnet_keras.inference.detect import get_detector
    from prnet_keras.inference.smoothing import OneEuroParams
    from prnet_keras.inference.tracking import FaceTracker
    from prnet_keras.inference.video import run_stream
    from prnet_keras.inference.videoio import VideoSource
    from prnet_keras.model import build_model
    from prnet_keras.model.engines import keras_forward
    from prnet_keras.model.fold import fold_batch_norm
    from tests.inference.oracle import Oracle

    import keras

    keras.utils.set_random_seed(0)  # the same weights every run: the int8 conversion is cached
    folded = fold_batch_norm(build_model(name))
    forward, used = keras_forward(folded, engine, cache=True, calibration=calibration, layout=layout)
    oracle = Oracle(model, layout)
    timed = TimedOracle(forward, oracle)
    predictor = oracle.wrap(Predictor(timed, layout, batch_size=4))
    tracker = FaceTracker(predictor, get_detector("mtcnn"), redetect_every=10, smoothing=OneEuroParams())
    update = tracker.update

    def update_with_truth(image, t, _count=[0]):  # noqa: B006 - the frame counter
        oracle.frame = truth[_count[0]]
        _count[0] += 1
        return update(image, t)

    tracker.update = update_with_truth
    get_detector("mtcnn")(truth[0].image)  # warm-up: MTCNN graphs
    forward(np.zeros((1, 256, 256, 3), np.float32))
    cpu0 = time.process_time()
    summary = run_stream(VideoSource(clip), tracker, out / f"{name}-{used}", out / f"{name}-{used}.mp4",
                         ("landmarks", "pose"), log=lambda m: None)
    cpu_s = time.process_time() - cpu0 - timed.oracle_cpu_s
    seconds = summary["seconds"] - timed.oracle_s
    import csv

    with open(out / f"{name}-{used}" / "frames.csv", newline="") as f:
        ms_track = [float(r["ms_track"]) for r in csv.DictReader(f)]
    row = {"model": name, "engine": used, "frames": summary["frames"], "faces": summary["faces"],
           "detector_runs": summary["detector_runs"], "lost": summary["lost"],
           "seconds_without_oracle": round(seconds, 2), "oracle_seconds": round(timed.oracle_s, 2),
           "fps": round(summary["frames"] / seconds, 1),
           "process_cpu_ms_per_frame": round(1000 * cpu_s / summary["frames"], 1),
           "track_ms_median": round(float(np.median(ms_track)), 1) if ms_track else None,
           "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    print(f"{name} {used}: {row['fps']} fps end to end, {row['process_cpu_ms_per_frame']} process CPU ms per frame "
          f"(all threads), tracker {row['track_ms_median']} ms per frame (median; detector + network + "
          f"post-processing, oracle included) ({summary['frames']} frames, {summary['faces']} faces, "
          f"{summary['detector_runs']} detector runs, {summary['lost']} lost; oracle {row['oracle_seconds']} s "
          "excluded)", flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--engines", default="openvino,openvino-int8")
    args = ap.parse_args()

    from prnet_keras.data.synth_video import talking_head_frames
    from prnet_keras.geometry import UVLayout
    from prnet_keras.geometry.synthetic import build_synthetic_model
    from prnet_keras.inference.calibration import CalibrationData
    from prnet_keras.inference.videoio import write_video

    env = benchenv.environment("cv2", "keras", "numba", "openvino", "nncf", "tensorflow")
    print("machine:", {k: env[k] for k in ("machine", "cpu_count", "affinity", "platform", "load_average_1min")})
    model = build_synthetic_model(seed=0)
    layout = UVLayout.from_model(model)
    calibration = CalibrationData(count=64, validation=16, seed=1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        truth = list(talking_head_frames(model, args.frames, args.width, args.height, 30.0, keep_vertices=True))
        clip = write_video(out / "talking_head.mp4", (f.image for f in truth), 30.0)
        print(f"clip: {args.width}x{args.height}, {args.frames} frames at 30 fps, rendered in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        for engine in args.engines.split(","):
            for name in ("light", "resfcn256"):
                rows.append(run_variant(name, engine, clip, truth, model, layout, calibration, out))
    best = {name: max(r["fps"] for r in rows if r["model"] == name) for name in ("light", "resfcn256")}
    results = {"environment": env, "clip": {"width": args.width, "height": args.height, "frames": args.frames,
                                            "fps": 30.0}, "rows": rows, "best_fps": best}
    if hasattr(os, "getloadavg"):
        results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    path = ROOT / "bench" / "results" / "video.json"
    write_json(path, results)
    print(f"wrote {path.relative_to(ROOT)}")
    print(f"video fps_light={best['light']} fps_resfcn256={best['resfcn256']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
