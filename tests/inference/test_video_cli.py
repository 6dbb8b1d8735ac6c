"""prnet-predict --video on short generated clips, as users type it: the annotated video keeps
the input's frame count, size and frame rate; frames.csv / .jsonl hold one row per face per
frame; bad input is one error line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from prnet_keras.data.synth_video import talking_head_frames
from prnet_keras.inference.videoio import VideoSink, VideoSource, write_video

pytest.importorskip("tensorflow")

ROOT = Path(__file__).resolve().parents[2]
PREDICT = Path(sys.executable).with_name("prnet-predict")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, synthetic_model, synthetic_layout):
    """A 20-frame 160x120 clip at 10 fps, a two-face 320x240 clip, and an untrained light model."""
    from prnet_keras.model import build_model

    d = tmp_path_factory.mktemp("video")
    write_video(d / "talk.mp4", (f.image for f in talking_head_frames(synthetic_model, 20, 160, 120, 10.0)), 10.0)
    two = list(talking_head_frames(synthetic_model, 12, 320, 240, 12.0, faces=2, keep_vertices=True))
    write_video(d / "two.mp4", (f.image for f in two), 12.0)
    build_model("light", width=0.25).save(d / "light.keras")
    synthetic_layout.save(d / "uv_layout.npz")
    return types.SimpleNamespace(path=d, two_frames=two)  # with the second clip's ground truth


def _predict(args, cwd, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([str(PREDICT), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=env, **kw)


def test_video_keeps_frames_size_and_fps_and_writes_the_table(clip_dir, tmp_path):
    out = tmp_path / "out"
    proc = _predict(["--video", clip_dir.path / "talk.mp4", "--model", clip_dir.path / "light.keras", "--output", out,
                     "--overlay", "landmarks,pose,mesh,depth"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "20 frame(s)" in proc.stdout
    with VideoSource(out / "talk_annotated.mp4") as v:
        assert (v.width, v.height, v.fps) == (160, 120, 10.0)
        assert sum(1 for _ in v) == 20
    with open(out / "frames.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    lines = (out / "frames.jsonl").read_text().splitlines()
    assert len(rows) == len(lines)  # an untrained network: its faces may all be rejected; the files still exist
    assert not list(out.glob(".*partial*"))


def test_one_row_per_face_per_frame(clip_dir, tmp_path, synthetic_model, synthetic_layout, monkeypatch, capsys):
    """In-process CLI with stand-ins for the network and the detector (tests/inference/oracle.py):
    two faces crossing, two rows per frame with stable ids, meshes every 5th frame."""
    from prnet_keras.cli import load_model
    from prnet_keras.inference import Predictor, detect, tracking
    from tests.inference.oracle import Oracle, TruthDetector

    oracle = Oracle(synthetic_model, synthetic_layout)
    oracle.follow(tracking.FaceTracker, clip_dir.two_frames, monkeypatch)
    monkeypatch.setattr(load_model, "predictor_for",
                        lambda args, opts, crop, det: oracle.wrap(Predictor(oracle, synthetic_layout)))
    monkeypatch.setattr(detect, "get_detector", lambda *a, **k: TruthDetector(oracle))
    out = tmp_path / "out"
    code = load_model.main(["--video", str(clip_dir.path / "two.mp4"), "--model", str(clip_dir.path / "light.keras"),
                            "--output", str(out), "--outputs", "obj,pose", "--every", "5", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    with open(out / "frames.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    per_frame = {}
    for r in rows:
        per_frame.setdefault(int(r["frame"]), []).append(int(r["face_id"]))
    assert per_frame == {i: [0, 1] for i in range(12)}
    assert len(rows[0]) == 13 + 68 * 3
    lines = (out / "frames.jsonl").read_text().splitlines()
    assert len(lines) == len(rows)
    first = json.loads(lines[0])
    assert np.asarray(first["keypoints"]).shape == (68, 3) and set(first["pose_deg"]) == {"pitch", "yaw", "roll"}
    meshes = sorted(p.name for p in (out / "meshes").glob("*.obj"))
    assert meshes == [f"frame{i:06d}_id{k}.obj" for i in (0, 5, 10) for k in (0, 1)]


def _one_error_line(proc, *needles):
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and err[0].startswith("error: "), proc.stderr
    for n in needles:
        assert n in err[0], err[0]


def test_bad_videos_are_one_error_line(clip_dir, tmp_path):
    model = clip_dir.path / "light.keras"
    (tmp_path / "notes.mp4").write_text("not a video at all")
    _one_error_line(_predict(["--video", tmp_path / "notes.mp4", "--model", model], tmp_path), "notes.mp4",
                    "not a video file")
    # an AVI whose codec tag names no codec FFmpeg knows
    sink = VideoSink(tmp_path / "mjpg.avi", 10.0, 64, 48)
    for i in range(3):
        sink.write(np.full((48, 64, 3), 40 * i, np.uint8))
    sink.close()
    (tmp_path / "codec.avi").write_bytes((tmp_path / "mjpg.avi").read_bytes().replace(b"MJPG", b"ZZZZ"))
    _one_error_line(_predict(["--video", tmp_path / "codec.avi", "--model", model], tmp_path), "codec.avi",
                    "cannot decode this video")
    VideoSink(tmp_path / "empty.avi", 10.0, 64, 48).close()  # a valid container with 0 frames
    _one_error_line(_predict(["--video", tmp_path / "empty.avi", "--model", model], tmp_path), "empty.avi",
                    "no frames")
    _one_error_line(_predict(["--video", tmp_path / "missing.mp4", "--model", model], tmp_path), "not found")
    overlay = ["--video", clip_dir.path / "talk.mp4", "--model", model, "--overlay", "sparkles"]
    _one_error_line(_predict(overlay, tmp_path), "--overlay")


def test_declared_frame_size_is_checked_before_decoding(clip_dir):
    from prnet_keras.errors import InputError

    with pytest.raises(InputError, match=r"talk.mp4: declares 160x120 frames, more than the 10000 pixels allowed"):
        VideoSource(clip_dir.path / "talk.mp4", max_pixels=10_000)
