"""``evaluate_model.py`` / ``prnet-evaluate``: NME metrics, CED curves and reports.

    evaluate_model.py --model run/best.keras --hdf5 val.hdf5 --outputdir eval/
    evaluate_model.py --model oracle --datadir AFLW2000-3D.zip --bfm BFM.mat --uv-data uv-data --outputdir eval_gt/
    evaluate_model.py --model preds/ --hdf5 val.hdf5 --evalidxs 0 1 --outputdir eval_preds/
    evaluate_model.py --model run/best.keras --hdf5 val.hdf5 --outputdir eval/ --compare eval_old/ --resume
    evaluate_model.py --compare eval_a/ eval_b/ --outputdir overlay/        (plots and table only)

--evalidxs: 0 sparse 2D, 1 sparse 3D, 2 dense 2D, 3 dense 3D, 4 reconstruction 2D, 5 reconstruction 3D.
Exit status: 0 done, 2 on a usage or input error, 130 when interrupted (rerun with --resume).

Configuration: the packaged defaults, then ``--config NAME|FILE``, then the flags; sections
``evaluate`` (metrics, normalisers, z alignment, ICP, yaw bins, CED range), ``inference``
(engine) and ``crop`` (the crops of --datadir ground truth).
"""

from __future__ import annotations

import argparse

from prnet_keras.cli import NO_PROGRESS_HELP, cli_parser, run_cli
from prnet_keras.errors import PRNetError


def build_parser() -> argparse.ArgumentParser:
    p = cli_parser("Evaluate a PRNet model (or predictions) with the literature's NME metrics; writes CSV, "
                   "summary.json, results.md and CED PNGs.")
    p.add_argument("--model", "--modeldir", dest="model", default=None,
                   help="model: .keras file, SavedModel folder, official checkpoint prefix, 'oracle' (the ground "
                        "truth itself), or a folder of predictions <name>.npy / <name>.mat")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--hdf5", nargs="+", default=None, help="validation HDF5 file(s) from build_dataset.py")
    src.add_argument("--datadir", default=None, help="AFLW2000-3D folder or .zip (ground truth rendered with --bfm)")
    p.add_argument("--bfm", default="synthetic",
                   help="morphable model for --datadir: synthetic | synthetic:bfm | BFM.mat | mean-only BFM folder")
    p.add_argument("--uv-data", default=None, help="UV layout (official uv-data folder or .npz); for --datadir "
                   "without a network, and for networks that lack their layout file")
    p.add_argument("--outputdir", default="evaluation", help="output folder")
    p.add_argument("--evalidxs", type=int, nargs="+", default=None, metavar="I",
                   help="metrics: 0 sparse 2D, 1 sparse 3D, 2 dense 2D, 3 dense 3D, 4 reconstruction 2D, "
                        "5 reconstruction 3D (default: all)")
    p.add_argument("--batchsize", type=int, default=16, help="images per network call")
    p.add_argument("--engine", default=None, choices=("auto", "keras", "openvino"),
                   help="what runs the network: auto (OpenVINO on CPU when installed, else Keras), keras, openvino "
                        "(default: config inference.engine)")
    p.add_argument("--shiftZ", default=None, choices=["min", "mean", "none"],
                   help="z alignment of each set before 3D metrics (default: min = both shifted to min z 0)")
    p.add_argument("--normalizer", default=None, choices=["bbox", "diagonal", "interocular"],
                   help="alignment (sparse/dense) normaliser: bbox = sqrt(w*h) of the GT 68-point box (default, "
                        "papers); diagonal = PRNet-keras (not comparable); interocular")
    p.add_argument("--recon-normalizer", default=None, choices=["bbox", "diagonal", "interocular"],
                   help="reconstruction normaliser (default: interocular, outer eye corners 36-45)")
    p.add_argument("--icp", default=None, choices=["open3d", "scipy", "simpleicp"],
                   help="ICP backend (default open3d, scipy when open3d is unavailable)")
    p.add_argument("--icp-method", default=None, choices=["point_to_plane", "point_to_point"],
                   help="ICP error metric, open3d and scipy backends (default: the configuration's "
                        "evaluate.icp_method, point_to_plane)")
    p.add_argument("--compare", nargs="+", default=[], metavar="RUN_DIR",
                   help="earlier output folders to overlay in the CED plots and the table")
    p.add_argument("--resume", action="store_true", help="skip images already in OUTPUTDIR/per_image.csv")
    p.add_argument("--limit", type=int, default=None, help="only the first N samples")
    p.add_argument("--gallery", type=int, default=12, help="worst images drawn in worst_<metric>.png (0: none)")
    p.add_argument("--config", default=None,
                   help="named configuration or JSON file (sections evaluate, inference, crop); flags override it")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    return p


def _print_summary(summary: dict) -> None:
    for name, s in summary["metrics"].items():
        bm, ma = s["balanced_mean"], s["mean_all"]

        def fmt(x: float | None) -> str:
            return "-" if x is None else f"{x:.3f}"

        print(f"{name:18s} mean {fmt(bm)} %  all {fmt(ma)} %  median {fmt(s['median'])} %  n={s['count']}")
    if summary.get("failed"):
        print(f"{len(summary['failed'])} image(s) not scored (listed in summary.json and per_image.csv)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _run(args), "interrupted: finished batches are kept; rerun with --resume to continue")


def _run(args: argparse.Namespace) -> int:
    from prnet_keras.config import load_config

    config = load_config(args.config)
    if args.model is None:
        if not args.compare:
            raise PRNetError("--model is required (or give only --compare RUN_DIR ... to overlay earlier runs)")
        from prnet_keras.evaluate.runner import compare_only

        compare_only(args.outputdir, args.compare)
        print(f"wrote comparison of {len(args.compare)} run(s) to {args.outputdir}")
        return 0
    if args.hdf5 is None and args.datadir is None:
        raise PRNetError("give --hdf5 FILE or --datadir AFLW2000-3D folder/zip")
    if args.limit is not None and args.limit < 1:
        raise PRNetError(f"--limit {args.limit}: expected >= 1")
    from prnet_keras.evaluate.runner import evaluate
    from prnet_keras.geometry import CropConfig

    ev = config["evaluate"]
    flags = {"evalidxs": args.evalidxs, "shiftZ": args.shiftZ, "normalizer": args.normalizer,
             "recon_normalizer": args.recon_normalizer, "icp": args.icp, "icp_method": args.icp_method}
    scoring = {k: ev[k] if v is None else v for k, v in flags.items()}
    summary = evaluate(
        args.model, hdf5=args.hdf5, datadir=args.datadir, outputdir=args.outputdir, batchsize=args.batchsize,
        compare=args.compare, resume=args.resume, bfm=args.bfm, uv_data=args.uv_data, limit=args.limit,
        gallery=args.gallery, progress=not args.no_progress, engine=args.engine or config["inference"]["engine"],
        yaw_bins=ev["yaw_bins"], ced_max=ev["ced_max"], crop_config=CropConfig.from_dict(config["crop"]), **scoring,
    )
    _print_summary(summary)
    print(f"results in {args.outputdir} (per_image.csv, summary.json, results.md, ced_*.png)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
