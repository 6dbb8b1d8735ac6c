"""prnet-texture / demo_texture.py: face swap and texture editing (the official demo's flags work).

    prnet-texture -i A.jpg -r B.jpg -o out.jpg --model run/model.keras              # B's face onto A
    prnet-texture -i A.jpg -r B.jpg -o out.jpg --model run/model.keras --region eyes
    prnet-texture -i group.jpg -o out.jpg --model run/model.keras                   # two faces trade places
    python demo_texture.py -i A.jpg -r B.jpg -o out.jpg --mode 0 --model ...        # official: 0 eyes, 1 face

Exit status 0 when the image was written, 2 on a user error (one ``error:`` line: unreadable
image, no face, face index out of range, mask of the wrong size, model that cannot load).

Configuration: the packaged defaults, then ``--config NAME|FILE``, then the flags; sections
``inference`` (detector, min_confidence, min_face_size, engine), ``crop`` and
``data.max_image_pixels`` (resolved as prnet-predict resolves them).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from prnet_keras.cli import OneLineErrorParser, cli_parser, run_parsed
from prnet_keras.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def build_parser() -> argparse.ArgumentParser:
    p = cli_parser("Face swap and texture editing with PRNet (UV textures).", parser_class=OneLineErrorParser)
    p.add_argument("-i", "--image", "--image_path", dest="image", type=Path, required=True,
                   help="the image to edit (its face gets the new texture)")
    p.add_argument("-r", "--ref", "--ref_path", dest="ref", type=Path, default=None,
                   help="the reference image whose face gives the texture (omit it to swap two faces of --image)")
    p.add_argument("-o", "--output", "--output_path", dest="output", type=Path, default=Path("output.jpg"),
                   help="edited image, .jpg or .png (default output.jpg)")
    p.add_argument("--model", type=Path, required=True,
                   help=".keras file, SavedModel folder or official checkpoint prefix")
    p.add_argument("--uv-data", type=Path, default=None,
                   help="UV layout: official uv-data folder or .npz (default: found beside the model)")
    p.add_argument("--mode", type=int, choices=(0, 1), default=None,
                   help="official demo: 0 replaces a part (eyes, or --region), 1 the whole face (default)")
    p.add_argument("--region", default=None,
                   help="eyes | nose | mouth | face | MASK.png (grey UV mask at the map's resolution, white = replace)")
    p.add_argument("--face", default=None, help="face of --image to edit: index (detection order), 'all', "
                   "default the largest")
    p.add_argument("--ref-face", default=None, help="face of --ref to copy: index, default the largest")
    p.add_argument("--no-color-transfer", action="store_true",
                   help="keep the reference's colours (default: match them to the edited face's skin, Lab mean/std)")
    p.add_argument("--blend", choices=("poisson", "alpha", "none"), default="poisson",
                   help="how the face goes in: Poisson (seamlessClone, default), feathered alpha, or a hard paste")
    p.add_argument("--erode", type=int, default=None,
                   help="pixels between the face edge and the blend mask (default: 3%% of the face size, 2..15)")
    p.add_argument("--texture-size", type=int, default=None, help="UV texture side in pixels (default: 2x the map)")
    p.add_argument("--also-texture", action="store_true",
                   help="also write the UV textures and masks used (<output>_texture.png, _ref_texture.png, "
                   "_uv_mask.png, _mask.png)")
    p.add_argument("--detector", choices=("mtcnn", "opencv", "dlib", "none"), default=None,
                   help="face detector; 'none' takes the whole image (or --bbox) as the face box "
                        "(default: the configuration's inference.detector, mtcnn)")
    p.add_argument("--bbox", default=None, help="face box of --image 'left,top,right,bottom' (skips detection)")
    p.add_argument("--ref-bbox", default=None, help="face box of --ref 'left,top,right,bottom' (skips detection)")
    p.add_argument("--min-confidence", type=float, default=None,
                   help="MTCNN score threshold (default: the configuration's inference.min_confidence, 0.9)")
    p.add_argument("--min-face-size", type=int, default=None,
                   help="smallest face searched, in pixels, MTCNN and OpenCV "
                        "(default: the configuration's inference.min_face_size, 40)")
    p.add_argument("--engine", default=None, choices=("auto", "keras", "openvino"),
                   help="what runs the network: auto (OpenVINO on CPU when installed, else Keras), keras, openvino "
                        "(default: the configuration's inference.engine, auto)")
    p.add_argument("--config", default=None,
                   help="named configuration or JSON file (sections inference, crop and data.max_image_pixels); "
                        "flags override it")
    p.add_argument("--cpu", action="store_true", help="hide GPUs (CUDA_VISIBLE_DEVICES=-1)")
    p.add_argument("--gpu", default=None, help="official demo: GPU id to use, -1 for the CPU")
    return p


def resolve_region(mode: int | None, region: str | None) -> str:
    """--mode / --region -> one region value: mode 1 = "face", mode 0 = a part (default eyes)."""
    from prnet_keras.edit import REGIONS

    if mode == 1 and region not in (None, "face"):
        raise InputError(f"--mode 1 replaces the whole face; to replace {region} use --mode 0 or leave --mode out")
    if mode == 0 and region == "face":
        raise InputError("--mode 0 replaces a part of the face: use --region eyes|nose|mouth|MASK.png, or --mode 1")
    chosen = region or ("eyes" if mode == 0 else "face")
    if chosen not in REGIONS and not Path(chosen).is_file():
        raise InputError(f"--region {chosen}: expected one of {', '.join(REGIONS)} or a mask image file (not found)")
    return chosen


def parse_face(text: str | None, flag: str, allow_all: bool) -> int | str | None:
    if text is None:
        return None
    if allow_all and text.strip().lower() == "all":
        return "all"
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"{flag}: expected a face index{' or all' if allow_all else ''}, got {text!r}") from None
    if value < 0:
        raise InputError(f"{flag}: expected a face index >= 0, got {value}")
    return value


def write_image(path: Path, rgb: Any) -> None:
    import cv2

    from prnet_keras.utils import atomic_write_bytes

    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, data = cv2.imencode(path.suffix.lower(), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:  # pragma: no cover - OpenCV fails only on invalid arrays
        raise InputError(f"{path}: cannot encode the image")
    atomic_write_bytes(path, data.tobytes())


def write_extras(output: Path, result: Any) -> list[Path]:
    """The UV textures and masks of an edit beside the output (one set per edited face when several)."""
    import numpy as np

    written = []
    several = len(result.pairs) > 1
    for (target, _), tex, src in zip(result.pairs, result.textures, result.source_textures):
        stem = f"{output.stem}_face{target}" if several else output.stem
        for suffix, img in (("_texture.png", tex), ("_ref_texture.png", src)):
            written.append(output.with_name(stem + suffix))
            write_image(written[-1], img)
    uv = (np.clip(result.uv_mask, 0, 1) * 255 + 0.5).astype(np.uint8)
    for suffix, img in (("_uv_mask.png", uv), ("_mask.png", result.mask.astype(np.uint8) * 255)):
        written.append(output.with_name(output.stem + suffix))
        write_image(written[-1], np.repeat(img[..., None], 3, axis=2))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    return run_parsed(build_parser(), argv, _run, lambda args: f"interrupted: nothing was written to {args.output}")


def _run(args: argparse.Namespace) -> int:
    from prnet_keras.cli.load_model import check_model_path, load_predictor, parse_bbox, resolve_options
    from prnet_keras.inference.images import load_image

    if args.output.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(f"--output {args.output}: expected a .jpg or .png file name")
    region = resolve_region(args.mode, args.region)
    face = parse_face(args.face, "--face", allow_all=True)
    ref_face = parse_face(args.ref_face, "--ref-face", allow_all=False)
    if args.ref is None and face == "all":
        raise InputError("--face all: needs a reference image (-r) whose face goes onto every face of --image")
    if args.ref is None and args.ref_bbox is not None:
        raise InputError("--ref-bbox: there is no reference image (-r)")
    opts, crop = resolve_options(args, ("detector", "min_confidence", "min_face_size", "engine"))
    image = load_image(args.image, opts["max_image_pixels"])  # unreadable images fail here, before the model loads
    ref = load_image(args.ref, opts["max_image_pixels"]) if args.ref is not None else None
    box_a, box_b = parse_bbox(args.bbox), parse_bbox(args.ref_bbox)
    if opts["detector"] == "none":  # the whole image is the face box
        box_a = box_a or [0, 0, image.shape[1] - 1, image.shape[0] - 1]
        box_b = box_b or (None if ref is None else [0, 0, ref.shape[1] - 1, ref.shape[0] - 1])
    check_model_path(args.model)
    if opts["detector"] != "none" and (box_a is None or (ref is not None and box_b is None)):
        from prnet_keras.inference.detect import detector_engine, get_detector

        # unavailable: one line, now
        get_detector(opts["detector"], opts["min_confidence"], opts["min_face_size"], detector_engine(opts["engine"]))
    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    detector = "mtcnn" if opts["detector"] == "none" else opts["detector"]  # "none": every image has a box
    predictor = load_predictor(args.model, args.uv_data, batch_size=4, detector=detector,
                               min_confidence=opts["min_confidence"], min_face_size=opts["min_face_size"],
                               engine=opts["engine"], crop_config=crop)
    from prnet_keras.edit import swap_faces

    result = swap_faces(
        image, ref, predictor,
        region=region, face=face, ref_face=ref_face, color_transfer=not args.no_color_transfer,
        blend_mode=args.blend, boxes_a=box_a, boxes_b=box_b, texture_size=args.texture_size, erode_px=args.erode,
        names=(str(args.image), str(args.ref)),
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_image(args.output, result.image)
    extras = write_extras(args.output, result) if args.also_texture else []
    source = args.ref if args.ref is not None else args.image
    swaps = ", ".join(f"face {t} <- face {s} of {source.name}" for t, s in result.pairs)
    if not result.mask.any():
        print("warning: the edit changed no pixel (the face mesh covers too little of the image)", file=sys.stderr)
    print(f"wrote {args.output} ({args.image.name}: {swaps}; region {region}; colour transfer "
          f"{'off' if args.no_color_transfer else 'on'}; blend {args.blend})")
    for path in extras:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
