"""Viewer fixtures: two small analytic faces written by our writers, and a private X server (Xvfb).

The X server is started by the ``xserver`` fixture and only reaches the processes a test starts
with ``xserver.env()``: this process's DISPLAY is never changed, so other tests keep their
headless behaviour. Windows are found, captured and closed through the X server itself
(xdotool for window lookup and key presses, Pillow's XCB grab for the picture).
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

R = 256
BACKGROUND = np.array([255, 255, 255])  # open3d's window background


def analytic_face(kind: str):
    """A smooth face-sized surface with an image whose colours vary across it: "a" an upright
    ellipse with a nose bump, "b" a wide, flat ellipse with a ridge. Returns (Face, UVLayout)."""
    from prnet_keras.geometry import UVLayout, grid_triangles
    from prnet_keras.inference import face_from_position_map

    rows, cols = np.mgrid[0:R, 0:R].astype(np.float64)
    ry, rx = (110.0, 80.0) if kind == "a" else (60.0, 120.0)
    inside = 1.0 - ((rows - 128) / ry) ** 2 - ((cols - 128) / rx) ** 2
    mask = inside >= 0
    flat = np.flatnonzero(mask)[np.linspace(0, mask.sum() - 1, 68).astype(int)]
    canonical = np.stack([cols[mask] - 128, 128 - rows[mask], np.zeros(mask.sum())], 1)
    layout = UVLayout(R, mask, np.stack([flat % R, flat // R]), np.where(mask, 3 / 16, 0), grid_triangles(mask),
                      canonical, source=f"test-{kind}")
    if kind == "a":
        z = 60 * np.sqrt(np.clip(inside, 0, 1)) + 35 * np.exp(-((rows - 135) ** 2 + (cols - 128) ** 2) / 150)
    else:
        z = 25 * np.sqrt(np.clip(inside, 0, 1)) + 20 * np.exp(-((cols - 160) ** 2) / 80)
    pm = np.stack([cols, rows, z], -1).astype(np.float32)
    image = np.zeros((R, R, 3), np.uint8)
    image[..., 0] = cols.astype(np.uint8) if kind == "a" else 40
    image[..., 1] = rows.astype(np.uint8)
    image[..., 2] = 200 if kind == "a" else (255 - cols).astype(np.uint8)
    return face_from_position_map(pm, np.eye(3), layout, image), layout


@pytest.fixture(scope="session")
def faces() -> dict[str, tuple]:
    """{"a": (Face, UVLayout), "b": (Face, UVLayout)} (see :func:`analytic_face`)."""
    return {kind: analytic_face(kind) for kind in ("a", "b")}


@pytest.fixture(scope="session")
def mesh_files(tmp_path_factory, faces) -> dict[str, Path]:
    """Face "a" in every format our writers produce, face "b" as .obj; the .npy with its layout beside it."""
    from prnet_keras.inference.writers import write_mat, write_obj, write_obj_textured, write_ply, write_uv_map

    out = tmp_path_factory.mktemp("meshes")
    (face_a, layout_a), (face_b, _) = faces["a"], faces["b"]
    files = {
        "obj": write_obj(face_a, out / "a.obj"),
        "textured": write_obj_textured(face_a, out / "a_textured.obj")[0],
        "ply": write_ply(face_a, out / "a.ply"),
        "mat": write_mat(face_a, out / "a.mat"),
        "mat_dotnet": write_mat(face_a, out / "a_dotnet.mat", "dotnet"),
        "npy": write_uv_map(face_a, out / "a")[1],
        "b_obj": write_obj(face_b, out / "b.obj"),
    }
    layout_a.save(out / "uv_layout.npz")
    return files


def drawn_share(picture: np.ndarray) -> float:
    """Share of the picture's pixels that differ from the window background."""
    return float((np.abs(picture.astype(np.int16) - BACKGROUND).sum(-1) > 30).mean())


