"""Run-folder bookkeeping: atomic checkpoints, best models, state JSON, CSV log, curves.

Per completed epoch, in this order (so a kill -9 at any point leaves a resumable folder):
(the random state of seed generators, which ``.keras`` files lack, goes into the state JSON)
1. ``epoch_NNNN.keras`` (full model with optimizer state) written atomically;
2. ``best_eval_loss.keras`` / ``best_nme.keras`` refreshed when the monitored value improved;
3. ``run_state.json`` (atomic) naming that checkpoint: the commit point of the epoch;
4. ``training_log.csv`` and ``loss.png`` / ``nme.png``, derived from the state's history;
5. older epoch checkpoints beyond the last K removed (never the one the state names).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

from prnet_keras.errors import InputError, PRNetError
from prnet_keras.model.export import save_keras_atomic
from prnet_keras.utils import atomic_path, atomic_write_text, write_json

STATE_FILE = "run_state.json"
STATE_FORMAT = "prnet-keras/train-state"
CHECKPOINT_GLOB = "epoch_*.keras"


def checkpoint_name(epoch: int) -> str:
    """File name of the checkpoint after ``epoch`` completed epochs (1-based)."""
    return f"epoch_{epoch:04d}.keras"


def copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)  # copies contents only: tmp keeps atomic_path's file mode


def remove_stale_temporaries(run_dir: Path) -> None:
    """Temporaries of a save that was killed half-way."""
    for p in list(run_dir.glob(".tmp-*.keras")) + list(run_dir.glob(".*.tmp")):
        p.unlink(missing_ok=True)


def read_state(run_dir: Path) -> dict[str, Any] | None:
    """The run's state JSON, or None when the folder holds no completed epoch."""
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: unreadable training state ({exc})") from None
    if state.get("format") != STATE_FORMAT:
        raise InputError(f"{path}: not a prnet-keras training state")
    if not (Path(run_dir) / state["checkpoint"]).exists():
        raise InputError(f"{path}: names checkpoint {state['checkpoint']}, which is missing")
    return state


def write_log_csv(path: Path, history: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buf.getvalue())


