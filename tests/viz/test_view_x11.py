"""The viewers open for real: windows in an X server (Xvfb), captured from the server and closed by
a key press, as a user would. prnet-view on every file type we write, --points, and
prnet-predict --show with TensorFlow loaded in the parent (the viewer runs in a child without it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BIN = Path(sys.executable).parent


def console_script(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed in this environment (pip install -e .)")
    return str(path)


@pytest.fixture
def start(xserver):
    """start(cmd, log, **env) -> Popen on the test X server; whatever still runs at the end is killed."""
    procs: list[subprocess.Popen] = []

    def run(cmd: list[str], log: Path, **env: str) -> subprocess.Popen:
        with open(log, "w") as err:  # a file: -X importtime output would fill a pipe and stall the viewer
            procs.append(subprocess.Popen(cmd, env=xserver.env(**env), stdout=subprocess.DEVNULL, stderr=err,
                                          start_new_session=True))
        return procs[-1]

    yield run
    for proc in procs:  # the process and its children (prnet-predict's viewer)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def finish(proc: subprocess.Popen, log: Path, timeout: float = 30) -> str:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"{proc.args[:3]} still running {timeout:.0f} s after its last window was closed")
    return log.read_text()


def show_and_capture(xserver, proc: subprocess.Popen, count: int, save_to: Path,
                     title: str = "prnet-view") -> list[tuple[str, np.ndarray]]:
    """Wait for ``count`` windows in turn; capture each once drawn (saved as PNG in ``save_to``,
    to look at when a test fails), then close it (Escape)."""
    from PIL import Image

    shots: list[tuple[str, np.ndarray]] = []
    for k in range(count):
        wid, name = xserver.find_window(title, proc, seen=tuple(n for n, _ in shots))
        shots.append((name, xserver.drawn(wid)))
        Image.fromarray(shots[-1][1]).save(save_to / f"window{k}.png")
        xserver.close(wid)
    return shots


def imported_modules(importtime_log: str) -> set[str]:
    """Top-level names of the modules a process imported, from its ``-X importtime`` lines."""
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in importtime_log.splitlines()
            if line.startswith("import time:") and "|" in line}


def diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two pictures (0..255)."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def drawn_mask(picture: np.ndarray) -> np.ndarray:
    return np.abs(picture.astype(np.int16) - 255).sum(-1) > 30


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Overlap of the drawn regions of two pictures (1 = the same silhouette)."""
    ma, mb = drawn_mask(a), drawn_mask(b)
    return float((ma & mb).sum() / max((ma | mb).sum(), 1))


def chroma(picture: np.ndarray) -> float:
    """Mean colourfulness (max - min channel) of the drawn pixels: ~0 for grey shading."""
    c = picture.max(-1).astype(np.int16) - picture.min(-1)
    return float(c[drawn_mask(picture)].mean())


def test_prnet_view_shows_every_file_type_in_turn(xserver, start, mesh_files, tmp_path):
    names = ["obj", "textured", "ply", "mat", "mat_dotnet", "npy", "b_obj"]
    log = tmp_path / "stderr.txt"
    proc = start([console_script("prnet-view"), *(str(mesh_files[n]) for n in names)], log, PYTHONPROFILEIMPORTTIME="1")
    shots = show_and_capture(xserver, proc, len(names), tmp_path)
    err = finish(proc, log)
    assert proc.returncode == 0, err[-2000:]
    modules = imported_modules(err)
    assert "open3d" in modules and not modules & {"tensorflow", "keras"}, "the viewer process imported TensorFlow/Keras"
    pics = {}
    for name, (title, pic) in zip(names, shots):
        assert title == f"prnet-view mesh: {mesh_files[name]} ({names.index(name) + 1}/{len(names)})"
        assert xserver.drawn_share(pic) > 0.05, f"{name}: the window shows almost nothing"
        pics[name] = pic
    # one face, four files: the same picture (vertex colours everywhere)
    for name in ("ply", "mat", "mat_dotnet"):
        assert diff(pics[name], pics["obj"]) < 1.0, name
    # the texture (.mtl + PNG) holds the same colours as the vertex colours, oriented the same way
    assert diff(pics["textured"], pics["obj"]) < 6.0
    assert chroma(pics["obj"]) > 40, "the file's colours are not shown"
    # the position map: the same face (its layout found beside it), shaded grey (a map has no colours)
    assert iou(pics["npy"], pics["obj"]) > 0.9 and chroma(pics["npy"]) < 10
    # another face, another picture
    assert iou(pics["b_obj"], pics["obj"]) < 0.7