class XServer:
    """A running Xvfb display and the few X operations the viewer tests need."""

    def __init__(self, display: str):
        self.display = display
        self.last_error = ""

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "WAYLAND_DISPLAY"}
        env.update(DISPLAY=self.display, **extra)
        return env

    def _xdotool(self, *args: str) -> str:
        done = subprocess.run(["xdotool", *args], env=self.env(), capture_output=True, text=True, timeout=20)
        self.last_error = done.stderr
        return done.stdout if done.returncode == 0 else ""

    def find_window(self, title: str, proc: subprocess.Popen, timeout: float = 60.0,
                    seen: tuple = ()) -> tuple[str, str]:
        """(id, name) of a visible window whose name contains ``title`` and is not in ``seen``
        (prnet-view shows its files one after another in one window, retitled for each; a new
        name means the next file). Fails when ``proc`` exits first."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for wid in self._xdotool("search", "--onlyvisible", "--name", title).split():
                name = self._xdotool("getwindowname", wid).strip()
                if name and name not in seen:
                    return wid, name
            if proc.poll() is not None:
                pytest.fail(f"the viewer exited ({proc.returncode}) before a window {title!r} appeared")
            time.sleep(0.2)
        tree = (subprocess.run(["xwininfo", "-root", "-tree"], env=self.env(), capture_output=True, text=True).stdout
                if shutil.which("xwininfo") else "(xwininfo not installed)")
        pytest.fail(f"no window {title!r} within {timeout:.0f} s; xdotool said {self.last_error!r}; windows:\n{tree}")

    def capture(self, wid: str) -> np.ndarray | None:
        """(H, W, 3) uint8 picture of the window, read from the X server (None: not mapped now)."""
        from PIL import ImageGrab

        geo = dict(line.split("=", 1) for line in self._xdotool("getwindowgeometry", "--shell", wid).split())
        if not all(k in geo for k in ("X", "Y", "WIDTH", "HEIGHT")):
            return None
        x, y, w, h = (int(geo[k]) for k in ("X", "Y", "WIDTH", "HEIGHT"))
        return np.asarray(ImageGrab.grab(bbox=(x, y, x + w, y + h), xdisplay=self.display).convert("RGB"))

    def drawn(self, wid: str, timeout: float = 30.0) -> np.ndarray:
        """The window's picture once rendered (background cleared, something drawn on it) and
        three captures in a row agree."""
        end = time.monotonic() + timeout
        last, same = None, 0
        while time.monotonic() < end:
            pic = self.capture(wid)
            same = same + 1 if pic is not None and last is not None and np.array_equal(pic, last) else 0
            if same >= 2 and 0.005 < drawn_share(pic) and (pic == BACKGROUND).all(-1).mean() > 0.2:
                return pic
            last = pic
            time.sleep(0.25)
        if last is None:
            pytest.fail(f"window {wid} could not be captured; xdotool said {self.last_error!r}")
        return last

    def close(self, wid: str) -> None:
        """Press Escape in the window (open3d closes on it), as a user would."""
        self._xdotool("key", "--window", wid, "Escape")

    drawn_share = staticmethod(drawn_share)

    def window_pid(self, wid: str) -> int:
        return int(self._xdotool("getwindowpid", wid).strip() or 0)


@pytest.fixture(scope="session")
def xserver():
    exe, tool = shutil.which("Xvfb"), shutil.which("xdotool")
    if exe is None or tool is None:
        pytest.skip("the viewer tests need Xvfb and xdotool (scripts/setup.sh installs xvfb and xdotool)")
    from PIL import features

    if not features.check("xcb"):
        pytest.skip("Pillow was built without XCB: cannot capture windows from the X server")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen([exe, "-displayfd", str(write_fd), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    number = b""
    end = time.monotonic() + 30
    while not number.endswith(b"\n") and time.monotonic() < end:  # Xvfb writes its display number when ready
        if select.select([read_fd], [], [], 0.5)[0]:
            chunk = os.read(read_fd, 16)
            if not chunk:
                break
            number += chunk
    os.close(read_fd)
    if not number.strip().isdigit():
        proc.kill()
        pytest.fail(f"Xvfb did not start (exit {proc.poll()})")
    try:
        yield XServer(":" + number.decode().strip())
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
