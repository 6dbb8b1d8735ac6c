"""``build_dataset.py`` / ``prnet-build-dataset``: 300W-LP / AFLW2000-3D -> position-map HDF5.

    build_dataset.py --source 300W_LP.zip --bfm BFM.mat --out train.hdf5 --workers 2
    build_dataset.py --source AFLW2000 --buildmode val --out val.hdf5
    build_dataset.py merge shard0.hdf5 shard1.hdf5 --out train.hdf5
    build_dataset.py synth --layout 300wlp --count 200 --out synth/300W_LP
    build_dataset.py fit | rotate | export-list ...   (your own data: see prnet_keras.cli.own_data)

Exit status: 0 clean, 3 when samples were skipped (listed in OUT.skipped.csv), 2 on a
usage or input error, 130 when interrupted (rerun with --resume to continue).

Configuration: the packaged defaults, then ``--config NAME|FILE``, then the flags; sections
``data`` (store, crop_format, compression, jpeg_quality, commit_every) and ``crop`` (the
keypoint-box scale and the training jitter, recorded in the file).
"""

from __future__ import annotations

import argparse
import sys

from prnet_keras.cli import NO_PROGRESS_HELP, cli_parser, command_name, run_cli
from prnet_keras.errors import PRNetError
from prnet_keras.utils import usable_cores


def _build_parser() -> argparse.ArgumentParser:
    name = command_name()
    p = cli_parser(f"Build position-map HDF5 files (subcommands: merge, synth, fit, rotate, export-list; see "
                   f"`{name} merge -h`, `{name} synth -h`, `{name} fit -h`).")
    p.add_argument("--source", required=True, help="dataset folder or its original .zip, or a trainDataLabel.txt "
                   "list of jpg + npy pairs (or a folder holding one; needs --uv-data)")
    p.add_argument("--layout", default="auto", choices=["auto", "300wlp", "aflw2000"],
                   help="dataset layout; auto tells them apart by their folders and .mat keys")
    p.add_argument("--bfm", default="synthetic",
                   help="morphable model: synthetic | synthetic:bfm | face3d BFM.mat | mean-only BFM folder")
    p.add_argument("--uv-data", default=None, help="official PRNet uv-data folder or a saved layout .npz "
                   "(default: derived from the model)")
    p.add_argument("--buildmode", default="train", choices=["train", "val"],
                   help="train: seeded crop perturbation; val: exact keypoint box")
    p.add_argument("--out", "--hdf5dir", dest="out", required=True, help="output .hdf5 file")
    p.add_argument("--store", default=None, choices=["crops", "raw"],
                   help="crops: 256x256 crop + float16 position map; raw: original image + fit parameters "
                        "(default: the configuration's data.store, crops)")
    p.add_argument("--crop-format", default=None, choices=["jpeg", "raw"],
                   help="how crops are stored (crops store; default: the configuration's data.crop_format, jpeg)")
    p.add_argument("--jpeg-quality", type=int, default=None,
                   help="JPEG quality of stored crops, 1-100 (default: the configuration's data.jpeg_quality, 95)")
    p.add_argument("--compression", default=None, choices=["gzip", "none"],
                   help="image-sized chunks (maps, raw crops): gzip (compact, default) or none "
                   "(~2x the bytes; training reads skip the inflation, ~2x faster generator)")
    p.add_argument("--workers", type=int, default=usable_cores(),
                   help="worker processes (default: the usable cores, here %(default)s)")
    p.add_argument("--shard", default=None, help="I/N: build shard I of N (join them with `merge`)")
    p.add_argument("--limit", type=int, default=None, help="only the first N samples (sorted by name)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train-mode crop perturbation")
    p.add_argument("--commit-every", type=int, default=None,
                   help="samples per committed chunk, the unit --resume keeps "
                        "(default: the configuration's data.commit_every, 64)")
    p.add_argument("--config", default=None,
                   help="named configuration or JSON file (sections data and crop); flags override it")
    p.add_argument("--resume", action="store_true", help="continue an interrupted build (OUT.partial)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT and any unfinished build")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    p.add_argument("--rotate", default=None, metavar="ANGLES",
                   help="read each sample once per angle, rotated in-plane with its fit (degrees, e.g. 0,15,-15; "
                        "0 = the original: list it to keep the originals)")
    return p


