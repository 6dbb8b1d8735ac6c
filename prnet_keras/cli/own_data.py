"""``prnet-build-dataset fit | rotate | export-list``: your own training data.

    prnet-build-dataset fit --source photos --out fitted --bfm BFM.mat --landmarks pts --workers 2
    prnet-build-dataset fit --source photos --out fitted --landmarks model:run/best_nme.keras
    prnet-build-dataset rotate --source 300W_LP.zip --out 300W_LP_rotated --angles 15,30,45,60,-15,-30,-45,-60
    prnet-build-dataset export-list --hdf5 train.hdf5 --out train_list

Exit status as the build: 0 clean, 3 when samples were skipped (OUT/skipped.csv), 2 on a
usage or input error, 130 when interrupted (rerun with --resume to continue).
"""

from __future__ import annotations

import argparse

from prnet_keras.cli import NO_PROGRESS_HELP, cli_parser, command_name
from prnet_keras.errors import InputError
from prnet_keras.utils import usable_cores

RESUME_HELP = "continue an interrupted run (same settings)"
WORKERS_HELP = "worker processes (default: the usable cores, here %(default)s)"


def _job_flags(p: argparse.ArgumentParser, what: str) -> None:
    """The flags every folder job has: workers, limit, resume / overwrite, progress."""
    p.add_argument("--workers", type=int, default=usable_cores(), help=WORKERS_HELP)
    p.add_argument("--limit", type=int, default=None, help=f"only the first N {what} (sorted by name)")
    p.add_argument("--resume", action="store_true", help=RESUME_HELP)
    p.add_argument("--overwrite", action="store_true", help="start again, or write a finished folder again")
    p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


def _fit_parser() -> argparse.ArgumentParser:
    from prnet_keras.data.fit_folder import DEFAULT_MAX_RESIDUAL
    from prnet_keras.geometry.fitting import DEFAULT_REG_EXP, DEFAULT_REG_SHAPE

    name = command_name()
    p = cli_parser("Fit the morphable model to 68 landmarks of each image and write a 300W-LP-layout folder "
                   f"(image + .mat with Pose_Para, Shape_Para, Exp_Para, pt2d, roi), ready for `{name} --source OUT`.",
                   prog=f"{name} fit")
    p.add_argument("--source", required=True, help="folder or .zip of images (and their landmark files)")
    p.add_argument("--out", required=True, help="output folder (the same relative paths as the source)")
    p.add_argument("--bfm", default="synthetic",
                   help="morphable model: synthetic | synthetic:bfm | face3d BFM.mat | mean-only BFM folder")
    p.add_argument("--landmarks", default="pt2d",
                   help="pt2d | pt3d_68 (the .mat beside each image) | pts (iBUG .pts beside each image) | "
                        "npy ((68, 2|3) .npy beside each image) | model:PATH (a trained network's 68 points); "
                        "default: pt2d")
    p.add_argument("--detector", default="mtcnn", choices=["mtcnn", "opencv", "dlib"],
                   help="face detector for --landmarks model:PATH")
    p.add_argument("--uv-data", default=None, help="UV layout for --landmarks model:PATH when the model has none")
    p.add_argument("--contour", default="auto", choices=["auto", "on", "off"],
                   help="move far-side jaw landmarks along the jaw line (auto: on for pt2d and pts, the 300-W "
                        "style outlines)")
    p.add_argument("--n-shape", type=int, default=None,
                   help="identity components fitted (default: 60, at most the model's)")
    p.add_argument("--n-exp", type=int, default=None,
                   help="expression components fitted (default: 29, at most the model's)")
    p.add_argument("--iters", type=int, default=4, help="alternations of camera / expression / identity steps")
    p.add_argument("--reg-shape", type=float, default=DEFAULT_REG_SHAPE, help="identity prior weight")
    p.add_argument("--reg-exp", type=float, default=DEFAULT_REG_EXP, help="expression prior weight")
    p.add_argument("--max-residual", type=float, default=DEFAULT_MAX_RESIDUAL,
                   help="skip fits whose residual (mean distance of the 68 points over sqrt(w*h) of their box) "
                        "is above this fraction")
    _job_flags(p, "images")
    return p


