"""prnet-predict / load_model.py: reconstruct faces from images and write meshes, landmarks, pose, ...

    python load_model.py --image face.jpg --model run/model.keras --output out/
    python load_model.py --input-dir photos/ --model run/model.keras --outputs obj,kpt,pose,figure
    python load_model.py --video talk.mp4 --model run/model.keras --output out/ --overlay landmarks,pose
    python load_model.py --webcam --model run/model.keras

Exit status: 0 when every image gave at least one face, 1 when some images were skipped
(unreadable, no face: one line each on stderr), 2 on a usage / model error (one line).

Configuration: the packaged defaults, then ``--config NAME|FILE``, then the flags; sections
``inference`` (detector, min_confidence, min_face_size, engine, texture_size), ``crop`` and
``data.max_image_pixels``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from prnet_keras.cli import NO_PROGRESS_HELP, OneLineErrorParser, cli_parser, run_parsed
from prnet_keras.data.images import MAX_IMAGE_PIXELS
from prnet_keras.errors import InputError, PRNetError

DEFAULT_OUTPUTS = "obj,kpt,pose"


def build_parser() -> argparse.ArgumentParser:
    from prnet_keras.inference.writers import OUTPUTS

    p = cli_parser("PRNet face reconstruction from images, videos and cameras.", parser_class=OneLineErrorParser)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", type=Path, help="one image file")
    src.add_argument("--input-dir", type=Path, help="folder searched recursively for .jpg/.jpeg/.png (any case)")
    src.add_argument("--video", type=Path, help="a video file: writes an annotated video and frames.csv/.jsonl")
    src.add_argument("--webcam", type=int, nargs="?", const=0, metavar="INDEX",
                     help="a camera (default 0): live window, q quits, s saves the current meshes")
    p.add_argument("--model", type=Path, required=True,
                   help=".keras file, SavedModel folder or official checkpoint prefix")
    p.add_argument("--uv-data", type=Path, default=None,
                   help="UV layout: official uv-data folder or .npz (default: found beside the model)")
    p.add_argument("--output", type=Path, default=Path("output"), help="output folder")
    p.add_argument("--outputs", default=None,
                   help=f"comma list of {','.join(OUTPUTS)} (default: {DEFAULT_OUTPUTS} for images; none for "
                        "video, where they are written every --every frames)")
    p.add_argument("--detector", choices=("mtcnn", "opencv", "dlib", "none"), default=None,
                   help="face detector; 'none' uses the whole image (or --bbox) as the face box "
                        "(default: the configuration's inference.detector, mtcnn)")
    p.add_argument("--bbox", default=None, help="face box 'left,top,right,bottom' in pixels (skips detection)")
    p.add_argument("--min-confidence", type=float, default=None,
                   help="MTCNN score threshold (default: the configuration's inference.min_confidence, 0.9)")
    p.add_argument("--min-face-size", type=int, default=None,
                   help="smallest face searched, in pixels, MTCNN and OpenCV; 20 finds smaller faces, ~1.5x slower "
                        "(default: the configuration's inference.min_face_size, 40)")
    p.add_argument("--engine", default=None, choices=("auto", "keras", "openvino", "openvino-int8"),
                   help="what runs the network: auto (OpenVINO on CPU when installed, its int8 model when one was "
                        "made and passed the accuracy check; else Keras), keras, openvino (fp32), openvino-int8 "
                        "(quantised on first use, see --calibration) (default: the configuration's "
                        "inference.engine, auto)")
    p.add_argument("--calibration", type=Path, default=None,
                   help="openvino-int8: HDF5 dataset (built by prnet-build-dataset) whose crops calibrate and "
                        "validate the quantisation (default: synthetic faces)")
    p.add_argument("--batch", type=int, default=8, help="images per network batch (all their faces together)")
    p.add_argument("--max-image-pixels", type=int, default=None,
                   help="larger images (width x height, read from the header) are skipped without decoding "
                        "(default: the configuration's data.max_image_pixels, 50000000)")
    p.add_argument("--texture-size", type=int, default=None,
                   help="UV texture size in pixels (default: the configuration's inference.texture_size, 256)")
    p.add_argument("--visibility-mask", action="store_true", help="black out hidden parts of the texture")
    p.add_argument("--mat-type", choices=("normal", "dotnet"), default="normal", help=".mat array layout")
    p.add_argument("--show", nargs="?", const="mesh", choices=("mesh", "points"), default=None,
                   help="open each face in prnet-view (a process of its own) as a mesh, or as points with "
                        "'--show points'; without a display, write headless mesh views (PNG)")
    p.add_argument("--cpu", action="store_true", help="hide GPUs (CUDA_VISIBLE_DEVICES=-1)")
    from prnet_keras.cli.video import add_video_arguments

    add_video_arguments(p)
    p.add_argument("--no-progress", action="store_true", help=f"{NO_PROGRESS_HELP} (--input-dir, --video)")
    p.add_argument("--config", default=None,
                   help="named configuration or JSON file (sections inference, crop and data.max_image_pixels); "
                        "flags override it")
    return p


INFERENCE_FLAGS = ("detector", "min_confidence", "min_face_size", "engine", "texture_size")


def resolve_options(args: argparse.Namespace, flags: Sequence[str] = INFERENCE_FLAGS) -> tuple[dict[str, Any], Any]:
    """(options, CropConfig): the configuration (defaults, then --config) with the given flags on top.

    The options are the ``inference`` section (``flags``: the ones this command has) plus
    ``max_image_pixels`` (``data.max_image_pixels``: one limit for every image reader; a
    ``--max-image-pixels`` flag when the command has one). prnet-texture resolves its options here too."""
    from prnet_keras.config import load_config
    from prnet_keras.geometry import CropConfig

    config = load_config(args.config)
    inference = dict(config["inference"])
    for key in flags:
        if getattr(args, key) is not None:
            inference[key] = getattr(args, key)
    inference["max_image_pixels"] = _first(getattr(args, "max_image_pixels", None),
                                           config["data"]["max_image_pixels"])
    if inference["max_image_pixels"] < 1:
        raise InputError(f"--max-image-pixels: expected >= 1, got {inference['max_image_pixels']}")
    return inference, CropConfig.from_dict(config["crop"])


def _first(flag: Any, configured: Any) -> Any:
    return configured if flag is None else flag


def parse_outputs(text: str) -> list[str]:
    from prnet_keras.inference.writers import OUTPUTS

    items = [o.strip().lower() for o in text.split(",") if o.strip()]
    bad = [o for o in items if o not in OUTPUTS]
    if bad or not items:
        raise InputError(f"--outputs: unknown {', '.join(bad) or '(empty)'}; expected some of {', '.join(OUTPUTS)}")
    return list(dict.fromkeys(items))


def parse_bbox(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        box = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        box = []
    if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
        raise InputError(f"--bbox: expected 'left,top,right,bottom' with right > left and bottom > top, got {text!r}")
    return box


def process_images(
    paths: Sequence[Path], predictor: Any, out_dir: Path, outputs: list[str], root: Path | None = None,
    detector: str = "mtcnn", bbox: list[float] | None = None, batch: int = 8, texture_size: int | None = None,
    visibility_mask: bool = False, mat_type: str = "normal", log=print, keep_faces: bool = False,
    progress: bool = False,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> dict[str, Any]:
    """Run the predictor over ``paths`` in batches and write the outputs; a bad image (unreadable,
    above ``max_image_pixels``, refused by the predictor, no face) is skipped with its reason,
    never the end of the run.

    Faces go to ``out_dir/<relative folder>/<image stem>_<k>*``. Returns a summary dict:
    images, faces, written (paths), skipped [(path, reason)], faces_by_image, and with
    ``keep_faces`` face_objects [(output stem path, Face)] (for viewers; otherwise faces are dropped as written).
    ``progress`` shows a bar over the images on stderr (when it is a terminal); ``log`` lines go above it.
    """
    from prnet_keras.inference.images import load_image
    from prnet_keras.inference.writers import write_face_outputs
    from prnet_keras.utils import progress_bar

    summary: dict[str, Any] = {"images": 0, "faces": 0, "written": [], "skipped": [], "faces_by_image": {}}
    whole_image = detector == "none" and bbox is None
    bar = progress_bar(len(paths), "predict", "img", progress)
    if not bar.disable:
        def log(message: str) -> None:  # above the bar (on stderr, where the bar is), not through it
            bar.write(message, file=sys.stderr)

    def skip(p: Path, reason: str) -> None:
        summary["skipped"].append((str(p), reason))
        log(f"skip: {reason}" if reason.startswith(str(p)) else f"skip: {p}: {reason}")

    def predict(chunk: list[Path], images: list) -> list:
        boxes = None
        if bbox is not None or whole_image:
            boxes = [bbox if bbox is not None else [0, 0, im.shape[1] - 1, im.shape[0] - 1] for im in images]
        return predictor.predict_batch(images, boxes=boxes, detector=None if detector == "none" else detector)

    for start in range(0, len(paths), max(1, batch)):
        chunk, images = [], []
        for p in paths[start:start + batch]:
            try:
                images.append(load_image(p, max_image_pixels))
                chunk.append(p)
            except InputError as exc:
                skip(p, str(exc))
        if not chunk:
            bar.update(len(paths[start:start + batch]))
            continue
        try:
            results = predict(chunk, images)
        except InputError:  # one image the predictor refuses (e.g. too small for a face box): find it
            results, kept = [], []
            for p, im in zip(chunk, images):
                try:
                    results += predict([p], [im])
                    kept.append(p)
                except InputError as exc:
                    skip(p, str(exc))
            chunk = kept
        for p, faces in zip(chunk, results):
            summary["images"] += 1
            rel = p.relative_to(root).parent if root is not None else Path()
            summary["faces_by_image"][str(p)] = len(faces)
            if not faces:
                skip(p, "no face found")
                continue
            for k, face in enumerate(faces):
                summary["written"] += write_face_outputs(face, out_dir / rel, f"{p.stem}_{k}", outputs,
                                                         texture_size, visibility_mask, mat_type)
                summary["faces"] += 1
                if keep_faces:
                    summary.setdefault("face_objects", []).append((out_dir / rel / f"{p.stem}_{k}", face))
        bar.update(len(paths[start:start + batch]))
    bar.close()
    return summary


_VIEWABLE = (("texture", "_textured.obj"), ("obj", ".obj"), ("ply", ".ply"), ("mat", ".mat"))


def _show(faces: list[tuple[Path, Any]], outputs: Sequence[str] = (), mode: str = "mesh") -> None:
    """Show the faces in prnet-view, started as a child process: open3d's window crashes in a
    process that has loaded TensorFlow, as this one has. Each face is shown from the mesh file
    written for it (textured OBJ, OBJ, PLY or .mat, in that order), else from a temporary PLY.
    Without a display, or when no window can be opened, writes headless views (PNG) instead.
    """
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        import tempfile

        from prnet_keras.cli.view import run_viewer
        from prnet_keras.inference.writers import write_ply

        with tempfile.TemporaryDirectory(prefix="prnet-show-") as tmp:
            files = []
            for stem, face in faces:
                written = [stem.with_name(stem.name + ext) for out, ext in _VIEWABLE if out in outputs]
                files.append(next((f for f in written if f.is_file()), None)
                             or write_ply(face, Path(tmp) / f"{stem.name}.ply"))
            print("showing the face in a viewer window (Esc or Q closes it)" if len(files) == 1 else
                  f"showing {len(files)} faces in a viewer window, one after another (Esc or Q: next)", file=sys.stderr)
            status = run_viewer(files, points=mode == "points")
        if status in (0, 130, -2):  # shown, or closed with Ctrl-C
            return
        print(f"the viewer could not open a window (exit {status}): writing headless mesh views instead",
              file=sys.stderr)
    from prnet_keras.viz.render import render_views, save_render

    for stem, face in faces:
        path = stem.with_name(stem.name + "_views.png")
        save_render(path, render_views(face.vertices, face.triangles, face.colors, frontal_rotation=face.pose.rotation))
        print(f"no display: wrote headless mesh views to {path}", file=sys.stderr)


def check_model_path(model: Path) -> None:
    """A missing ``--model`` is one clear line before anything loads (checkpoints: ``<prefix>.index``)."""
    if not model.exists() and not Path(str(model) + ".index").exists():
        raise InputError(f"--model {model}: file not found")


def load_predictor(model: Path, uv_data: Path | None, **kwargs: Any) -> Any:
    """``Predictor.from_path`` with every load failure turned into one ``--model`` line."""
    from prnet_keras.inference.predictor import Predictor

    try:
        return Predictor.from_path(model, uv_data, **kwargs)
    except ModuleNotFoundError:
        raise  # run_cli names the package and the extra that brings it
    except ImportError as exc:
        raise InputError(f"--model: model loading is unavailable in this install ({exc})") from None
    except PRNetError:
        raise
    except (OSError, ValueError) as exc:  # a file the loaders could not make sense of
        raise InputError(f"--model {model}: cannot load this file as a model ({exc})") from None


def predictor_for(args: argparse.Namespace, opts: dict[str, Any], crop: Any, detector: str) -> Any:
    """The Predictor of the parsed arguments and resolved options; the model path and the
    detector are checked first (one clear line each, before the model loads)."""
    check_model_path(args.model)
    if detector != "none":
        from prnet_keras.inference.detect import detector_engine, get_detector

        get_detector(detector, opts["min_confidence"], opts["min_face_size"], detector_engine(opts["engine"]))
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    engine_options: dict[str, Any] = {}
    if opts["engine"] == "openvino-int8":
        from prnet_keras.inference.calibration import calibration_source

        engine_options = {"calibration": calibration_source(args.calibration),
                          "log": lambda m: print(m, file=sys.stderr)}
    elif args.calibration is not None:
        raise InputError("--calibration: applies to --engine openvino-int8")
    return load_predictor(args.model, args.uv_data, batch_size=16, min_confidence=opts["min_confidence"],
                          min_face_size=opts["min_face_size"], engine=opts["engine"], crop_config=crop,
                          detector=detector if detector != "none" else "mtcnn", **engine_options)


def main(argv: Sequence[str] | None = None) -> int:
    return run_parsed(build_parser(), argv, _run,
                      lambda args: f"interrupted: the files written so far stay in {args.output}")


def _run(args: argparse.Namespace) -> int:
    opts, crop = resolve_options(args)
    if args.video is not None or args.webcam is not None:
        from prnet_keras.cli.video import run_video

        return run_video(args, parse_outputs(args.outputs) if args.outputs else [], opts,
                         lambda detector: predictor_for(args, opts, crop, detector))
    outputs = parse_outputs(args.outputs or DEFAULT_OUTPUTS)
    bbox = parse_bbox(args.bbox)
    if args.batch < 1:
        raise InputError(f"--batch: expected >= 1, got {args.batch}")
    if args.image is not None:
        from prnet_keras.inference.images import load_image

        load_image(args.image, opts["max_image_pixels"])  # fail fast, before the model loads, on an unreadable image
        paths, root = [args.image], None
    else:
        from prnet_keras.inference.images import list_images

        paths, root = list_images(args.input_dir), args.input_dir
        if not paths:
            raise InputError(f"{args.input_dir}: no .jpg/.jpeg/.png images found")
    if bbox is not None and len(paths) > 1:
        raise InputError("--bbox: applies to one image; use it with --image")
    detector = opts["detector"]
    predictor = predictor_for(args, opts, crop, detector if bbox is None else "none")
    summary = process_images(paths, predictor, args.output, outputs, root, detector, bbox, args.batch,
                             opts["texture_size"], args.visibility_mask, args.mat_type,
                             log=lambda m: print(m, file=sys.stderr), keep_faces=args.show is not None,
                             progress=not args.no_progress, max_image_pixels=opts["max_image_pixels"])
    print(f"{summary['images']} image(s), {summary['faces']} face(s), {len(summary['written'])} file(s) in "
          f"{args.output}, {len(summary['skipped'])} skipped")
    if "uv" in outputs:  # the layout that turns the *_uv.npy maps into meshes (prnet-view reads it)
        for folder in {p.parent for p in summary["written"] if p.name.endswith("_uv.npy")}:
            predictor.layout.save(folder / "uv_layout.npz")
    if args.show and summary.get("face_objects"):
        _show(summary["face_objects"], outputs, args.show)
    return 0 if not summary["skipped"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
