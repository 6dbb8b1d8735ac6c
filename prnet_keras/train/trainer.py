"""Training loop: ``train(config) -> run dir`` with checkpoints, resume and curves.

``config`` is a configuration dict as an entry point resolves it (``prnet_keras.config.load_config``)
or any subset of one: training options live in section ``train`` (the keys of
:data:`TRAIN_DEFAULTS`, which are the packaged defaults), augmentation in ``augment``
(:class:`~prnet_keras.train.augment.AugmentConfig`). Other sections are kept as given.

Resume: a run folder holding ``run_state.json`` is continued from its last completed
epoch when the resolved configuration equals the recorded one, except for the keys in
:data:`FREE_KEYS`; otherwise it is refused unless ``force`` is set. Restored: weights,
optimizer state (moments, step count), learning-rate schedule position, the random state
of every layer that draws during training (dropout seed generators), history and best
values; the data of every epoch is a function of (seed, epoch) alone (see
:mod:`.batches`), so a resumed run trains on exactly the batches an uninterrupted one
would and, on the same machine and software, reproduces it bit for bit.

Several processes (``TF_CONFIG``, a Slurm step, ``KERAS_DISTRIBUTION_*``): process 0 (the
chief) alone reads and writes the run folder; the others learn the start epoch and the
weights from it (:mod:`.distribute`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import keras

from prnet_keras.errors import InputError, ModelFileError
from prnet_keras.train.augment import AugmentConfig
from prnet_keras.train.callbacks import RunRecorder, restore_rng_state, start_point
from prnet_keras.train.dataset import AugmentedDataset, fit_inputs, yaw_balanced_weights
from prnet_keras.train.device_augment import DeviceAugmentedModel
from prnet_keras.train.distribute import DistributionPlan, plan_distribution
from prnet_keras.utils import to_jsonable, write_json

# Section "train": every option and its default (the packaged defaults spell the same values).
TRAIN_DEFAULTS: dict[str, Any] = {
    "model": "resfcn256",     # architecture (resfcn256, light) or a .keras checkpoint to continue from
    "epochs": 100,
    "batchsize": 16,
    "learningrate": 0.0001,
    "lr_schedule": "step",    # "step" | "cosine"
    "dropevery": 5,           # step schedule: epochs between drops
    "dropfactor": 0.5,        # step schedule: factor per drop
    "lossfunct": "weighted_mse",
    "keep_checkpoints": 3,    # epoch checkpoints kept
    "seed": 0,
    "hdf5dir": None,          # folder with train.hdf5 (and val.hdf5)
    "train_files": None,      # or explicit HDF5 path(s)
    "val_files": None,
    "output": None,           # run folder; default runs/<model>
    "model_options": {},      # build_model(**options), e.g. {"width": 0.25}
    "init": None,             # official checkpoint prefix, .keras or .weights.h5 to start from
    "bn_momentum": None,      # override every BatchNormalization momentum (short runs: 0.9)
    "start_epoch": 0,         # first epoch of a fresh run (schedule position)
    "steps_per_epoch": None,  # cap on batches per epoch (quick runs)
    "validation_steps": None,
    "augment": True,          # master switch; per-augmentation switches in section "augment"
    "sample_weights": None,   # None | "yaw_balanced"
    "workers": 1,
    "use_multiprocessing": False,  # workers are processes decoding into shared buffers (else threads)
    "max_queue_size": None,   # batches made ahead (default 2 per worker)
    "augment_on_device": False,  # the CPU decodes; augmentation runs in the train step (keras.ops)
    "record_batches": None,   # debug: folder; each process appends the sample indices it trains on
    "mixed_precision": None,  # None | "bf16" | "fp16"
    "jit_compile": False,
    "distribute": "auto",     # "auto" | "off"
    "tensorboard": False,
    "evaluate_initial": True,  # validate the starting weights first (history row "epoch 0")
    "resume": False,
    "force": False,
    "verbose": "auto",
}
# Keys that may differ between a run and its resumption (they do not change the result).
FREE_KEYS = {"workers", "use_multiprocessing", "max_queue_size", "resume", "force", "verbose", "tensorboard",
             "evaluate_initial", "record_batches"}
SCHEDULES = ("step", "cosine")
SKIPPED_FILE = "skipped_samples.csv"  # samples left out of training (unreadable, non-finite), with why
PRECISIONS = {None: "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def _log(msg: str) -> None:
    print(f"[train] {msg}", file=sys.stderr, flush=True)


# ---- configuration --------------------------------------------------------------------------
def _positive(t: dict, key: str, kind: type) -> None:
    try:
        value = kind(t[key])
    except (TypeError, ValueError):
        raise InputError(f"train.{key}: expected a positive {kind.__name__}, got {t[key]!r}") from None
    if not value > 0 or (kind is float and not math.isfinite(value)):
        raise InputError(f"train.{key}: expected a positive {kind.__name__}, got {t[key]!r}")
    t[key] = value


def _paths(value: Any) -> list[str] | None:
    if value in (None, "", []):
        return None
    items = [value] if isinstance(value, (str, os.PathLike)) else list(value)
    return [str(Path(p).expanduser().resolve()) for p in items]


def resolve_config(config: dict | None) -> dict[str, Any]:
    """:data:`TRAIN_DEFAULTS` and the augmentation defaults + ``config``, validated,
    dataset/output paths made absolute.

    Raises :class:`InputError` naming the offending key.
    """
    cfg = dict(config or {})
    given = dict(cfg.get("train") or {})
    given.pop("_doc", None)
    unknown = sorted(set(given) - set(TRAIN_DEFAULTS))
    if unknown:
        raise InputError(f"train: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(TRAIN_DEFAULTS))}")
    t = {**copy.deepcopy(TRAIN_DEFAULTS), **given}
    for key in ("epochs", "batchsize", "dropevery", "keep_checkpoints", "workers"):
        _positive(t, key, int)
    for key in ("learningrate", "dropfactor"):
        _positive(t, key, float)
    for key in ("steps_per_epoch", "validation_steps", "max_queue_size"):
        if t[key] is not None:
            _positive(t, key, int)
    t["seed"], t["start_epoch"] = int(t["seed"]), int(t["start_epoch"])
    if t["bn_momentum"] is not None and not (isinstance(t["bn_momentum"], (int, float))
                                             and 0.0 <= t["bn_momentum"] < 1.0):
        raise InputError(f"train.bn_momentum: expected a value in [0, 1), got {t['bn_momentum']!r}")
    if t["lr_schedule"] not in SCHEDULES:
        raise InputError(f"train.lr_schedule: expected one of {SCHEDULES}, got {t['lr_schedule']!r}")
    if t["mixed_precision"] not in PRECISIONS:
        raise InputError(f"train.mixed_precision: expected bf16, fp16 or none, got {t['mixed_precision']!r}")
    if t["sample_weights"] not in (None, "yaw_balanced"):
        raise InputError(f"train.sample_weights: expected yaw_balanced or none, got {t['sample_weights']!r}")
    if not isinstance(t["model_options"], dict):
        raise InputError("train.model_options: expected a JSON object of build_model options")
    if t["hdf5dir"]:
        d = Path(t["hdf5dir"]).expanduser().resolve()
        if not d.is_dir():
            raise InputError(f"--hdf5dir {d}: folder not found")
        t["hdf5dir"] = str(d)
        t["train_files"] = t["train_files"] or [str(d / "train.hdf5")]
        if t["val_files"] is None and (d / "val.hdf5").exists():
            t["val_files"] = [str(d / "val.hdf5")]
    t["train_files"], t["val_files"] = _paths(t["train_files"]), _paths(t["val_files"])
    if not t["train_files"]:
        raise InputError("training data: give --hdf5dir (with train.hdf5) or --train FILE [FILE ...]")
    model = str(t["model"])
    if model.endswith(".keras") or os.sep in model:
        model = str(Path(model).expanduser().resolve())
        if not Path(model).is_file():
            raise ModelFileError(f"--model {model}: checkpoint not found")
    t["model"] = model
    if t["init"]:
        t["init"] = str(Path(t["init"]).expanduser().resolve())
    if t["record_batches"]:
        t["record_batches"] = str(Path(t["record_batches"]).expanduser().resolve())
    t["output"] = str(Path(t["output"] or Path("runs") / Path(model).stem).expanduser().resolve())
    cfg["train"] = t
    cfg["augment"] = AugmentConfig.from_dict(cfg.get("augment")).to_dict()
    return to_jsonable(cfg)


def config_differences(old: dict, new: dict) -> list[str]:
    """``section.key: old -> new`` for every training-relevant key that differs."""
    diffs = []
    for sec in ("train", "augment"):
        a, b = old.get(sec, {}), new.get(sec, {})
        for key in sorted(set(a) | set(b)):
            if sec == "train" and key in FREE_KEYS:
                continue
            if a.get(key) != b.get(key):
                diffs.append(f"{sec}.{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return diffs


def learning_rate_at(epoch: int, t: dict) -> float:
    """Learning rate of (0-based) ``epoch``: step halving every ``dropevery`` or cosine to 0."""
    lr0 = float(t["learningrate"])
    if t["lr_schedule"] == "step":
        return lr0 * float(t["dropfactor"]) ** (epoch // int(t["dropevery"]))
    return lr0 * 0.5 * (1.0 + math.cos(math.pi * min(epoch, t["epochs"]) / t["epochs"]))


# ---- pieces -----------------------------------------------------------------------------------
@contextlib.contextmanager
def precision_policy(mode: str | None) -> Iterator[None]:
    """Set the global Keras dtype policy for the run and restore the previous one after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISIONS[mode])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _read_column(paths: list[str], key: str) -> Any:
    """One small per-sample field of the HDF5 files, concatenated (no image decoding)."""
    import numpy as np

    from prnet_keras.data.hdf5 import open_checked

    parts = []
    for p in paths:
        with open_checked(p) as f:
            if key not in f:
                raise InputError(f"{p}: no field {key!r}")
            parts.append(f[key][:])
    return np.concatenate(parts)