def _merge_parser() -> argparse.ArgumentParser:
    p = cli_parser("Join --shard I/N outputs into one file.", prog=f"{command_name()} merge")
    p.add_argument("inputs", nargs="+", help="shard .hdf5 files (any order)")
    p.add_argument("--out", "--hdf5dir", dest="out", required=True, help="output .hdf5 file")
    p.add_argument("--overwrite", action="store_true", help="replace OUT when it exists")
    return p


def _synth_parser() -> argparse.ArgumentParser:
    p = cli_parser("Write a synthetic dataset in the 300W-LP or AFLW2000-3D layout.", prog=f"{command_name()} synth")
    p.add_argument("--layout", required=True, choices=["300wlp", "aflw2000"], help="folder layout and .mat keys")
    p.add_argument("--count", type=int, required=True, help="images to write (300wlp: half are _Flip twins)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of faces, poses and pictures (same seed, same files)")
    p.add_argument("--bfm", default="synthetic",
                   help="morphable model the faces are drawn from: synthetic | synthetic:bfm | face3d BFM.mat | "
                        "mean-only BFM folder")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    return p


def _report(summary) -> int:
    print(summary.describe())
    if summary.stage_seconds:
        split = ", ".join(f"{k} {v:.2f}" for k, v in summary.stage_seconds.items())
        print(f"stages (CPU seconds, all workers): {split}")
    return summary.exit_code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_cli(lambda: _run(argv), "interrupted: committed chunks are kept; rerun with --resume to continue")


def _run(argv: list[str]) -> int:
    from prnet_keras.cli.own_data import SUBCOMMANDS

    if argv[:1] and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:])
    if argv[:1] == ["merge"]:
        a = _merge_parser().parse_args(argv[1:])
        from prnet_keras.data.build import merge_hdf5

        return _report(merge_hdf5(a.inputs, a.out, overwrite=a.overwrite))
    if argv[:1] == ["synth"]:
        a = _synth_parser().parse_args(argv[1:])
        if a.count < 1:
            raise PRNetError(f"--count {a.count}: expected >= 1")
        from prnet_keras.data.synth import generate_dataset

        paths = generate_dataset(a.out, a.layout, a.count, a.seed, a.bfm, a.workers, progress=not a.no_progress)
        print(f"wrote {len(paths)} images to {a.out}")
        return 0
    a = _build_parser().parse_args(argv)
    from prnet_keras.config import load_config
    from prnet_keras.data.build import build_hdf5
    from prnet_keras.data.listfmt import build_list_hdf5, find_list
    from prnet_keras.geometry import CropConfig

    config = load_config(a.config)
    data = {**config["data"], **{k: v for k, v in (("store", a.store), ("crop_format", a.crop_format),
                                                   ("compression", a.compression), ("jpeg_quality", a.jpeg_quality),
                                                   ("commit_every", a.commit_every)) if v is not None}}
    if find_list(a.source) is not None:  # the seed's trainDataLabel.txt of jpg + npy pairs
        return _report(build_list_hdf5(
            a.source, a.out, uv_data=a.uv_data, buildmode=a.buildmode, workers=a.workers, shard=a.shard,
            limit=a.limit, resume=a.resume, overwrite=a.overwrite, progress=not a.no_progress, rotate=a.rotate,
            **data))
    summary = build_hdf5(
        a.source, a.out, layout=a.layout, bfm=a.bfm, uv_data=a.uv_data, buildmode=a.buildmode, workers=a.workers,
        shard=a.shard, limit=a.limit, seed=a.seed, resume=a.resume, overwrite=a.overwrite,
        crop_config=CropConfig.from_dict(config["crop"]), progress=not a.no_progress, rotate=a.rotate, **data,
    )
    return _report(summary)


if __name__ == "__main__":
    raise SystemExit(main())
