"""What every command shares: help for every flag, defaults shown once, progress bars that
appear on a terminal only, one error line when TensorFlow (or an extra) is missing, and no
TensorFlow start-up lines."""

from __future__ import annotations

import argparse
import importlib
import inspect
import io
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import prnet_keras.cli

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]


def _cli_modules() -> list:
    names = [m.name for m in pkgutil.iter_modules(prnet_keras.cli.__path__)]
    return [importlib.import_module(f"prnet_keras.cli.{name}") for name in names]


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """Every parser the CLI modules build (functions named ``*parser`` taking no arguments), and their subparsers."""
    found: dict[str, argparse.ArgumentParser] = {}
    for module in _cli_modules():
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ != module.__name__ or not name.endswith("parser"):
                continue
            if any(p.default is p.empty for p in inspect.signature(fn).parameters.values()):
                continue
            todo = [(f"{module.__name__}.{name}", fn())]
            while todo:
                key, parser = todo.pop()
                found[key] = parser
                for action in parser._actions:
                    if isinstance(action, argparse._SubParsersAction):
                        todo += [(f"{key} {sub}", p) for sub, p in action.choices.items()]
    return found


def test_every_console_script_has_its_parser_checked():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    modules = {key.rsplit(".", 1)[0] for key in _parsers()}
    for name, target in scripts.items():
        assert target.split(":")[0] in modules, f"{name}: no *parser() function found in {target}"


def test_every_flag_has_help_and_one_default():
    missing, doubled = [], []
    for key, parser in _parsers().items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            flag = "/".join(action.option_strings) or action.dest
            if not (action.help or "").strip():
                missing.append(f"{key}: {flag}")
                continue
            text = formatter._expand_help(action) if action.help else ""
            if text.count("default") > 1:
                doubled.append(f"{key}: {flag}: {text}")
        parser.format_help()  # renders (a stray % in a help text would raise here)
    assert missing == [], "flags without help text"
    assert doubled == [], "defaults shown twice"


def test_serve_help_shows_each_default_once(capsys):
    from prnet_keras.cli.serve import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: configuration server.port, 20000)" in text and "(default: None)" not in text
    assert "(default: 8)" in text  # --max-batch: a plain default, added by the formatter


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal, flag, shown", [(True, [], True), (True, ["--no-progress"], False),
                                                   (False, [], False)])
def test_synth_progress_on_a_terminal_only(terminal, flag, shown, tmp_path, monkeypatch, capsys):
    from prnet_keras.cli.build_dataset import main

    fake = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", fake)
    assert main(["synth", "--layout", "aflw2000", "--count", "2", "--out", str(tmp_path / "s"), *flag]) == 0
    assert ("2/2" in fake.getvalue()) is shown, fake.getvalue()
    assert "wrote 2 images" in capsys.readouterr().out


@pytest.mark.parametrize("terminal", [True, False])
def test_folder_prediction_progress(terminal, tmp_path, monkeypatch):
    """process_images (prnet-predict --input-dir): a bar over the images, skip messages above it."""
    import cv2
    import numpy as np

    from prnet_keras.cli.load_model import process_images

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((32, 32, 3), 80 * i, np.uint8))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")

    class NoFaces:
        def predict_batch(self, images, boxes=None, detector=None):
            return [[] for _ in images]

    fake = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", fake)
    paths = sorted(folder.iterdir())
    logged = []
    summary = process_images(paths, NoFaces(), tmp_path / "out", ["obj"], folder, batch=2, progress=True,
                             log=logged.append)
    assert summary["images"] == 3 and len(summary["skipped"]) == 4
    err = fake.getvalue()
    if terminal:
        assert "4/4" in err and "skip: " in err and not logged  # messages go through the bar
    else:
        assert err == "" and len(logged) == 4


_BLOCK_TENSORFLOW = """
import runpy, sys
class Missing:  # behaves as an environment without TensorFlow
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")
sys.meta_path.insert(0, Missing())
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__")
"""


def test_without_tensorflow_one_error_line_naming_the_extras(tmp_path, synthetic_aflw_dir):
    """A bare ``pip install prnet-keras`` (no [cpu] / [gpu]): data commands work, TensorFlow ones
    stop with one line that says what to install."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    model = tmp_path / "m.keras"
    model.write_bytes(b"PK")  # the model must exist for prnet-predict to reach the model loading
    image = sorted(synthetic_aflw_dir.glob("*.jpg"))[0]
    for argv in (["prnet_keras.cli.train_model", "--train", str(tmp_path / "x.hdf5"), "--output", str(tmp_path / "r")],
                 ["prnet_keras.cli.load_model", "--image", str(image), "--model", str(model), "--detector", "none",
                  "--output", str(tmp_path / "o")]):
        r = subprocess.run([sys.executable, "-c", _BLOCK_TENSORFLOW, *argv], env=env, capture_output=True, text=True,
                           timeout=180)
        assert r.returncode == 2, r.stderr
        assert r.stderr.splitlines() == [
            'error: this command needs TensorFlow, which is not installed: pip install "prnet-keras[cpu]" '
            '(or "prnet-keras[gpu]" for NVIDIA GPUs)'], r.stderr
    r = subprocess.run([sys.executable, "-c", _BLOCK_TENSORFLOW, "prnet_keras.cli.build_dataset", "synth", "--layout",
                        "aflw2000", "--count", "1", "--out", str(tmp_path / "s")], env=env, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0 and "wrote 1 images" in r.stdout, r.stderr


def test_missing_extra_is_named():
    from prnet_keras.cli import missing_package_message

    message = missing_package_message(ModuleNotFoundError("x", name="fastapi"))
    assert message.endswith('pip install "prnet-keras[server]"')
    assert missing_package_message(ModuleNotFoundError("x", name="open3d.visualization")).endswith(
        'pip install "prnet-keras[viz]"')


def test_startup_filter_drops_tensorflow_lines_only(capfd):
    """TensorFlow's loading lines (written by native code to fd 2) go; anything else written
    meanwhile is kept, in order. (The CLIs' real stderr is checked in the script and wheel tests.)"""
    from prnet_keras.cli import TENSORFLOW_NOISE, filtered_stderr_fd

    with filtered_stderr_fd(TENSORFLOW_NOISE):
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"first kept\n")
        os.write(2, b"I0000 00:00:1 12 port.cc:153] oneDNN custom operations are on. You may see ...\n")
        os.write(2, b"I0000 00:00:1 12 cpu_feature_guard.cc:227] This TensorFlow binary is optimized ...\n")
        os.write(2, b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
                    b"with the appropriate compiler flags.\n")
        os.write(2, b"second kept\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err.splitlines() == ["first kept", "second kept", "after"]