def make_datasets(cfg: dict, epoch: int, replicas: int = 1,
                  write_skips: bool = True) -> tuple[AugmentedDataset, AugmentedDataset | None]:
    """Training and validation datasets; ``replicas``: devices sharing each global batch
    (validation's last partial batch is cut to a multiple of it, so every replica gets an
    equal share); ``write_skips``: skipped samples get a row in the run's
    ``skipped_samples.csv`` (the chief's; other processes only print them)."""
    t = cfg["train"]
    io_opts = dict(workers=t["workers"], use_multiprocessing=bool(t["use_multiprocessing"]),
                   max_queue_size=t["max_queue_size"])
    augment = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["augment"].items()})
    if not t["augment"]:
        augment = AugmentConfig.disabled()
    skip_log = Path(t["output"]) / SKIPPED_FILE if write_skips else None
    train_ds = AugmentedDataset(t["train_files"], batch_size=t["batchsize"], mode="train", augment=augment,
                                seed=t["seed"], epoch=epoch, max_batches=t["steps_per_epoch"], skip_log=skip_log,
                                on_device=bool(t["augment_on_device"]), **io_opts)
    if t["sample_weights"] == "yaw_balanced":
        train_ds.sample_weight = yaw_balanced_weights(_read_column(t["train_files"], "yaw"))
    val_ds = None
    if t["val_files"]:
        val_ds = AugmentedDataset(t["val_files"], batch_size=t["batchsize"], mode="val",
                                  max_batches=t["validation_steps"], skip_log=skip_log, replicas=replicas,
                                  **io_opts)
        if val_ds.layout is not None and train_ds.layout is not None and val_ds.layout != train_ds.layout:
            raise InputError(f"{t['val_files'][0]}: UV layout differs from the training file's")
    return train_ds, val_ds


