"""Shared fixtures. Area-specific fixtures live in tests/<area>/conftest.py.

Reference data (``prnet_keras.utils.reference_data_dir()``) is optional:
tests that need it use the ``reference_data`` fixture and skip with a clear reason.

``xserver`` is a private X server (Xvfb) for the viewers (tests/viz, the docs' commands). It
only reaches the processes a test starts with ``xserver.env()``: this process's DISPLAY is
never changed, so other tests keep their headless behaviour. Windows are found and closed
through the X server (xdotool) and captured from it (Pillow's XCB grab).
"""

from __future__ import annotations

import atexit
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
# converted-model cache (model.engines): one fresh folder per test session, not ~/.cache
if "PRNET_CACHE_DIR" not in os.environ:
    os.environ["PRNET_CACHE_DIR"] = tempfile.mkdtemp(prefix="prnet-test-cache-")
    atexit.register(shutil.rmtree, os.environ["PRNET_CACHE_DIR"], True)

from prnet_keras.utils import reference_data_dir  # noqa: E402


@pytest.fixture(scope="session")
def reference_data() -> Path:
    path = reference_data_dir()
    if path is None:
        pytest.skip("reference data absent (set PRNET_REFERENCE_DATA to its folder)")
    return path


@pytest.fixture(scope="session")
def mean_bfm(reference_data):
    from prnet_keras.geometry import load_mean_bfm

    return load_mean_bfm(reference_data / "bfm-mean")


@pytest.fixture(scope="session")
def official_layout(reference_data):
    from prnet_keras.geometry import UVLayout

    return UVLayout.from_prnet_folder(reference_data / "prnet-uv-data")


@pytest.fixture(scope="session")
def synthetic_model():
    from prnet_keras.geometry.synthetic import build_synthetic_model

    return build_synthetic_model(seed=0)


@pytest.fixture(scope="session")
def synthetic_layout(synthetic_model):
    from prnet_keras.geometry import UVLayout

    return UVLayout.from_model(synthetic_model)


@pytest.fixture(scope="session")
def synthetic_aflw_dir(tmp_path_factory) -> Path:
    """12 synthetic AFLW2000-3D-layout samples (JPEG + .mat), seed 0."""
    from prnet_keras.data.synth import generate_dataset

    out = tmp_path_factory.mktemp("synth_aflw")
    generate_dataset(out, layout="aflw2000", count=12, seed=0, bfm="synthetic", workers=1)
    return out


@pytest.fixture(scope="session")
def synthetic_300wlp_dir(tmp_path_factory) -> Path:
    """16 synthetic 300W-LP-layout samples (8 originals + their _Flip twins), seed 1."""
    from prnet_keras.data.synth import generate_dataset

    out = tmp_path_factory.mktemp("synth_300wlp")
    generate_dataset(out, layout="300wlp", count=16, seed=1, bfm="synthetic", workers=1)
    return out


@pytest.fixture(scope="session")
def synthetic_val_hdf5(synthetic_aflw_dir, tmp_path_factory) -> Path:
    """val.hdf5 (crops store) built from ``synthetic_aflw_dir``."""
    from prnet_keras.data.build import build_hdf5

    out = tmp_path_factory.mktemp("h5") / "val.hdf5"
    build_hdf5(source=synthetic_aflw_dir, out=out, layout="auto", bfm="synthetic", buildmode="val", workers=1)
    return out


@pytest.fixture(scope="session")
def synthetic_train_hdf5(synthetic_300wlp_dir, tmp_path_factory) -> Path:
    """train.hdf5 (crops store) built from ``synthetic_300wlp_dir``."""
    from prnet_keras.data.build import build_hdf5

    out = tmp_path_factory.mktemp("h5") / "train.hdf5"
    build_hdf5(source=synthetic_300wlp_dir, out=out, layout="auto", bfm="synthetic", buildmode="train", workers=1)
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# ---- a private X server for the viewers -------------------------------------------------------
BACKGROUND = np.array([255, 255, 255])  # open3d's window background


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

    def windows(self, title: str) -> list[tuple[str, str]]:
        """(id, name) of the visible windows whose name contains ``title``."""
        found = [(wid, self._xdotool("getwindowname", wid).strip())
                 for wid in self._xdotool("search", "--onlyvisible", "--name", title).split()]
        return [(wid, name) for wid, name in found if name]

    def find_window(self, title: str, proc: subprocess.Popen, timeout: float = 60.0,
                    seen: tuple = ()) -> tuple[str, str]:
        """(id, name) of a visible window whose name contains ``title`` and is not in ``seen``
        (prnet-view shows its files one after another in one window, retitled for each; a new
        name means the next file). Fails when ``proc`` exits first."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for wid, name in self.windows(title):
                if name not in seen:
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

    def dismiss_until_exit(self, proc: subprocess.Popen, title: str = "prnet-view", timeout: float = 240.0) -> bool:
        """Press Escape in each window ``proc`` shows (a new name: the next file; again if one stays
        up 5 s) until it exits. False on time-out."""
        end, pressed = time.monotonic() + timeout, {}
        while proc.poll() is None and time.monotonic() < end:
            for wid, name in self.windows(title):
                if time.monotonic() - pressed.get(name, -1e9) > 5.0:
                    time.sleep(0.5)  # let it draw, as a user would look
                    self.close(wid)
                    pressed[name] = time.monotonic()
            time.sleep(0.2)
        return proc.poll() is not None

    def press(self, wid: str, key: str) -> None:
        """Focus the window (there is no window manager) and press ``key`` in it."""
        self._xdotool("windowfocus", "--sync", wid)
        self._xdotool("key", "--window", wid, key)

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
