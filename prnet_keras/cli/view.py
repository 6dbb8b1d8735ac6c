"""prnet-view: open saved meshes, point clouds and position maps in an interactive window.

    prnet-view out/photo_0.obj                     # mesh with its colours (or texture, via .mtl)
    prnet-view out/photo_0.ply out/photo_0.mat     # one after another: Esc or Q shows the next
    prnet-view out/photo_0_uv.npy --points         # a position map as a point cloud

Reads .obj (+ .mtl + texture), .ply, our mesh .mat (normal or dotnet) and position-map .npy
(triangles from --uv-data, else a uv_layout.npz beside the file, else the non-zero pixels
on the pixel grid). In the window: drag to rotate, wheel to zoom, Esc or Q for the next file
(closes after the last). Never imports TensorFlow: open3d's window crashes in a process that
has. Exit status 0 when the window was closed, 2 on a bad file or flag, or no display (one line).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from prnet_keras.cli import OneLineErrorParser, cli_parser, run_parsed


def build_parser() -> argparse.ArgumentParser:
    p = cli_parser("Show meshes (.obj .ply .mat) and position maps (.npy) in a window: drag to rotate, wheel to "
                   "zoom, Esc or Q for the next file (closes after the last).", parser_class=OneLineErrorParser)
    p.add_argument("files", nargs="+", type=Path, metavar="FILE",
                   help=".obj (+ .mtl/texture), .ply, mesh .mat or position-map .npy; several: one after another")
    p.add_argument("--points", action="store_true",
                   help="show a point cloud instead of the mesh (pptk when installed, else open3d)")
    p.add_argument("--uv-data", type=Path, default=None,
                   help="UV layout for .npy position maps: official uv-data folder or layout .npz "
                        "(default: <stem>.uv.npz or uv_layout.npz beside the file, else a pixel-grid triangulation)")
    p.add_argument("--backend", choices=("auto", "open3d", "pptk"), default="auto",
                   help="point-cloud viewer: auto = pptk when installed, else open3d")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_parsed(build_parser(), argv, _run, lambda args: "interrupted: viewer closed")


def _run(args: argparse.Namespace) -> int:
    from prnet_keras.viz.meshfiles import load_view_mesh

    meshes = [load_view_mesh(f, args.uv_data) for f in args.files]  # every file checked before a window opens
    for mesh in meshes:
        for note in mesh.notes:
            print(f"note: {note}", file=sys.stderr)
    from prnet_keras.viz.viewers import show_meshes

    show_meshes(meshes, points=args.points, backend=args.backend)
    return 0


def viewer_command(files: Sequence[str | os.PathLike], points: bool = False) -> list[str]:
    """The command that opens ``files`` in a fresh Python process (no TensorFlow in it)."""
    return [sys.executable, "-m", "prnet_keras.cli.view", *(["--points"] if points else []), *map(str, files)]


def run_viewer(files: Sequence[str | os.PathLike], points: bool = False) -> int:
    """Open the viewer as a child process and wait until the user closes its windows.

    Returns the child's exit status; Ctrl-C here ends the child too, so nothing is left behind.
    """
    proc = subprocess.Popen(viewer_command(files, points))
    try:
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    raise SystemExit(main())
