"""Thin command-line front ends: argparse, then one call into the library.

Every CLI builds its parser with :func:`cli_parser` (one way to show defaults; the usage line
names the command as it was typed: ``prnet-build-dataset`` or ``build_dataset.py``) and runs
its body through :func:`run_cli` (user errors as one ``error:`` line, TensorFlow's start-up
lines filtered, a missing optional package named with the extra that brings it).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
import warnings
from typing import Any, Callable, Iterator

from prnet_keras.errors import PRNetError, PRNetWarning

_show_warning = warnings.showwarning


def _one_line_warnings(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                       line: str | None = None) -> None:
    """Our warnings as one ``warning: ...`` line on stderr; others as Python shows them."""
    if issubclass(category, PRNetWarning):
        print(f"warning: {message}", file=file or sys.stderr, flush=True)
    else:
        _show_warning(message, category, filename, lineno, file, line)


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help when it has a real default and the help
    does not already say what the default is (e.g. "default: the configuration's ...")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is False or default == []
                or default is argparse.SUPPRESS or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


class OneLineErrorParser(argparse.ArgumentParser):
    """A flag error is one ``error: ... (see --help)`` line and exit 2, not argparse's usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


NO_PROGRESS_HELP = "no progress bar (there is none either when stderr is not a terminal)"


def cli_parser(description: str, prog: str | None = None, parser_class: type = argparse.ArgumentParser,
               **kwargs: Any) -> argparse.ArgumentParser:
    """An argument parser of our CLIs; ``prog`` None names the command as it was invoked."""
    return parser_class(prog=prog, description=description, formatter_class=HelpFormatter, **kwargs)


def command_name() -> str:
    """How the user typed this command: ``prnet-build-dataset``, ``build_dataset.py``, ..."""
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "prnet"


# ---- TensorFlow's start-up lines ---------------------------------------------------------------
# TF_CPP_MIN_LOG_LEVEL=2 silences TensorFlow's C++ INFO/WARNING logging, but a few lines are
# written while its libraries load, before that setting is read ("All log messages before
# absl::InitializeLog() ...", "oneDNN custom operations are on ..."). They come from native code
# on file descriptor 2, so the first ``import tensorflow`` runs with fd 2 captured and the
# captured text is written back without those lines.
TENSORFLOW_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\)|oneDNN custom operations are on"
    r"|cpu_feature_guard\.cc|To enable the following instructions:|rebuild TensorFlow with the appropriate compiler"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|computation_placer\.cc.*already registered"
)


@contextlib.contextmanager
def filtered_stderr_fd(noise: re.Pattern) -> Iterator[None]:
    """Capture file descriptor 2 (native code's stderr too) and replay it without ``noise`` lines."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not noise.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """Runs the wrapped loader's ``exec_module`` inside :func:`filtered_stderr_fd`."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec):  # noqa: ANN001, ANN201
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:  # noqa: ANN001
        try:
            with filtered_stderr_fd(TENSORFLOW_NOISE):
                self._loader.exec_module(module)
        finally:  # the module keeps its real loader (resources, reloads)
            module.__loader__ = self._loader
            if module.__spec__ is not None:
                module.__spec__.loader = self._loader

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """On the first ``import tensorflow`` (by anyone: keras, mtcnn, ...), wraps its loader."""

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201
        if name != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow_startup() -> None:
    """Keep TensorFlow's start-up chatter out of a CLI's output (call before TensorFlow loads)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())


# ---- missing packages ------------------------------------------------------------------------------
TENSORFLOW_HINT = 'pip install "prnet-keras[cpu]" (or "prnet-keras[gpu]" for NVIDIA GPUs)'
EXTRA_OF_MODULE = {"fastapi": "server", "uvicorn": "server", "multipart": "server", "python_multipart": "server",
                   "starlette": "server", "httpx": "server", "open3d": "viz", "onnx": "onnx", "tf2onnx": "onnx",
                   "onnxruntime": "onnx", "simpleicp": "icp", "nncf": "int8"}


def missing_package_message(exc: ModuleNotFoundError) -> str:
    """One line naming the missing package and how to install it."""
    top = (exc.name or "").split(".")[0]
    if top == "tensorflow":
        return f"this command needs TensorFlow, which is not installed: {TENSORFLOW_HINT}"
    if top in EXTRA_OF_MODULE:
        return f"this command needs {top}, which is not installed: pip install \"prnet-keras[{EXTRA_OF_MODULE[top]}]\""
    return f"a required package is missing ({exc}); reinstall prnet-keras (pip install prnet-keras)"


def run_parsed(parser: argparse.ArgumentParser, argv: Any, body: Callable[[argparse.Namespace], int],
               interrupted: Callable[[argparse.Namespace], str]) -> int:
    """Parse ``argv`` and :func:`run_cli` ``body(args)``, returning instead of exiting: --help
    gives 0 and a flag error (already printed, e.g. by :class:`OneLineErrorParser`) its code.
    ``interrupted(args)`` is the Ctrl-C message (it may name an output the flags chose)."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return run_cli(lambda: body(args), interrupted(args))


def run_cli(body: Callable[[], int], interrupted: str) -> int:
    """Run a CLI body; a user error becomes one ``error: ...`` line (exit 2), Ctrl-C exits 130;
    a :class:`~prnet_keras.errors.PRNetWarning` is one ``warning: ...`` line.

    ``interrupted`` tells the user what survived the interruption and how to continue.
    """
    quiet_tensorflow_startup()
    warnings.showwarning = _one_line_warnings
    try:
        return body()
    except PRNetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in ("prnet_keras", ""):
            raise  # our own code: a bug, not an install problem
        print(f"error: {missing_package_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