def build_network(t: dict) -> keras.Model:
    """The network named by ``train.model`` (architecture name, or a ``.keras`` file to continue)."""
    model = t["model"]
    if model.endswith(".keras"):
        import prnet_keras.model  # noqa: F401  (registers custom objects)

        try:
            return keras.saving.load_model(model, compile=False)
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"--model {model}: cannot load ({exc})") from None
    from prnet_keras.model import build_model

    return build_model(model, **t["model_options"])


def set_bn_momentum(model: keras.Model, momentum: float | None) -> int:
    """Set the moving-statistics momentum of every BatchNormalization layer; returns how many.

    Keras' 0.99 needs a few hundred steps before inference-mode statistics catch up with
    the weights, so validation lags far behind on short runs; 0.9 settles in ~20 steps.
    """
    if momentum is None:
        return 0
    def walk(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
        yield layer
        for child in getattr(layer, "layers", []):
            yield from walk(child)

    layers = [layer for layer in walk(model) if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.momentum = float(momentum)
    return len(layers)


def initialise_weights(model: keras.Model, path: str) -> None:
    """Start weights from an official TF1 checkpoint prefix, a ``.keras`` or a ``.weights.h5``."""
    if path.endswith(".keras") or path.endswith(".weights.h5"):
        if not Path(path).is_file():
            raise ModelFileError(f"--init {path}: file not found")
        try:
            model.load_weights(path)
        except ValueError as exc:
            raise ModelFileError(f"--init {path}: weights do not fit the model ({exc})") from None
        return
    from prnet_keras.model.checkpoint import load_official_checkpoint

    load_official_checkpoint(model, path)


def compile_network(model: keras.Model, t: dict, layout: Any, optimizer: Any = None) -> None:
    """Compile with the configured loss and landmark-NME metric (a new Adam unless ``optimizer``).

    ``train.jit_compile`` is TensorFlow's XLA switch; JAX always compiles the step (its
    ``jit_compile=False`` would run it op by op: very slow, and with several devices the
    per-op collectives can deadlock XLA's CPU runtime).
    """
    from prnet_keras.model import LandmarkNME, get_loss

    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(learning_rate=float(t["learningrate"])),
        loss=get_loss(t["lossfunct"], weight_mask=layout.weight_mask, resolution=layout.resolution),
        metrics=[LandmarkNME(layout.uv_kpt_ind, resolution=layout.resolution, name="nme")],
        jit_compile=bool(t["jit_compile"]) if keras.backend.backend() == "tensorflow" else "auto",
    )


def restore_checkpoint(model: keras.Model, path: Path) -> None:
    """Load weights *and* optimizer state (the optimizer must be built first)."""
    model.optimizer.build(model.trainable_variables)
    try:
        model.load_weights(path)
    except ValueError as exc:
        raise ModelFileError(f"{path}: checkpoint does not fit the configured model ({exc})") from None


def initial_validation(model: keras.Model, val_input: Any, epoch: int, steps: int | None = None) -> dict[str, Any]:
    """Validation of the starting weights, as a history row (baseline for "it learns")."""
    logs = model.evaluate(val_input, steps=steps, return_dict=True, verbose=0)
    return {"epoch": epoch, **{f"val_{k}": float(v) for k, v in logs.items()}}


# ---- entry ------------------------------------------------------------------------------------
def _check_resumable(run_dir: Path, cfg: dict, state: dict) -> None:
    import json

    recorded_path = run_dir / "config.json"
    recorded = json.loads(recorded_path.read_text()) if recorded_path.exists() else {}
    diffs = config_differences(recorded, cfg)
    if diffs and not cfg["train"]["force"]:
        raise InputError(
            f"{run_dir}: holds a run ({state['completed_epochs']} epochs done) started with different arguments: "
            + "; ".join(diffs) + ". Use --force to continue it with the new ones, or another --output")
    if diffs:
        _log("--force: continuing with changed arguments: " + "; ".join(diffs))


def train(config: dict) -> Path:
    """Train (or resume) a PRNet model; returns the run folder.

    Writes into ``train.output``: ``epoch_NNNN.keras`` (last ``keep_checkpoints``),
    ``best_eval_loss.keras``, ``best_nme.keras``, ``run_state.json``, ``training_log.csv``,
    ``skipped_samples.csv`` (only when a sample had to be left out),
    ``loss.png``, ``nme.png``, ``config.json`` (resolved configuration), ``uv_layout.npz``
    and, with ``tensorboard``, ``tensorboard/``. With several processes only the chief
    writes; the others write nothing.
    """
    cfg = resolve_config(config)
    t = cfg["train"]
    plan = plan_distribution(t["distribute"])  # first: MultiWorkerMirroredStrategy configures TensorFlow
    plan.check_batch_size(int(t["batchsize"]))
    run_dir = Path(t["output"])
    with plan.peer_failures():
        initial_epoch, state, resuming = start_point(plan, run_dir, int(t["start_epoch"]), bool(t["resume"]),
                                                     lambda state: _check_resumable(run_dir, cfg, state))
    if initial_epoch >= t["epochs"]:
        _log(f"{run_dir}: all {t['epochs']} epochs already done")
        return run_dir
    keras.utils.set_random_seed(t["seed"])  # initial weights; the data draws its own seeds
    # the data files are opened and checked before anything is written: a bad file is one
    # error line and leaves no run folder behind
    train_ds, val_ds = make_datasets(cfg, initial_epoch, plan.replicas, write_skips=plan.is_chief)
    try:
        with plan.peer_failures(), plan.activate():
            return _train(cfg, plan, run_dir, initial_epoch, state, resuming, train_ds, val_ds)
    finally:
        train_ds.close()
        if val_ds is not None:
            val_ds.close()


def _train(cfg: dict, plan: DistributionPlan, run_dir: Path, initial_epoch: int, state: dict | None,
           resuming: bool, train_ds: AugmentedDataset, val_ds: AugmentedDataset | None) -> Path:
    t = cfg["train"]
    layout = train_ds.layout
    if layout is None:
        raise InputError(f"{t['train_files'][0]}: the dataset carries no UV layout")
    if plan.is_chief:
        run_dir.mkdir(parents=True, exist_ok=True)
        layout.save(run_dir / "uv_layout.npz")
        write_json(run_dir / "config.json", cfg)
    _log(f"{'resuming after epoch ' + str(initial_epoch) if resuming else 'starting at epoch ' + str(initial_epoch)}"
         f" of {t['epochs']}: {train_ds.n_samples} training samples, {len(train_ds)} batches/epoch"
         f"{', ' + str(val_ds.n_samples) + ' validation samples' if val_ds else ''}; {plan.detail}"
         + ("" if plan.is_chief else
            f"; process {plan.worker_index} of {plan.workers}, the chief writes the run folder"))
    with precision_policy(t["mixed_precision"]):
        model, network = _build_and_restore(cfg, plan, layout, run_dir, state, resuming)
        # fit runs outside the strategy scope: a variable made there (Keras' saving makes
        # throw-away ones) would be a collective op on the chief alone and hang the others.
        train_input, val_input = fit_inputs(plan, train_ds, val_ds, initial_epoch, int(t["epochs"]),
                                            t["record_batches"])
        if not resuming and val_input is not None and t["evaluate_initial"]:
            row = initial_validation(model, val_input, initial_epoch, len(val_ds))
            if plan.is_chief:
                _log("initial validation: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"))
            state = {"history": [row]}
        callbacks = [keras.callbacks.LearningRateScheduler(lambda epoch: learning_rate_at(epoch, t)),
                     keras.callbacks.TerminateOnNaN()]
        if plan.is_chief:
            callbacks.insert(1, RunRecorder(
                run_dir, keep=t["keep_checkpoints"], state=state, network=network, writing=plan.chief_only,
                monitor_loss="val_loss" if val_ds else "loss", monitor_nme="val_nme" if val_ds else "nme",
                run_info={"start_epoch": initial_epoch, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                          "distribution": plan.to_dict()}))
            if t["tensorboard"]:
                callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard")))
        verbose = t["verbose"] if t["verbose"] != "auto" else (1 if sys.stdout.isatty() else 2)
        # shuffle=False: Keras would reorder the batches of an epoch with Python's global random
        # state, which a resumed process does not share; the data is shuffled per epoch already.
        model.fit(train_input, validation_data=val_input, epochs=t["epochs"], initial_epoch=initial_epoch,
                  steps_per_epoch=len(train_ds), validation_steps=len(val_ds) if val_ds else None,
                  callbacks=callbacks, verbose=verbose if plan.is_chief else 0, shuffle=False)
    return run_dir


def _build_and_restore(cfg: dict, plan: DistributionPlan, layout: Any, run_dir: Path, state: dict | None,
                       resuming: bool) -> tuple[keras.Model, keras.Model]:
    """(model to fit, network to save): built and compiled under the strategy, weights and
    optimizer state from the checkpoint (chief) or ``--init``, then the chief's everywhere."""
    t = cfg["train"]
    with plan.scope():  # every variable is made here, by every process (collectively)
        network = build_network(t)
        set_bn_momentum(network, t["bn_momentum"])
        compile_network(network, t, layout)
        network.optimizer.build(network.trainable_variables)
        model = network
        if t["augment_on_device"]:
            model = DeviceAugmentedModel(network)
            compile_network(model, t, layout, optimizer=network.optimizer)
    # Loading only assigns (Keras makes throw-away objects meanwhile: outside the scope).
    if plan.is_chief and not resuming and t["init"]:
        initialise_weights(network, t["init"])
    if state:
        restore_checkpoint(network, run_dir / state["checkpoint"])
        restore_rng_state(network, state.get("rng_state"))
    plan.broadcast_variables(list(network.variables) + list(network.optimizer.variables))
    return model, network
