"""train_model.py / prnet-train: train or resume PRNet on position-map HDF5 files.

Thin: flags -> configuration dict -> ``prnet_keras.train.trainer.train``. Flags left out
keep the value of ``--config`` (or of the packaged defaults). Flag names follow PRNet-keras
where it has them (--hdf5dir, --epochs, --batchsize, --learningrate, --lossfunct, --model,
--start_epoch, --dropevery, --dropfactor).
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Sequence

from prnet_keras.cli import cli_parser, run_cli


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # bare strings need no quotes
    return key.strip().replace("-", "_"), value


def build_parser() -> argparse.ArgumentParser:
    p = cli_parser("Train (or resume) PRNet on position-map HDF5 files. Flags left out keep the value of --config "
                   "(or of the packaged defaults).")
    d = p.add_argument_group("data")
    d.add_argument("--hdf5dir", help="folder holding train.hdf5 (and val.hdf5)")
    d.add_argument("--train", nargs="+", metavar="FILE", help="training HDF5 file(s) instead of --hdf5dir")
    d.add_argument("--val", nargs="+", metavar="FILE", help="validation HDF5 file(s)")
    d.add_argument("--workers", type=int, help="batch-making workers (default 1)")
    d.add_argument("--processes", action="store_true",
                   help="workers are processes decoding into shared memory instead of threads")
    d.add_argument("--augment-on-device", action="store_true",
                   help="the CPU only decodes; augmentation runs on the accelerator inside the train step")
    d.add_argument("--steps-per-epoch", type=int, help="cap on batches per epoch (quick runs)")
    d.add_argument("--validation-steps", type=int, help="cap on validation batches")
    d.add_argument("--sample-weights", choices=["yaw_balanced"], help="per-sample loss weights")
    a = p.add_argument_group("augmentation (defaults: the configuration's section 'augment')")
    a.add_argument("--no-augment", action="store_true", help="switch every augmentation off")
    a.add_argument("--augment", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="override one augment option, e.g. rotation=false, scale_range=[0.9,1.1] (repeatable)")
    m = p.add_argument_group("model and optimisation")
    m.add_argument("--model", help="architecture (resfcn256, light) or a .keras checkpoint to continue from")
    m.add_argument("--model-option", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="build_model option, e.g. width=0.5 (repeatable)")
    m.add_argument("--bn-momentum", type=float, help="BatchNorm moving-statistics momentum for every BN layer "
                   "(model default 0.99; 0.9 for runs of a few hundred steps)")
    m.add_argument("--init", help="initial weights: official checkpoint prefix, .keras or .weights.h5")
    m.add_argument("--epochs", type=int, help="epochs to train (default: configuration train.epochs)")
    m.add_argument("--start_epoch", "--start-epoch", dest="start_epoch", type=int, help="first epoch of a fresh run")
    m.add_argument("--batchsize", type=int,
                   help="samples per step, over all devices (default: configuration train.batchsize)")
    m.add_argument("--learningrate", type=float,
                   help="initial learning rate (default: configuration train.learningrate)")
    m.add_argument("--lr-schedule", choices=["step", "cosine"],
                   help="step: multiply by --dropfactor every --dropevery epochs; cosine: decay to 0 over the run")
    m.add_argument("--dropevery", type=int, help="step schedule: epochs between drops (default 5)")
    m.add_argument("--dropfactor", type=float, help="step schedule: factor per drop (default 0.5)")
    m.add_argument("--lossfunct", help="weighted_mse (default), weighted_rmse, mse, weighted_l1")
    m.add_argument("--seed", type=int, help="seed of weights, shuffling and augmentation")
    m.add_argument("--mixed-precision", choices=["bf16", "fp16"],
                   help="compute in bfloat16 / float16, keep float32 weights")
    m.add_argument("--jit-compile", action="store_true", help="XLA-compile the train step")
    m.add_argument("--no-distribute", action="store_true", help="use one device even when several are visible")
    o = p.add_argument_group("output")
    o.add_argument("--output", help="run folder (default runs/<model>)")
    o.add_argument("--keep-checkpoints", type=int, help="epoch checkpoints to keep (default 3)")
    o.add_argument("--tensorboard", action="store_true", help="also write TensorBoard logs")
    o.add_argument("--resume", action="store_true", help="require an existing run in --output and continue it")
    o.add_argument("--force", action="store_true", help="continue a run even though arguments differ")
    o.add_argument("--quiet", action="store_true", help="no per-epoch progress output")
    p.add_argument("--config", help="configuration: a JSON file, or a NAME looked up as ./configure/NAME.json, then "
                   "among the packaged ones (quickstart)")
    return p


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Only the flags that were given, as a configuration override dict."""
    t: dict[str, Any] = {}
    direct = {"hdf5dir": "hdf5dir", "train": "train_files", "val": "val_files", "workers": "workers",
              "steps_per_epoch": "steps_per_epoch", "validation_steps": "validation_steps",
              "sample_weights": "sample_weights", "model": "model", "init": "init", "epochs": "epochs",
              "start_epoch": "start_epoch", "batchsize": "batchsize", "learningrate": "learningrate",
              "lr_schedule": "lr_schedule", "dropevery": "dropevery", "dropfactor": "dropfactor",
              "lossfunct": "lossfunct", "seed": "seed", "mixed_precision": "mixed_precision",
              "output": "output", "keep_checkpoints": "keep_checkpoints",
              "bn_momentum": "bn_momentum"}
    for flag, key in direct.items():
        value = getattr(args, flag)
        if value is not None:
            t[key] = value
    for flag, key, value in (("processes", "use_multiprocessing", True), ("no_augment", "augment", False),
                             ("augment_on_device", "augment_on_device", True),
                             ("jit_compile", "jit_compile", True), ("no_distribute", "distribute", "off"),
                             ("tensorboard", "tensorboard", True), ("resume", "resume", True),
                             ("force", "force", True), ("quiet", "verbose", 0)):
        if getattr(args, flag):
            t[key] = value
    if args.model_option:
        t["model_options"] = dict(args.model_option)
    out: dict[str, Any] = {"train": t}
    if args.augment:
        out["augment"] = dict(args.augment)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _run(args), "error: interrupted; run the same command again to resume from the last "
                                       "completed epoch")


def _run(args: argparse.Namespace) -> int:
    from prnet_keras.config import load_config
    from prnet_keras.train.trainer import train

    config = load_config(args.config, overrides_from_args(args))
    run_dir = train(config)
    print(f"run folder: {run_dir}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
