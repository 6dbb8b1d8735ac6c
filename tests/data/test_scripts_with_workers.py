"""The commands as users type them, with worker processes: the top-level scripts
(``python build_dataset.py ...``), the console scripts and ``python -m prnet_keras.cli.X``.

spawn workers re-import the main module; a script that runs its command at import would run
it again in every worker (the build then hangs). Each command runs in its own process group
under a timeout, so a hang fails the test and leaves nothing behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# What TensorFlow writes while it loads unless our CLIs keep it out (see prnet_keras.cli).
TF_NOISE = ("All log messages before absl::InitializeLog()", "oneDNN custom operations", "cpu_feature_guard",
            "rebuild TensorFlow with the appropriate compiler flags")


def _env() -> dict[str, str]:
    """The user's environment: no TF_CPP_MIN_LOG_LEVEL (the CLIs must quieten TensorFlow themselves)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONPATH")}
    env["MPLBACKEND"] = "Agg"
    return env


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``cmd`` from the repository root; on timeout kill its whole process group and fail."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"hung (killed after {timeout} s): {' '.join(cmd)}\n{out}\n{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def console_script(name: str) -> list[str]:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"console script {name} is not installed beside {sys.executable}")
    return [str(path)]


def build_args(source: Path, out: Path) -> list[str]:
    return ["--source", str(source), "--out", str(out), "--buildmode", "train", "--workers", "2",
            "--commit-every", "2", "--seed", "5"]


@pytest.fixture(scope="module")
def built(synthetic_300wlp_dir, tmp_path_factory) -> Path:
    """``python build_dataset.py ... --workers 2``: 16 synthetic samples in 8 chunks, uninterrupted."""
    out = tmp_path_factory.mktemp("scripts") / "train.hdf5"
    r = run([sys.executable, "build_dataset.py", *build_args(synthetic_300wlp_dir, out)])
    assert r.returncode == 0, r.stderr
    assert "wrote 16 samples" in r.stdout
    return out


def test_kill_9_then_resume_equals_uninterrupted_build(built, synthetic_300wlp_dir, tmp_path, datagen):
    """kill -9 of the console script's build (workers included), --resume through ``python -m``."""
    out = tmp_path / "train.hdf5"
    partial = out.with_name(out.name + ".partial")
    proc = subprocess.Popen([*console_script("prnet-build-dataset"), *build_args(synthetic_300wlp_dir, out)], cwd=ROOT,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and not any(partial.glob("part-*.h5")) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the command and its spawn workers
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the build ended before it could be killed: {err.decode()}"
    assert not out.exists() and partial.is_dir()

    r = run([sys.executable, "-m", "prnet_keras.cli.build_dataset", *build_args(synthetic_300wlp_dir, out), "--resume"])
    assert r.returncode == 0, r.stderr
    assert "wrote 16 samples" in r.stdout and not partial.exists()
    datagen.assert_same_hdf5(out, built)


def test_console_script_build_equals_script_build(built, synthetic_300wlp_dir, tmp_path, datagen):
    out = tmp_path / "train.hdf5"
    r = run([*console_script("prnet-build-dataset"), *build_args(synthetic_300wlp_dir, out), "--no-progress"])
    assert r.returncode == 0, r.stderr
    datagen.assert_same_hdf5(out, built)


def test_train_predict_evaluate_client_scripts(built, synthetic_aflw_dir, tmp_path):
    """train_model.py with two data-loading processes, then load_model.py with the model it wrote
    (no TensorFlow start-up lines on stderr), evaluate_model.py and load_model_client.py."""
    run_dir = tmp_path / "run"
    r = run([sys.executable, "train_model.py", "--train", str(built), "--workers", "2", "--processes", "--model",
             "light", "--model-option", "width=0.25", "--epochs", "1", "--steps-per-epoch", "2", "--batchsize", "4",
             "--output", str(run_dir)])
    assert r.returncode == 0, r.stderr
    models = sorted(run_dir.glob("epoch_*.keras"))
    assert models, r.stdout
    assert not [line for line in r.stderr.splitlines() if any(n in line for n in TF_NOISE)]

    image = sorted(synthetic_aflw_dir.glob("*.jpg"))[0]
    r = run([sys.executable, "load_model.py", "--image", str(image), "--model", str(models[0]), "--detector", "none",
             "--output", str(tmp_path / "pred"), "--outputs", "obj,kpt"])
    assert r.returncode == 0, r.stderr
    assert "1 image(s), 1 face(s)" in r.stdout
    noise = [line for line in r.stderr.splitlines() if any(n in line for n in TF_NOISE)]
    assert noise == [], "TensorFlow start-up lines reached the user"
    assert (tmp_path / "pred" / f"{image.stem}_0.obj").is_file()

    r = run([sys.executable, "evaluate_model.py", "--model", "oracle", "--hdf5", str(built), "--outputdir",
             str(tmp_path / "eval"), "--evalidxs", "0", "1", "--no-progress"])
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "eval" / "summary.json").is_file()

    # no server on this port: one error line, exit 2 (and no re-run of the command in any worker)
    r = run([sys.executable, "load_model_client.py", "--image", str(image), "--serverurl", "http://127.0.0.1:9",
             "--timeout", "5"], timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.splitlines()) == 1, r.stderr


@pytest.mark.parametrize("script, console", [
    ("build_dataset.py", "prnet-build-dataset"), ("train_model.py", "prnet-train"),
    ("evaluate_model.py", "prnet-evaluate"), ("load_model.py", "prnet-predict"),
    ("load_model_client.py", "prnet-client"),
])
def test_usage_names_the_command_as_typed(script, console):
    for cmd, name in (([sys.executable, script], script), (console_script(console), console)):
        r = run([*cmd, "--help"], timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"usage: {name} "), r.stdout[:200]
    if script == "build_dataset.py":
        for sub in ("synth", "merge", "fit", "rotate", "export-list"):
            r = run([*console_script(console), sub, "--help"], timeout=120)
            assert r.returncode == 0 and r.stdout.startswith(f"usage: {console} {sub} "), r.stdout[:200]