def plot_curves(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """loss.png and nme.png: training and validation curves per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    for name, keys, ylabel, log in (("loss.png", ("loss", "val_loss"), "loss", True),
                                    ("nme.png", ("nme", "val_nme"), "landmark NME (%)", False)):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for key in keys:
            ys = [row.get(key) for row in history]
            pts = [(e, y) for e, y in zip(epochs, ys) if isinstance(y, (int, float)) and math.isfinite(y)]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if log and any(row.get("loss", 0) and row.get("loss", 0) > 0 for row in history):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        fig.tight_layout()
        with atomic_path(run_dir / name) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)


def rng_state(model: keras.Model) -> list[list[Any]]:
    """[path, state values] of every seed generator of ``model`` (dropout and other layers
    that draw during training). Keras' ``.keras`` files do not keep them."""
    return [[v.path, [int(x) for x in keras.ops.convert_to_numpy(v.value).ravel()]]
            for v in model.variables if v.path.endswith("seed_generator_state")]


def restore_rng_state(model: keras.Model, saved: list[list[Any]] | None) -> None:
    """Put back the seed-generator states :func:`rng_state` recorded, in order (same architecture;
    the paths are informative only: Keras numbers them per process)."""
    if not saved:
        return
    variables = [v for v in model.variables if v.path.endswith("seed_generator_state")]
    sizes = [int(np.prod(v.shape)) for v in variables]
    if sizes != [len(values) for _, values in saved]:
        raise InputError(f"run_state.json: {len(saved)} recorded random-generator states do not fit this model's "
                         f"{len(variables)}")
    for v, (_, values) in zip(variables, saved):
        v.assign(keras.ops.reshape(keras.ops.convert_to_tensor(values, dtype=v.dtype), v.shape))


class RunRecorder(keras.callbacks.Callback):
    """Writes the run folder after every epoch (see module docstring).

    ``state`` is the previous state when resuming (history, best values carry over).
    ``network``: the model to save when Keras trains a wrapper of it (on-accelerator
    augmentation); it must carry the training optimizer (compiled with it). ``writing``:
    context for the writes (the distribution plan's ``chief_only``).
    """

    def __init__(self, run_dir: Path, keep: int = 3, state: dict[str, Any] | None = None,
                 monitor_loss: str = "val_loss", monitor_nme: str = "val_nme", run_info: dict | None = None,
                 network: keras.Model | None = None,
                 writing: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> None:
        super().__init__()
        self.network, self.writing = network, writing
        self.run_dir, self.keep = Path(run_dir), max(1, int(keep))
        self.monitor_loss, self.monitor_nme = monitor_loss, monitor_nme
        state = state or {}
        self.history: list[dict[str, Any]] = list(state.get("history", []))
        self.best: dict[str, Any] = dict(state.get("best", {}))
        self.runs: list[dict[str, Any]] = list(state.get("runs", [])) + ([run_info] if run_info else [])
        self._t0 = time.time()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._t0 = time.time()

    def _improved(self, key: str, value: Any) -> bool:
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        old = self.best.get(key, {}).get("value")
        return old is None or value < old

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        with self.writing():
            self._record(epoch + 1, logs)

    def _record(self, done: int, logs: dict | None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        ckpt = self.run_dir / checkpoint_name(done)
        network = self.network or self.model
        save_keras_atomic(network, ckpt)
        for key, target in ((self.monitor_loss, "best_eval_loss.keras"), (self.monitor_nme, "best_nme.keras")):
            if self._improved(key, logs.get(key)):
                copy_atomic(ckpt, self.run_dir / target)
                self.best[key] = {"value": logs[key], "epoch": done, "file": target}
        lr = logs.pop("learning_rate", None)
        if lr is None:
            lr = float(keras.ops.convert_to_numpy(network.optimizer.learning_rate))
        row = {"epoch": done, "learning_rate": lr, **logs, "epoch_time_s": round(time.time() - self._t0, 3)}
        self.history = [h for h in self.history if h["epoch"] < done] + [row]
        write_json(self.run_dir / STATE_FILE, {
            "format": STATE_FORMAT, "version": 1, "completed_epochs": done, "checkpoint": ckpt.name,
            "optimizer_iterations": int(keras.ops.convert_to_numpy(network.optimizer.iterations)),
            "rng_state": rng_state(network),
            "best": self.best, "history": self.history, "runs": self.runs,
        })
        write_log_csv(self.run_dir / "training_log.csv", self.history)
        plot_curves(self.run_dir, self.history)
        self._prune(keep_name=ckpt.name)

    def _prune(self, keep_name: str) -> None:
        ckpts = sorted(self.run_dir.glob(CHECKPOINT_GLOB))
        for p in ckpts[:-self.keep]:
            if p.name != keep_name:
                p.unlink(missing_ok=True)


def start_point(plan: Any, run_dir: Path, start_epoch: int, resume: bool,
                check: Callable[[dict[str, Any]], None]) -> tuple[int, dict[str, Any] | None, bool]:
    """(first epoch, the run state or None, whether a state exists), agreed by all processes.

    The chief (``plan``: a :class:`~prnet_keras.train.distribute.DistributionPlan`) alone
    reads the run folder and calls ``check(state)`` (raises when the run may not be
    continued); the others receive its decision, so a refusal stops every process.
    ``resume``: a run must exist; ``start_epoch``: first epoch of a fresh run.
    """
    state, error, first = None, None, int(start_epoch)
    if plan.is_chief:
        try:
            if run_dir.is_dir():
                remove_stale_temporaries(run_dir)
            state = read_state(run_dir)
            if resume and state is None:
                raise InputError(f"--resume: {run_dir} holds no completed epoch to resume from")
            if state is not None:
                check(state)
                first = int(state["completed_epochs"])
        except PRNetError as exc:
            error = exc
    decision = plan.broadcast([np.array([error is not None, first, state is not None], np.float64)])[0]
    if error is not None:
        raise error
    if decision[0]:
        raise InputError("the chief (process 0) refused to start this run; its output says why")
    return int(decision[1]), state, bool(decision[2])
