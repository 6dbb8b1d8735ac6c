"""The quickstart (``make demo``): the whole pipeline on synthetic data, end to end.

Stages, each writing into ``--out`` (default ``quickstart/``):
  1. build the synthetic morphable model, render one face and its UV position map (PNGs);
  2. generate small synthetic 300W-LP (train) and AFLW2000-3D (val) datasets, build their HDF5;
  3. own data: fit the morphable model to the val images' 68 landmarks, build HDF5 from the fitted
     folder and report how close its maps are to those of the true parameters;
  4. train the light model briefly;
  5. evaluate it (CED plot, Markdown table, summary.json);
  6. reconstruct a synthetic test image (and a real photo when reference data is present):
     mesh files and the 4-panel figure;
  7. swap two new synthetic faces (the whole face, then only the eyes) with prnet-texture and
     write a before / after figure.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from prnet_keras.cli import HelpFormatter, run_cli
from prnet_keras.errors import PRNetError


def stage_model(out: Path, seed: int) -> None:
    import cv2

    from prnet_keras.geometry import (
        UVLayout, make_pose_para, pose_vertices, render_shaded, render_uv_map, uv_pixel_coords,
    )
    from prnet_keras.geometry.synthetic import build_synthetic_model

    model = build_synthetic_model(seed=seed)
    layout = UVLayout.from_model(model)
    size = 450
    rng = np.random.default_rng(seed)
    verts = model.vertices(rng.standard_normal(model.n_shape) * model.shape_ev, None)
    span = float(np.ptp(verts[:, 0]))
    pose = make_pose_para(np.deg2rad([5.0, 25.0, 0.0]), [size / 2, size / 2, 0.0], 0.5 * size / span)
    img_v = pose_vertices(verts, pose, size)
    img = render_shaded(img_v, model.all_triangles, model.colors(), size, size, light_dir=(0.3, 0.4, 1.0))
    uv = render_uv_map(uv_pixel_coords(model.uv_coords, layout.resolution), model.triangles, img_v, layout.resolution)
    uv_vis = np.zeros_like(uv)
    m = layout.face_mask
    uv_vis[m] = (uv[m] - uv[m].min(0)) / np.maximum(np.ptp(uv[m], 0), 1e-6)
    (out / "model").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out / "model" / "synthetic_face.png"),
                cv2.cvtColor((img * 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(out / "model" / "uv_position_map.png"),
                cv2.cvtColor((uv_vis * 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    print(f"synthetic model: {model.n_vertices} vertices, {model.all_triangles.shape[0]} triangles; "
          f"UV layout {layout.hash()} with {layout.n_vertices} face pixels")
    print(f"wrote {out / 'model' / 'synthetic_face.png'} and {out / 'model' / 'uv_position_map.png'}")


def _run(cli_main, argv: list[str], ok: tuple[int, ...] = (0,), shown: str | None = None) -> None:
    print("$", shown or cli_main.__module__.rsplit(".", 1)[-1] + ".py", " ".join(argv), flush=True)
    code = cli_main(argv)
    if code not in ok:
        raise PRNetError(f"{cli_main.__module__} exited with status {code}")


def _synthetic_complete(folder: Path, layout: str, count: int, seed: int) -> bool:
    """True when ``folder`` holds a finished synthetic dataset with these settings: the
    generator writes ``synth_info.json`` only after its last sample."""
    import json

    from prnet_keras.data.synth import INFO_FILE

    try:
        info = json.loads((folder / INFO_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (info.get("layout"), info.get("count"), info.get("seed")) == (layout, count, seed)


def stage_data(out: Path, seed: int, n_train: int, n_val: int, workers: int) -> Path:
    import shutil

    from prnet_keras.cli import build_dataset

    data = out / "data"
    for layout, count, folder, s, mode in (("300wlp", n_train, "300W_LP", seed, "train"),
                                           ("aflw2000", n_val, "AFLW2000", seed + 1, "val")):
        if _synthetic_complete(data / folder, layout, count, s):
            continue
        if (data / folder).exists():  # an interrupted run, or other --*-images / --seed: start it again
            print(f"({data / folder} is incomplete or was made with other settings: generating it again)")
            shutil.rmtree(data / folder)
        (data / f"{mode}.hdf5").unlink(missing_ok=True)  # built (or being built) from the old samples
        shutil.rmtree(data / f"{mode}.hdf5.partial", ignore_errors=True)
        _run(build_dataset.main, ["synth", "--layout", layout, "--count", str(count), "--out", str(data / folder),
                                  "--seed", str(s), "--workers", str(workers)])
    for mode, folder in (("train", "300W_LP"), ("val", "AFLW2000")):
        target = data / f"{mode}.hdf5"
        if not target.exists():  # the builder publishes the file only when it is complete
            resume = ["--resume"] if target.with_name(target.name + ".partial").exists() else []  # interrupted build
            _run(build_dataset.main, ["--source", str(data / folder), "--out", str(target), "--buildmode", mode,
                                      "--workers", str(workers), "--seed", str(seed), "--no-progress", *resume])
    return data


def stage_fit(data: Path, workers: int) -> dict:
    """Fit the synthetic AFLW2000-3D images' pt3d_68 (as own data would be), build its HDF5 and
    compare the maps with val.hdf5 (built from the true parameters). Reuses finished results."""
    import shutil

    from prnet_keras.cli import build_dataset
    from prnet_keras.data.fit_folder import compare_maps

    fitted, target = data / "AFLW2000_fitted", data / "fitted.hdf5"
    source_done = (data / "AFLW2000" / "synth_info.json").stat().st_mtime
    if target.exists() and target.stat().st_mtime < source_done:  # the val set was made again since
        target.unlink()
        shutil.rmtree(fitted, ignore_errors=True)
    if not target.exists():
        if not (fitted / "skipped.csv").exists():
            resume = ["--resume"] if (fitted / ".prnet-progress").exists() else []
            _run(build_dataset.main, ["fit", "--source", str(data / "AFLW2000"), "--out", str(fitted), "--landmarks",
                                      "pt3d_68", "--workers", str(workers), "--no-progress", *resume], ok=(0, 3))
        resume = ["--resume"] if target.with_name(target.name + ".partial").exists() else []
        _run(build_dataset.main, ["--source", str(fitted), "--out", str(target), "--buildmode", "val",
                                  "--workers", str(workers), "--no-progress", *resume], ok=(0, 3))
    report = compare_maps(target, data / "val.hdf5")
    print(f"maps from the fitted parameters vs the true ones ({report['n']} samples, crop frame, NME of the "
          f"68-landmark box): {100 * report['nme_2d']:.2f} % 2D (worst {100 * report['nme_2d_max']:.2f} %), "
          f"{100 * report['nme_3d']:.2f} % 3D")
    return report


def stage_train(out: Path, data: Path, epochs: int, workers: int) -> Path:
    from prnet_keras.cli import train_model

    run = out / "run"
    _run(train_model.main, ["--config", "quickstart", "--hdf5dir", str(data), "--output", str(run),
                            "--epochs", str(epochs), "--workers", str(workers), "--force"])
    model = run / "best_nme.keras"
    if not model.exists():
        raise PRNetError(f"training wrote no {model}")
    return model


def stage_evaluate(out: Path, data: Path, model: Path) -> None:
    from prnet_keras.cli import evaluate_model

    _run(evaluate_model.main, ["--model", str(model), "--hdf5", str(data / "val.hdf5"),
                               "--outputdir", str(out / "evaluation"), "--no-progress"])
    table = out / "evaluation" / "results.md"
    if table.exists():
        print(table.read_text())


def _frontal_val_image(data: Path) -> tuple[Path, str]:
    """The most frontal synthetic AFLW2000-3D image and the box of its pt3d_68 (left,top,right,bottom)."""
    import scipy.io

    best = None
    for mat_path in sorted((data / "AFLW2000").glob("image*.mat")):
        mat = scipy.io.loadmat(str(mat_path))
        yaw = abs(float(mat["Pose_Para"].reshape(-1)[1]))
        if best is None or yaw < best[0]:
            best = (yaw, mat_path, mat["pt3d_68"])
    if best is None:
        raise PRNetError(f"no synthetic test images in {data / 'AFLW2000'}")
    pts = best[2][:2]
    box = ",".join(f"{v:.1f}" for v in (pts[0].min(), pts[1].min(), pts[0].max(), pts[1].max()))
    return best[1].with_suffix(".jpg"), box


def stage_reconstruct(out: Path, data: Path, model: Path) -> None:
    from prnet_keras.cli import load_model
    from prnet_keras.utils import reference_data_dir

    image, box = _frontal_val_image(data)
    outputs = "obj,ply,mat,kpt,pose,depth,texture,uv,figure"
    _run(load_model.main, ["--image", str(image), "--model", str(model), "--output", str(out / "reconstruct"),
                           "--outputs", outputs, "--detector", "mtcnn"], ok=(0, 1))
    if not any((out / "reconstruct").glob(f"{image.stem}*.obj")):
        print("(MTCNN found no face in the synthetic image: using its landmark box instead)")
        _run(load_model.main, ["--image", str(image), "--model", str(model), "--output", str(out / "reconstruct"),
                               "--outputs", outputs, "--bbox", box])
    ref = reference_data_dir()
    photo = ref / "photos" / "1.jpg" if ref else None
    if photo is not None and photo.exists():
        _run(load_model.main, ["--image", str(photo), "--model", str(model), "--output", str(out / "reconstruct"),
                               "--outputs", "obj,figure", "--detector", "mtcnn"], ok=(0, 1))
    else:
        print("(no real photo: the reference data is absent; the synthetic image stands alone)")


def _frontal_pair(folder: Path) -> list[tuple[Path, str]]:
    """The two most frontal synthetic AFLW2000-3D images of ``folder``, each with the box of its pt3d_68."""
    import scipy.io

    found = []
    for mat_path in sorted(folder.glob("image*.mat")):
        mat = scipy.io.loadmat(str(mat_path))
        pts = mat["pt3d_68"][:2]
        box = ",".join(f"{v:.1f}" for v in (pts[0].min(), pts[1].min(), pts[0].max(), pts[1].max()))
        found.append((abs(float(mat["Pose_Para"].reshape(-1)[1])), mat_path.with_suffix(".jpg"), box))
    if len(found) < 2:
        raise PRNetError(f"the texture stage needs two synthetic test images in {folder}, found {len(found)}")
    found.sort(key=lambda t: t[0])
    return [(p, box) for _, p, box in found[:2]]


def stage_texture(out: Path, model: Path, seed: int) -> Path:
    """B's face onto A (whole face, then only the eyes) with prnet-texture; a before/after figure.

    A and B are two new synthetic faces, near frontal and without occluders (so the figure
    shows the edit, not a hand over the face)."""
    from prnet_keras.cli import texture
    from prnet_keras.data.synth import generate_dataset
    from prnet_keras.inference.images import load_image
    from prnet_keras.viz.figure import save_panels

    folder = out / "texture"
    faces = folder / "faces"
    if not _synthetic_complete(faces, "aflw2000", 4, seed + 2):
        generate_dataset(faces, layout="aflw2000", count=4, seed=seed + 2, occluders=False, near_frontal_fraction=1.0)
    (a, box_a), (b, box_b) = _frontal_pair(faces)
    results = {}
    for name, flags in (("swap", ["--mode", "1"]), ("eyes", ["--mode", "0"])):
        result = folder / f"{name}.jpg"
        result.unlink(missing_ok=True)
        argv = ["-i", str(a), "-r", str(b), "-o", str(result), "--model", str(model), *flags]
        _run(texture.main, argv + ["--detector", "mtcnn"], ok=(0, 2), shown="prnet-texture")
        if not result.exists():  # exit 2: MTCNN missed a face of the small synthetic images
            print("(no face found: using the landmark boxes of the synthetic images instead)")
            _run(texture.main, argv + ["--bbox", box_a, "--ref-bbox", box_b], shown="prnet-texture")
        results[name] = load_image(result)
    figure = save_panels(folder / "before_after.png", [
        ("A (before)", load_image(a)), ("B (reference)", load_image(b)),
        ("A with B's face (--mode 1)", results["swap"]), ("A with B's eyes (--mode 0)", results["eyes"])])
    print(f"wrote {figure}")
    return figure


class _DemoHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The module docstring (a numbered list of stages) as written; defaults as every CLI shows them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_DemoHelpFormatter)
    parser.add_argument("--out", default="quickstart", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and the training")
    parser.add_argument("--train-images", type=int, default=400, help="synthetic 300W-LP images (half _Flip twins)")
    parser.add_argument("--val-images", type=int, default=40, help="synthetic AFLW2000-3D images")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: the packaged quickstart configuration)")
    parser.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                        help="worker processes for data generation and building, data loaders for training")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from prnet_keras.config import load_config

    epochs = args.epochs or int(load_config("quickstart")["train"]["epochs"])
    started = time.perf_counter()
    state: dict = {}
    stages = [
        ("synthetic morphable model, one face and its UV position map", lambda: stage_model(out, args.seed)),
        ("synthetic 300W-LP / AFLW2000-3D datasets -> HDF5",
         lambda: state.update(data=stage_data(out, args.seed, args.train_images, args.val_images, args.workers))),
        ("own data: fit 68 landmarks -> 300W-LP-layout folder -> HDF5, compared with the true parameters",
         lambda: stage_fit(state["data"], args.workers)),
        (f"train the light model for {epochs} epochs",
         lambda: state.update(model=stage_train(out, state["data"], epochs, args.workers))),
        ("evaluate (NME, ICP; CED plots and table)", lambda: stage_evaluate(out, state["data"], state["model"])),
        ("reconstruct a synthetic test image (and a real photo when available)",
         lambda: stage_reconstruct(out, state["data"], state["model"])),
        ("swap two synthetic faces (prnet-texture): whole face and eyes, before/after figure",
         lambda: stage_texture(out, state["model"], args.seed)),
    ]
    def body() -> int:
        for i, (title, run) in enumerate(stages, 1):
            print(f"\n== {i}/{len(stages)} {title}", flush=True)
            t = time.perf_counter()
            run()
            print(f"({time.perf_counter() - t:.1f} s)", flush=True)
        return 0

    code = run_cli(body, f"interrupted: run it again to continue (finished datasets in {out}/data are reused)")
    if code:
        return code
    print(f"\nquickstart done in {time.perf_counter() - started:.0f} s: everything is under {out}/")
    for rel in ("model/synthetic_face.png", "model/uv_position_map.png", "run/training_log.csv", "run/best_nme.keras",
                "evaluation/results.md", "evaluation/ced_all.png", "reconstruct", "texture/before_after.png"):
        print(f"  {out / rel}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
