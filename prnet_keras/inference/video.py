"""Video and camera streams through the tracker: annotated video, a per-frame table, meshes.

    from prnet_keras.inference import Predictor
    from prnet_keras.inference.video import process_video
    summary = process_video("talk.mp4", Predictor.from_path("run/model.keras"), "out/")
    # out/talk_annotated.mp4, out/frames.csv, out/frames.jsonl

The loop (:func:`run_stream`) is the same for files and cameras: decode (a reader thread) →
track (detector when needed, network on all crops in one batch, post-processing, One Euro
smoothing) → overlays → encode (a writer thread) and/or a live window. Decoding and
encoding overlap the network, so a frame costs about the tracker's time.

Outputs (``out_dir``):

* ``<stem>_annotated.mp4``: the input's size and frame rate, one output frame per input frame,
  with the chosen overlays (:data:`OVERLAYS`);
* ``frames.csv`` / ``frames.jsonl``: one row per face per frame (see :class:`FrameTable`);
* ``meshes/frame<NNNNNN>_id<K>*``: the requested per-face outputs (``writers.OUTPUTS``) every
  ``every``-th frame.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import cv2
import numpy as np

from prnet_keras.errors import InputError
from prnet_keras.inference.smoothing import OneEuroParams
from prnet_keras.inference.tracking import DEFAULT_SMOOTHING, FaceTracker, TrackedFace
from prnet_keras.inference.videoio import VideoSink, VideoSource
from prnet_keras.utils import progress_bar

OVERLAYS = ("landmarks", "pose", "mesh", "depth")
_ID_COLORS = ((0, 255, 0), (255, 128, 0), (0, 160, 255), (255, 0, 255), (255, 255, 0), (0, 255, 255))


def parse_overlays(text: str) -> tuple[str, ...]:
    """'landmarks,pose' -> ('landmarks', 'pose'); 'none' or '' -> ()."""
    items = [o.strip().lower() for o in text.split(",") if o.strip()]
    if items == ["none"]:
        return ()
    bad = [o for o in items if o not in OVERLAYS]
    if bad:
        raise InputError(f"--overlay: unknown {', '.join(bad)}; expected some of {', '.join(OVERLAYS)} (or none)")
    return tuple(dict.fromkeys(items))


# ---- overlays --------------------------------------------------------------------------------
def draw_faces(frame: np.ndarray, faces: Sequence[TrackedFace], overlays: Sequence[str],
               fps: float | None = None) -> np.ndarray:
    """The frame (RGB uint8) with ``overlays`` of every tracked face, its id, and an fps counter."""
    from prnet_keras.viz.overlay import draw_dense, draw_landmarks, draw_pose_axes

    out = frame.copy()
    s = max(1, round(max(out.shape[:2]) / 400))
    for tf in faces:
        face = tf.face
        color = _ID_COLORS[tf.id % len(_ID_COLORS)]
        if "depth" in overlays:
            out = _blend_depth(out, face)
        if "mesh" in overlays:
            out = draw_dense(out, face.vertices, step=8, color=(255, 64, 64))
        if "landmarks" in overlays:
            out = draw_landmarks(out, face.keypoints, color=color)
        if "pose" in overlays:
            k = face.keypoints
            out = draw_pose_axes(out, face.pose.rotation, k[30, :2], 0.5 * float(np.ptp(k[:, 0])))
        lo = face.keypoints[:, :2].min(0)
        cv2.putText(out, f"id {tf.id}", (int(lo[0]), max(12 * s, int(lo[1]) - 6 * s)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5 * s, color, s, cv2.LINE_AA)
    if fps is not None:
        for color, thickness in (((255, 255, 255), 2 * s), ((0, 0, 0), s)):  # dark text on a light outline
            cv2.putText(out, f"{fps:5.1f} fps", (8 * s, 20 * s), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * s, color, thickness,
                        cv2.LINE_AA)
    return out


def _blend_depth(image: np.ndarray, face) -> np.ndarray:
    """The face's depth (nearer = brighter, inferno-like colour map) blended over the image."""
    z, covered = face.depth_image, face.depth_mask
    if not covered.any():
        return image
    lo, hi = float(z[covered].min()), float(z[covered].max())
    g = np.zeros(z.shape, np.uint8)
    g[covered] = np.rint(255 * (z[covered] - lo) / max(hi - lo, 1e-6)).astype(np.uint8)
    heat = cv2.applyColorMap(g, cv2.COLORMAP_INFERNO)[..., ::-1]
    out = image.copy()
    out[covered] = (0.35 * image[covered] + 0.65 * heat[covered]).astype(np.uint8)
    return out


