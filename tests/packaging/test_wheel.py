"""The wheel, installed the way a user installs it, works without the source tree.

The wheel is built from a copy of the package, installed with pip (``[cpu,all]``, nothing
downloaded: the dependencies are the ones this environment already has) into a fresh virtual
environment, and its console scripts run from a folder outside the repository. The fresh
environment sees the dependencies' site-packages folders through plain path lines in a .pth
file: site.addsitedir would also run the .pth files there, among them the editable install's
finder, which would expose the source tree again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
TF_NOISE = ("All log messages before absl::InitializeLog()", "oneDNN custom operations", "cpu_feature_guard")


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} exited {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def _dependency_dirs() -> list[str]:
    """The site-packages folders this interpreter imports the dependencies from."""
    dirs = [p for p in sys.path if p and Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]
    return list(dict.fromkeys(dirs))


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "prnet_keras", src / "prnet_keras", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    unset = ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL", "PIP_REQUIRE_VIRTUALENV")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(MPLBACKEND="Agg", PIP_DISABLE_PIP_VERSION_CHECK="1", PRNET_CACHE_DIR=str(base / "cache"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w",
          str(base / "dist"), str(src)], base, env)
    (wheel,) = (base / "dist").glob("prnet_keras-*.whl")

    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], base, env)
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base, env).stdout
    Path(purelib.strip(), "_prnet_test_deps.pth").write_text("".join(f"{d}\n" for d in _dependency_dirs()))
    _run([str(python), "-m", "pip", "install", "-q", "--no-index", "--no-build-isolation", "--no-cache-dir",
          f"{wheel}[cpu,all]"], base, env)
    work = base / "work"  # the user's folder, outside the repository
    work.mkdir()
    return {"wheel": wheel, "venv": venv, "python": python, "work": work, "env": env}


def test_wheel_holds_the_packaged_configurations(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    assert "prnet_keras/configs/defaults.json" in names and "prnet_keras/configs/quickstart.json" in names
    assert not [n for n in names if n.startswith(("configure/", "tests/"))]


def test_installed_package_runs_from_outside_the_repository(installed, synthetic_layout, tmp_path):
    venv, work, env = installed["venv"], installed["work"], installed["env"]
    bin_dir = venv / "bin"
    # the configuration loads: packaged defaults, a packaged name, the user's own ./configure/NAME.json
    (work / "configure").mkdir()
    (work / "configure" / "mine.json").write_text(json.dumps({"train": {"batchsize": 3}}))
    probe = ("import json, prnet_keras; from prnet_keras.config import load_config; "
             "print(json.dumps([prnet_keras.__file__, load_config()['server']['port'], "
             "load_config('quickstart')['train']['model'], load_config('mine')['train']['batchsize']]))")
    where, port, quick, mine = json.loads(_run([str(installed["python"]), "-c", probe], work, env).stdout)
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(ROOT), where
    assert (port, quick, mine) == (20000, "light", 3)

    _run([str(bin_dir / "prnet-build-dataset"), "synth", "--layout", "aflw2000", "--count", "2", "--out", "synth"],
         work, env)
    images = sorted((work / "synth").glob("*.jpg"))
    assert len(images) == 2 and len(list((work / "synth").glob("*.mat"))) == 2

    from prnet_keras.model import build_model

    build_model("light", width=0.25).save(work / "tiny.keras")  # untrained: the command's path is under test
    synthetic_layout.save(work / "tiny.uv.npz")
    r = _run([str(bin_dir / "prnet-predict"), "--image", str(images[0]), "--model", "tiny.keras", "--detector", "none",
              "--output", "out", "--outputs", "obj,kpt,pose"], work, env)
    assert "1 image(s), 1 face(s)" in r.stdout
    assert (work / "out" / f"{images[0].stem}_0.obj").is_file()
    assert not [line for line in r.stderr.splitlines() if any(n in line for n in TF_NOISE)], r.stderr

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name in scripts:
        r = _run([str(bin_dir / name), "--help"], work, env, timeout=120)
        assert r.stdout.startswith(f"usage: {name}"), (name, r.stdout[:200])
