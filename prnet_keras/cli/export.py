"""prnet-export: convert a trained network to another format (TF Serving, TFLite, ONNX, .keras).

    prnet-export run/best_nme.keras exported/prnet --format saved_model
    prnet-export run/best_nme.keras exported/prnet --format tflite_float16
    prnet-export ckpt/256_256_resfcn256_weight exported/prnet.keras --format keras --uv-data uv-data

MODEL: a ``.keras`` file or an official checkpoint prefix. The UV layout found beside MODEL
(or given with --uv-data) is written beside the output as ``<stem>.uv.npz``, where
``prnet-predict`` / ``prnet-serve`` find it. Prints the written path. Exit status: 0 done,
2 on a usage or input error (one ``error:`` line).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prnet_keras.cli import cli_parser, run_cli
from prnet_keras.errors import InputError

# model.export.FORMATS, spelt here so that --help does not import Keras (a test keeps them equal)
FORMATS = ("keras", "saved_model", "tflite_float16", "tflite_int8", "onnx")


def build_parser() -> argparse.ArgumentParser:
    p = cli_parser("Convert a PRNet network to another format (TF Serving, TFLite, ONNX, .keras).")
    p.add_argument("model", help=".keras file or official TF1 checkpoint prefix")
    p.add_argument("out", help="output path (suffix added when missing)")
    p.add_argument("--format", default="saved_model", choices=FORMATS, help="output format")
    p.add_argument("--uv-data", default=None, help="uv-data folder or uv_layout.npz to write beside the output")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _run(args), "interrupted: nothing was written (exports are written atomically)")


def _run(args: argparse.Namespace) -> int:
    from prnet_keras.model.export import export_model
    from prnet_keras.model.io import load_keras_model, resolve_layout

    model = load_keras_model(args.model)
    try:
        layout = resolve_layout(Path(args.model), args.uv_data)
    except InputError:
        if args.uv_data:
            raise
        layout = None  # exporting without a layout is fine; load_network will ask for one
        print(f"note: no UV layout found beside {args.model}: exported without one (give --uv-data to add it)",
              file=sys.stderr)
    print(export_model(model, args.out, args.format, layout=layout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