# ---- the per-frame table ---------------------------------------------------------------------
class FrameTable:
    """``frames.csv`` and ``frames.jsonl``: one row per face per frame, written as frames come
    (under temporary names, renamed on :meth:`close`).

    Columns: frame, time_s, face_id, detected (1 when the crop came from the detector this
    frame), similarity (appearance agreement with the previous frame), box_left/top/right/bottom
    (the 68 landmarks' box, image pixels), pitch_deg, yaw_deg, roll_deg (3DDFA convention),
    ms_track (detector + network + post-processing of the whole frame), then x0, y0, z0 ...
    x67, y67, z67 (image frame: x right, y down, z larger = nearer, pixels). The JSON lines
    hold the same per face, landmarks as a (68, 3) list.
    """

    FIELDS = (["frame", "time_s", "face_id", "detected", "similarity", "box_left", "box_top", "box_right",
               "box_bottom", "pitch_deg", "yaw_deg", "roll_deg", "ms_track"]
              + [f"{a}{i}" for i in range(68) for a in "xyz"])

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.paths = (out_dir / "frames.csv", out_dir / "frames.jsonl")
        self._tmp = [p.with_name(f".{p.name}.partial") for p in self.paths]
        self._csv_file = open(self._tmp[0], "w", newline="", encoding="utf-8")
        self._json_file = open(self._tmp[1], "w", encoding="utf-8")
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(self.FIELDS)
        self.rows = 0

    def add(self, index: int, t: float, faces: Sequence[TrackedFace], ms_track: float) -> None:
        for tf in faces:
            k = tf.face.keypoints.astype(np.float64)
            lo, hi = k[:, :2].min(0), k[:, :2].max(0)
            ang = tf.face.pose.angles_deg
            head = [index, round(t, 4), tf.id, int(tf.detected), round(tf.similarity, 4),
                    *(round(float(v), 2) for v in (lo[0], lo[1], hi[0], hi[1])),
                    *(round(float(a), 3) for a in ang), round(ms_track, 2)]
            self._csv.writerow(head + [round(float(v), 2) for v in k.reshape(-1)])
            self._json_file.write(json.dumps({
                "frame": index, "time_s": head[1], "face_id": tf.id, "detected": bool(tf.detected),
                "similarity": head[4], "box_ltrb": head[5:9],
                "pose_deg": {"pitch": head[9], "yaw": head[10], "roll": head[11]}, "ms_track": head[12],
                "keypoints": np.round(k, 2).tolist()}) + "\n")
            self.rows += 1

    def close(self) -> tuple[Path, Path]:
        self._csv_file.close()
        self._json_file.close()
        for tmp, path in zip(self._tmp, self.paths):
            os.replace(tmp, path)
        return self.paths

    def abort(self) -> None:
        for f in (self._csv_file, self._json_file):
            f.close()
        for tmp in self._tmp:
            tmp.unlink(missing_ok=True)


# ---- the loop ----------------------------------------------------------------------------------
_END = object()


def _reader(source: VideoSource, out: queue.Queue, stop: threading.Event) -> None:
    """Decode into ``out``; a camera keeps only its newest frame (no growing latency)."""
    try:
        for item in source:
            if stop.is_set():
                break
            if source.is_camera:
                try:
                    out.get_nowait()  # drop the frame nobody took yet
                except queue.Empty:
                    pass
            out.put(item)
    except BaseException as exc:  # handed to the consumer, raised there
        out.put(exc)
    out.put(_END)


def _writer(sink: VideoSink, inbox: queue.Queue, errors: list) -> None:
    while True:
        frame = inbox.get()
        if frame is _END:
            return
        if not errors:
            try:
                sink.write(frame)
            except BaseException as exc:
                errors.append(exc)


