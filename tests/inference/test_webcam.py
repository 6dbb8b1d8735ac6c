"""The webcam path: the live window (a Tk child process) in an X server, keys q and s through
the same loop that reads files; prnet-predict --webcam without a camera or a display is one
error line. (A real camera is not needed: the capture class is the same for files and
cameras, and the file path runs the loop.)"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from prnet_keras.data.synth_video import talking_head_frames
from prnet_keras.inference.videoio import VideoSource, write_video

PREDICT = Path(sys.executable).with_name("prnet-predict")


@pytest.fixture()
def display(xserver, monkeypatch):
    """The shared private X server (tests/conftest.py) as this process's display."""
    pytest.importorskip("tkinter")
    monkeypatch.setenv("DISPLAY", xserver.display)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    return xserver


def test_live_window_saves_meshes_on_s_and_stops_on_q(display, tmp_path, synthetic_model, synthetic_layout,
                                                        monkeypatch):
    from prnet_keras.inference import Predictor
    from prnet_keras.inference.tracking import FaceTracker
    from prnet_keras.inference.video import run_stream
    from prnet_keras.viz.window import FrameWindow
    from tests.inference.oracle import Oracle, TruthDetector

    frames = list(talking_head_frames(synthetic_model, 12, 160, 120, 10.0, keep_vertices=True))
    clip = write_video(tmp_path / "cam.mp4", (f.image for f in frames), 10.0)
    oracle = Oracle(synthetic_model, synthetic_layout)
    oracle.follow(FaceTracker, frames, monkeypatch)
    tracker = FaceTracker(oracle.wrap(Predictor(oracle, synthetic_layout)), TruthDetector(oracle))
    title = "prnet-keras test camera"
    window = FrameWindow(title)
    calls, shown = [0], []

    def show(frame):
        calls[0] += 1
        shown.append(frame.shape)
        keys = window.show(frame)
        press = {3: "s", 6: "q"}.get(calls[0])
        if press:
            windows = display.windows(title)
            assert windows, f"no window {title!r}"
            if press == "s":  # the window shows the annotated frame, pixel for pixel
                picture = display.drawn(windows[0][0])
                assert picture.shape == frame.shape and np.abs(picture.astype(int) - frame).mean() < 1.0
            display.press(windows[0][0], press)
            for _ in range(100):  # the key comes back from the window process
                keys = window.show(frame)
                if keys:
                    break
                time.sleep(0.05)
            assert keys == [press]
        return keys

    try:
        summary = run_stream(VideoSource(clip), tracker, tmp_path / "out", None, ("landmarks", "pose"), display=show,
                             log=lambda m: None)
    finally:
        window.close()
    assert window.closed
    assert calls[0] == 6 and summary["frames"] == 6  # q on the 6th frame ends the loop after it
    assert shown[0] == (120, 160, 3)
    assert [p.name for p in summary["snapshots"]] == ["frame000002_id0.obj"]  # s on the 3rd frame (index 2)
    assert (tmp_path / "out" / "snapshots" / "frame000002_id0.obj").stat().st_size > 10000


def _one_error_line(proc, needle):
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], proc.stderr


def test_webcam_without_camera_or_display_is_one_error_line(display, tmp_path):
    model = tmp_path / "m.keras"
    model.write_bytes(b"not read: the camera is checked first")
    env = display.env()
    proc = subprocess.run([str(PREDICT), "--webcam", "9", "--model", str(model)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)
    _one_error_line(proc, "camera 9: cannot open it")
    env.pop("DISPLAY")
    env.pop("WAYLAND_DISPLAY", None)
    proc = subprocess.run([str(PREDICT), "--webcam", "--model", str(model)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)
    _one_error_line(proc, "no display")