def test_prnet_view_points(xserver, start, mesh_files, tmp_path):
    log = tmp_path / "stderr.txt"
    proc = start([console_script("prnet-view"), "--points", str(mesh_files["obj"]), str(mesh_files["npy"])], log)
    shots = show_and_capture(xserver, proc, 2, tmp_path)
    err = finish(proc, log)
    assert proc.returncode == 0, err[-2000:]
    (title_obj, obj), (title_npy, npy) = shots
    assert title_obj.startswith("prnet-view points: ") and title_npy.startswith("prnet-view points: ")
    for pic in (obj, npy):
        assert xserver.drawn_share(pic) > 0.02
    assert chroma(obj) > 25 and chroma(npy) > 25  # vertex colours; depth colours (a map has none)
    assert diff(obj, npy) > 5


@pytest.fixture(scope="module")
def identity_model(tmp_path_factory, mesh_files):
    """A .keras model whose output is its input (1x1 convolution, identity kernel), with the UV
    layout of face "a" beside it, and a photo that holds that face's position map as colours:
    prnet-predict then reconstructs a real, smooth surface."""
    keras = pytest.importorskip("keras", reason="prnet-predict --show needs Keras/TensorFlow")
    from PIL import Image

    from prnet_keras import LABEL_SCALE
    from prnet_keras.geometry import UVLayout

    folder = tmp_path_factory.mktemp("identity-model")
    inputs = keras.Input((256, 256, 3))
    conv = keras.layers.Conv2D(3, 1, use_bias=False)
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3)])
    model.save(folder / "m.keras")
    UVLayout.load(mesh_files["npy"].parent / "uv_layout.npz").save(folder / "m.uv.npz")
    rows, cols = np.mgrid[0:256, 0:256]
    z = 80 * np.exp(-((rows - 128.0) ** 2 + (cols - 128.0) ** 2) / 4000)
    photo = np.rint(np.stack([cols, rows, z], -1) * 255 / LABEL_SCALE).astype(np.uint8)
    Image.fromarray(photo).save(folder / "photo.png")
    return folder


def test_prnet_predict_show_opens_the_viewer_in_a_process_without_tensorflow(xserver, start, identity_model, tmp_path):
    log = tmp_path / "stderr.txt"
    out = tmp_path / "out"
    # the crop of box (48, 48)-(208, 208) is the whole 256x256 photo (PRNet enlarges boxes 1.6x)
    proc = start([console_script("prnet-predict"), "--image", str(identity_model / "photo.png"),
                  "--model", str(identity_model / "m.keras"), "--bbox", "48,48,208,208", "--engine", "keras",
                  "--outputs", "obj,uv", "--output", str(out), "--show", "--cpu"], log)
    wid, title = xserver.find_window("prnet-view", proc, timeout=120)
    pic = xserver.drawn(wid)
    viewer_pid = xserver.window_pid(wid)
    assert viewer_pid and viewer_pid != proc.pid
    parent_maps = Path(f"/proc/{proc.pid}/maps").read_text()
    viewer_maps = Path(f"/proc/{viewer_pid}/maps").read_text()
    xserver.close(wid)
    err = finish(proc, log)
    assert proc.returncode == 0, err[-2000:]
    assert "tensorflow" in parent_maps  # the check below can fail: the parent did load TensorFlow
    assert "tensorflow" not in viewer_maps, "the viewer process loaded TensorFlow"
    assert title == f"prnet-view mesh: {out / 'photo_0.obj'}"  # the file written is the file shown
    assert xserver.drawn_share(pic) > 0.05
    # the position map's layout is written beside it, so prnet-view shows the map as the face mesh
    from prnet_keras.viz.meshfiles import load_view_mesh

    from_map, from_obj = load_view_mesh(out / "photo_0_uv.npy"), load_view_mesh(out / "photo_0.obj")
    assert not from_map.notes and np.array_equal(from_map.triangles, from_obj.triangles)


def test_show_falls_back_to_headless_views_when_no_window_opens(faces, tmp_path, monkeypatch, capfd):
    from prnet_keras.cli.load_model import _show

    monkeypatch.setenv("DISPLAY", ":97")  # no X server listens there
    face, _ = faces["a"]
    _show([(tmp_path / "photo_0", face)], outputs=["kpt"])
    err = capfd.readouterr().err
    assert "error: cannot open a window: no X server answers on display :97" in err  # the viewer said why
    assert "writing headless mesh views instead" in err
    views = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(tmp_path / "photo_0_views.png"))
    assert views.shape == (256, 768, 3) and (views.max(-1) > 0).mean() > 0.1
