"""pyproject.toml is the one list of dependencies; requirements*.txt pin a set that agrees with it,
and the set-up installs the GPU flavour of TensorFlow when asked (GPU=1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
TEST_ONLY = {"pytest", "hypothesis", "pytest-timeout", "pytest-xvfb", "selenium", "jax", "ruff", "setuptools", "wheel"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _read_requirements(path: Path) -> list[Requirement]:
    reqs = []
    for line in path.read_text().splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            reqs.append(Requirement(line))
    return reqs


def _pyproject_requirements() -> dict[str, list[Requirement]]:
    """Requirements of pyproject by group: "core" and each extra (self-references left out)."""
    project = _pyproject()["project"]
    groups = {"core": [Requirement(r) for r in project["dependencies"]]}
    for extra, reqs in project["optional-dependencies"].items():
        groups[extra] = [r for r in map(Requirement, reqs) if canonicalize_name(r.name) != "prnet-keras"]
    return groups


def _key(req: Requirement) -> tuple[str, str]:
    return canonicalize_name(req.name), str(req.marker or "")


def test_requirements_agree_with_pyproject():
    groups = _pyproject_requirements()
    declared = {_key(r): r for name, reqs in groups.items() if name != "gpu" for r in reqs}
    pinned = {_key(r): r for r in _read_requirements(ROOT / "requirements.txt")}
    dev = {_key(r): r for r in _read_requirements(ROOT / "requirements-dev.txt")}

    # requirements.txt holds nothing pyproject does not name; together with the test-only list
    # it installs everything pyproject names (the extras included: the demo and CI use them all).
    assert set(pinned) - set(declared) == set(), "in requirements.txt but not in pyproject.toml"
    assert set(declared) - set(pinned) - set(dev) == set(), "in pyproject.toml but not in requirements*.txt"
    assert {name for name, _ in set(dev) - set(declared)} <= TEST_ONLY, "unexplained test-only requirements"

    for key, req in {**dev, **pinned}.items():
        if key not in declared:
            continue
        wanted = declared[key].specifier
        exact = [s.version for s in req.specifier if s.operator == "=="]
        if exact:  # a pin: it must lie inside pyproject's range
            assert wanted.contains(exact[0], prereleases=True), f"{req} outside pyproject's {declared[key]}"
        else:  # a range inside pyproject's: no version at a bound (or beyond all) that one allows and the other not
            probes = {s.version for s in (*wanted, *req.specifier)} | {"0", "99999"}
            outside = [v for v in probes if req.specifier.contains(v, prereleases=True)
                       and not wanted.contains(v, prereleases=True)]
            assert outside == [], f"{req} allows {outside}, outside pyproject's {declared[key]}"
        assert req.extras == declared[key].extras, req


def test_pins_that_matter_agree():
    """h5py below 3.15 (TensorFlow's bound), the mtcnn version whose internals we adjust, open3d."""
    core = {canonicalize_name(r.name): r for r in _pyproject_requirements()["core"]}
    pinned = {canonicalize_name(r.name): r for r in _read_requirements(ROOT / "requirements.txt")}
    assert not core["h5py"].specifier.contains("3.15.0") and not pinned["h5py"].specifier.contains("3.15.0")
    assert pinned["mtcnn"].specifier.contains("1.0.0") and core["mtcnn"].specifier.contains("1.0.0")
    assert not core["mtcnn"].specifier.contains("1.1.0")
    viz = {canonicalize_name(r.name): r for r in _pyproject_requirements()["viz"]}
    assert viz["open3d"].specifier.contains(next(iter(pinned["open3d"].specifier)).version)


def test_tensorflow_extras():
    groups = _pyproject_requirements()
    assert not any(canonicalize_name(r.name).startswith("tensorflow") for r in groups["core"])
    cpu = {str(r.marker): canonicalize_name(r.name) for r in groups["cpu"]}
    # aarch64 and macOS have no tensorflow-cpu wheel: they get tensorflow, which runs on the CPU there
    assert cpu == {'platform_machine == "x86_64"': "tensorflow-cpu", 'platform_machine != "x86_64"': "tensorflow"}
    (gpu,) = groups["gpu"]
    assert canonicalize_name(gpu.name) == "tensorflow" and gpu.extras == {"and-cuda"}
    everything = Requirement(_pyproject()["project"]["optional-dependencies"]["all"][0])
    assert everything.extras == set(groups) - {"core", "cpu", "gpu", "all"}
    # the pinned TensorFlow lines carry the same markers as the [cpu] extra
    pinned = {str(r.marker): canonicalize_name(r.name) for r in _read_requirements(ROOT / "requirements.txt")
              if canonicalize_name(r.name).startswith("tensorflow")}
    assert pinned == cpu


def test_imports_of_the_package_are_declared():
    """Every third-party module the package imports comes from a package pyproject names (core or extra)."""
    import ast

    provided_by = {"cv2": "opencv-python-headless", "PIL": "pillow", "multipart": "python-multipart",
                   "python_multipart": "python-multipart", "starlette": "fastapi", "pydantic": "fastapi",
                   "tensorflow": "tensorflow", "isal": "isal", "yaml": "pyyaml"}
    optional_elsewhere = {"dlib", "pptk", "jax", "torch"}  # documented optional installs, never defaults
    names = {canonicalize_name(r.name) for reqs in _pyproject_requirements().values() for r in reqs}
    stdlib = set(sys.stdlib_module_names)
    missing = {}
    for path in (ROOT / "prnet_keras").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                if top in stdlib or top == "prnet_keras" or top in optional_elsewhere:
                    continue
                if canonicalize_name(provided_by.get(top, top)) not in names:
                    missing.setdefault(top, str(path.relative_to(ROOT)))
    assert missing == {}, "imported but not in pyproject.toml"


@pytest.mark.parametrize("gpu", ["0", "1"])
def test_setup_installs_the_chosen_tensorflow(gpu, tmp_path):
    """scripts/setup.sh with a stand-in venv whose python records the pip calls (nothing is installed)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "pip.log"
    fake = venv / "bin" / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n')
    fake.chmod(0o755)
    fakebin = tmp_path / "fakebin"  # every system package counts as installed: no apt-get here
    fakebin.mkdir()
    (fakebin / "dpkg").write_text("#!/bin/sh\nexit 0\n")
    (fakebin / "dpkg").chmod(0o755)
    env = {**os.environ, "PATH": f"{fakebin}:{os.environ['PATH']}", "VENV": str(venv), "GPU": gpu,
           "PYTHON": sys.executable}
    setup = ["bash", str(ROOT / "scripts" / "setup.sh")]
    r = subprocess.run(setup, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    calls = log.read_text().splitlines()
    installs = [c for c in calls if c.startswith("-m pip install -q -r")]
    assert len(installs) == 1, calls
    if gpu == "1":
        gpu_file = venv / ".requirements-gpu.txt"
        assert f"-r {gpu_file} -r requirements-dev.txt" in installs[0]
        lines = gpu_file.read_text().splitlines()
        tf = [line for line in lines if line.startswith("tensorflow")]
        pinned = {canonicalize_name(r.name): r for r in _read_requirements(ROOT / "requirements.txt")}
        assert tf == [f"tensorflow[and-cuda]=={next(iter(pinned['tensorflow-cpu'].specifier)).version}"]
        lines_cpu = (ROOT / "requirements.txt").read_text().splitlines()
        rest = [line for line in lines_cpu if not line.startswith("tensorflow")]
        assert [line for line in lines if not line.startswith("tensorflow")] == rest
    else:
        assert "-r requirements.txt -r requirements-dev.txt" in installs[0]
    assert (venv / ".prnet-deps").read_text().strip().endswith(f"gpu={gpu}")
    # Switching flavour removes the other TensorFlow first (both wheels write the same files).
    other = "0" if gpu == "1" else "1"
    log.unlink()
    r = subprocess.run(setup, env={**env, "GPU": other}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    calls = log.read_text().splitlines()
    uninstall = [i for i, c in enumerate(calls) if c.startswith("-m pip uninstall") and "tensorflow-cpu" in c]
    install = [i for i, c in enumerate(calls) if c.startswith("-m pip install -q -r")]
    assert uninstall and install and uninstall[0] < install[0], calls
    # Unchanged settings: nothing to do.
    log.unlink()
    r = subprocess.run(setup, env={**env, "GPU": other}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not log.exists(), r.stdout + r.stderr


def test_readme_names_the_system_packages_the_setup_installs():
    """The README's apt-get line (for users without root) lists what scripts/setup.sh installs."""
    import re

    setup = (ROOT / "scripts" / "setup.sh").read_text()
    wanted = re.search(r'^SYSTEM_PACKAGES="([^"]+)"', setup, re.M).group(1).split()
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"sudo apt-get install -y ([^`]+)`", readme).group(1).split()
    assert sorted(shown) == sorted(wanted)