def _rotate_parser() -> argparse.ArgumentParser:
    p = cli_parser("Rotate each sample (image + .mat) in-plane about the image centre and write "
                   "<name>_angle_<a>.jpg/.mat (Pose_Para, pt2d, pt3d_68 and roi rotated consistently).",
                   prog=f"{command_name()} rotate")
    p.add_argument("--source", required=True, help="300W-LP / AFLW2000-3D folder or .zip")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--angles", default="15,30,45,60,-15,-30,-45,-60",
                   help="degrees, positive = counter-clockwise; 0 copies the original")
    p.add_argument("--border", default="reflect", choices=["reflect", "constant"],
                   help="fill of the corners the rotation uncovers: mirrored image (default) or --border-value")
    p.add_argument("--border-value", type=int, default=0, help="grey level for --border constant")
    p.add_argument("--jpeg-quality", type=int, default=95, help="quality of the rotated JPEG images")
    p.add_argument("--layout", default="auto", choices=["auto", "300wlp", "aflw2000"],
                   help="dataset layout; auto tells them apart by their folders and .mat keys")
    _job_flags(p, "samples")
    return p


def _export_parser() -> argparse.ArgumentParser:
    p = cli_parser("Write a position-map HDF5 file as crops + .npy maps, a trainDataLabel.txt list and the "
                   "file's uv_layout.npz (the format of face3d's generation script and the PRNet training scripts "
                   "that read it).", prog=f"{command_name()} export-list")
    p.add_argument("--hdf5", required=True, help="position-map .hdf5 file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--absolute", action="store_true", help="absolute paths in the list (default: relative to it)")
    return p


def run_fit(argv: list[str]) -> int:
    a = _fit_parser().parse_args(argv)
    from prnet_keras.data.fit_folder import fit_folder

    landmarks = a.landmarks
    if landmarks.startswith("model:"):
        from prnet_keras.inference.landmarks import NetworkLandmarks

        path = landmarks.split(":", 1)[1]
        if not path:
            raise InputError("--landmarks model:PATH: the model path is empty")
        landmarks = NetworkLandmarks(path, detector=a.detector, uv_data=a.uv_data)
        landmarks.check()
    contour = {"auto": None, "on": True, "off": False}[a.contour]
    summary = fit_folder(a.source, a.out, bfm=a.bfm, landmarks=landmarks, workers=a.workers, n_shape=a.n_shape,
                         n_exp=a.n_exp, iters=a.iters, reg_shape=a.reg_shape, reg_exp=a.reg_exp, contour=contour,
                         max_residual=a.max_residual, limit=a.limit, resume=a.resume, overwrite=a.overwrite,
                         progress=not a.no_progress)
    print(summary.describe())
    return summary.exit_code


def run_rotate(argv: list[str]) -> int:
    a = _rotate_parser().parse_args(argv)
    from prnet_keras.data.rotate import rotate_folder

    summary = rotate_folder(a.source, a.out, angles=a.angles, border=a.border, border_value=a.border_value,
                            jpeg_quality=a.jpeg_quality, layout=a.layout, workers=a.workers, limit=a.limit,
                            resume=a.resume, overwrite=a.overwrite, progress=not a.no_progress)
    print(summary.describe())
    return summary.exit_code


def run_export_list(argv: list[str]) -> int:
    a = _export_parser().parse_args(argv)
    from prnet_keras.data.listfmt import export_list

    path, n = export_list(a.hdf5, a.out, absolute=a.absolute)
    print(f"wrote {n} samples and {path}")
    return 0


SUBCOMMANDS = {"fit": run_fit, "rotate": run_rotate, "export-list": run_export_list}