def run_stream(
    source: VideoSource, tracker: FaceTracker, out_dir: Path | None = None, video_path: Path | None = None,
    overlays: Sequence[str] = ("landmarks", "pose"), outputs: Sequence[str] = (), every: int = 1,
    progress: bool = False, display: Callable[[np.ndarray], Iterable[str]] | None = None,
    log: Callable[[str], None] = print, max_frames: int | None = None,
) -> dict[str, Any]:
    """Run ``tracker`` over every frame of ``source`` (see module doc); returns a summary.

    video_path: the annotated video to write (None: none); out_dir: folder of the table and
    meshes (None: neither); outputs / every: per-face files every ``every``-th frame;
    display: called with each annotated frame, returns the keys pressed since the last call
    ("q" stops, "s" saves the current faces' meshes as OBJ under ``out_dir/snapshots``).
    """
    from prnet_keras.inference.writers import write_face_outputs

    if every < 1:
        raise InputError(f"--every: expected >= 1, got {every}")
    table = FrameTable(out_dir) if out_dir is not None else None
    sink = VideoSink(video_path, source.fps, source.width, source.height) if video_path is not None else None
    frames_q: queue.Queue = queue.Queue(maxsize=1 if source.is_camera else 4)
    encode_q: queue.Queue = queue.Queue(maxsize=4)
    stop, write_errors = threading.Event(), []
    reader = threading.Thread(target=_reader, args=(source, frames_q, stop), daemon=True, name="prnet-video-read")
    writer = threading.Thread(target=_writer, args=(sink, encode_q, write_errors), daemon=True,
                              name="prnet-video-write") if sink else None
    total = source.frame_count if not source.is_camera else 0
    bar = progress_bar(total or None, "video", "frame", progress)
    summary: dict[str, Any] = {"frames": 0, "faces": 0, "written": [], "snapshots": []}
    fps_meter: list[float] = []
    current: list[TrackedFace] = []
    ok = False
    t_start = time.perf_counter()
    reader.start()
    if writer:
        writer.start()
    try:
        while max_frames is None or summary["frames"] < max_frames:
            item = frames_q.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            index, t, frame = item
            quit_now = False
            t0 = time.perf_counter()
            current = tracker.update(frame, t)
            ms_track = 1000 * (time.perf_counter() - t0)
            if table is not None:
                table.add(index, t, current, ms_track)
            if outputs and out_dir is not None and index % every == 0:
                for tf in current:
                    summary["written"] += write_face_outputs(tf.face, out_dir / "meshes",
                                                             f"frame{index:06d}_id{tf.id}", list(outputs))
            fps_meter.append(time.perf_counter())
            fps_meter[:] = fps_meter[-30:]
            fps = (len(fps_meter) - 1) / (fps_meter[-1] - fps_meter[0]) if len(fps_meter) > 1 else None
            if sink is not None or display is not None:
                annotated = draw_faces(frame, current, overlays, fps if display is not None else None)
                if sink is not None:
                    if write_errors:
                        raise write_errors[0]
                    encode_q.put(annotated)
                if display is not None:
                    keys = set(display(annotated))
                    if "s" in keys and out_dir is not None:
                        for tf in current:
                            summary["snapshots"] += write_face_outputs(tf.face, out_dir / "snapshots",
                                                                       f"frame{index:06d}_id{tf.id}", ["obj"])
                        log(f"saved {len(current)} mesh(es) of frame {index} in {out_dir / 'snapshots'}")
                    quit_now = "q" in keys
            summary["frames"] += 1
            summary["faces"] += len(current)
            bar.update(1)
            if quit_now:
                break
        ok = True
    finally:
        stop.set()
        while reader.is_alive():  # unblock a reader waiting on a full queue
            try:
                frames_q.get(timeout=0.05)
            except queue.Empty:
                pass
        bar.close()
        if writer:
            encode_q.put(_END)
            writer.join()
        if ok and not write_errors:
            if sink is not None:
                summary["video"] = sink.close()
            if table is not None:
                summary["tables"] = table.close()
                summary["rows"] = table.rows
        else:
            if sink is not None:
                sink.abort()
            if table is not None:
                table.abort()
        source.close()
    if write_errors:
        raise write_errors[0]
    seconds = time.perf_counter() - t_start
    summary.update({k: v for k, v in tracker.stats.items() if k != "frames"})
    summary.update(seconds=seconds, fps=summary["frames"] / seconds if seconds > 0 else 0.0)
    return summary


def process_video(
    video: str | os.PathLike | int, predictor, out_dir: str | os.PathLike, detector: Any = None,
    overlays: Sequence[str] = ("landmarks", "pose"), outputs: Sequence[str] = (), every: int = 1,
    redetect_every: int = 10, smoothing: OneEuroParams | None = DEFAULT_SMOOTHING, progress: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """A video file (or camera index) -> ``out_dir`` (see module doc). ``detector``: name or
    callable (None: the predictor's); ``smoothing``: One Euro parameters (None: off)."""
    from prnet_keras.inference.detect import get_detector

    out_dir = Path(out_dir)
    source = video if isinstance(video, VideoSource) else VideoSource(video)
    det = get_detector(detector or predictor.detector, predictor.min_confidence, predictor.min_face_size,
                       predictor.detector_engine)
    tracker = FaceTracker(predictor, det, redetect_every=redetect_every, smoothing=smoothing)
    stem = "camera" if source.is_camera else Path(source.name).stem
    return run_stream(source, tracker, out_dir, out_dir / f"{stem}_annotated.mp4", overlays, outputs, every,
                      progress, **kwargs)
