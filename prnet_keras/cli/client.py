"""prnet-client (load_model_client.py): the command line of the client library (``prnet_keras.client``).

    prnet-client --image face.jpg                               # compatible API: /predict (+ /evaluate with face.mat)
    prnet-client --imagedir photos/ --api native --out meshes/  # native API: /v1/reconstruct, writes OBJ/PLY
    prnet-client --image face.jpg --serverurl http://127.0.0.1:20000

With the compatible API an image's same-named ``.mat`` fit (AFLW2000-3D / 300W-LP) is sent
along: its landmarks place the crop, and the predicted meshes are then scored against it
with /evaluate. The API key, if the server wants one, comes from ``--api-key-env``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
from pathlib import Path

from prnet_keras.cli import cli_parser, run_cli
from prnet_keras.client import PRNetClient, ServerError  # noqa: F401  (ServerError: what the calls raise)
from prnet_keras.errors import InputError, PRNetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


# ---- CLI ----------------------------------------------------------------------------------------

def _default_url(config_name: str | None) -> str:
    from prnet_keras.config import load_config

    s = load_config(config_name)["server"]
    return f"http://{s['host']}:{s['port']}"


def build_parser() -> argparse.ArgumentParser:
    p = cli_parser(__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-i", "--image", help="one image file")
    src.add_argument("-d", "--imagedir", help="a folder of images (non-recursive)")
    p.add_argument("-u", "--serverurl", default=None,
                   help="server URL (default: http://<configuration server.host>:<server.port>)")
    p.add_argument("--api", choices=("compat", "native"), default="compat", help="which API to call")
    p.add_argument("--mattype", choices=("normal", "dotnet"), default="normal", help="compatible API mesh layout")
    p.add_argument("--outputs", default="landmarks,pose,mesh_obj,mesh_ply", help="native API outputs (comma-separated)")
    p.add_argument("--out", default=None, help="folder for the returned meshes (.mat / .obj / .ply) and JSON")
    p.add_argument("--no-evaluate", action="store_true",
                   help="compatible API: skip /evaluate even when a .mat is present")
    p.add_argument("--api-key-env", default="PRNET_API_KEY",
                   help="environment variable holding the API key (unset or empty: no key sent)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--config", default=None, help="named configuration or JSON file (server.host and server.port "
                   "give the default --serverurl)")
    return p


def _images(args: argparse.Namespace) -> list[Path]:
    if args.image:
        path = Path(args.image)
        if not path.is_file():
            raise InputError(f"--image {path}: no such file")
        return [path]
    folder = Path(args.imagedir)
    if not folder.is_dir():
        raise InputError(f"--imagedir {folder}: no such folder")
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise InputError(f"--imagedir {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def _save(out: Path | None, name: str, data: bytes) -> None:
    if out is not None:
        from prnet_keras.utils import atomic_write_bytes

        atomic_write_bytes(out / name, data)


def _run_compat(client: PRNetClient, path: Path, args: argparse.Namespace, out: Path | None) -> None:
    image = path.read_bytes()
    mat_path = path.with_suffix(".mat")
    mats = [mat_path.read_bytes()] if mat_path.is_file() else []
    answer = client.predict([image], [mats], args.mattype)
    faces = answer["imageMeshList"][0]["faceMeshList"]
    print(f"{path.name}: {len(faces)} face(s)" + (f" (crop from {mat_path.name})" if mats else ""))
    for k, face in enumerate(faces):
        print(f"  face {k}: faceBB [cx, cy, size] = {face['faceBB']}")
        _save(out, f"{path.stem}_face{k}.mat", base64.b64decode(face["rawMesh"]))
    if mats and faces and not args.no_evaluate:
        ev = client.evaluate([image], [mats[:1]], [[faces[0]["rawMesh"]]])
        values = ev["evaluationDataList"][0]["imageEvalValues"][0]["evalValues"]
        pairs = ", ".join(f"{n} {('%.3f' % v) if v is not None else 'n/a'}"
                          for n, v in zip(ev["evaluationTypes"], values))
        print(f"  NME % vs {mat_path.name}: {pairs}")


def _run_native(client: PRNetClient, path: Path, args: argparse.Namespace, out: Path | None) -> None:
    outputs = [o.strip() for o in args.outputs.split(",") if o.strip()]
    answer = client.reconstruct(path.read_bytes(), outputs, filename=path.name)
    print(f"{path.name}: {answer['n_faces']} face(s), {answer['timing_ms']}")
    for face in answer["faces"]:
        k = face["index"]
        pose = face.get("pose")
        if pose:
            print(f"  face {k}: pitch {pose['pitch_deg']:.1f}°, yaw {pose['yaw_deg']:.1f}°, "
                  f"roll {pose['roll_deg']:.1f}°")
        mesh = face.get("mesh", {})
        for key, ext in (("obj", "obj"), ("ply", "ply"), ("mat", "mat")):
            if key in mesh:
                _save(out, f"{path.stem}_face{k}.{ext}", base64.b64decode(mesh[key]))
        summary = {key: face[key] for key in ("crop_box", "detection", "landmarks", "pose") if key in face}
        _save(out, f"{path.stem}_face{k}.json", json.dumps(summary, indent=1).encode())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    done = f"; the files written so far stay in {args.out}" if args.out else ""
    return run_cli(lambda: _run(args), f"interrupted{done}")


def _run(args: argparse.Namespace) -> int:
    try:
        paths = _images(args)
        out = Path(args.out) if args.out else None
        url = args.serverurl or _default_url(args.config)
        with PRNetClient(url, os.environ.get(args.api_key_env) or None, args.timeout) as client:
            for path in paths:
                if args.api == "native":
                    _run_native(client, path, args, out)
                else:
                    _run_compat(client, path, args, out)
    except OSError as exc:  # an image or output file
        raise PRNetError(f"{exc.filename or ''}: {exc.strerror or exc}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
