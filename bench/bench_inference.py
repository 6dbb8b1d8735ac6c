"""Benchmark: per-image inference latency split and batch throughput (CPU; GPU when present).

Stages per image (median over --repeats iterations of the whole pipeline):
detect (MTCNN with the defaults: min face 40 px, confidence 0.9, its networks on the engine
``auto`` picks; each engine and the mtcnn package's own driver are timed alone too), crop (warp to 256²),
network (batch 1, batch norm folded and run by the inference engine as Predictor runs it:
``--engine`` auto = OpenVINO when installed, see ``model.engines``; the Keras forward is timed
too for comparison; resfcn256 and light, untrained weights: timing only), post-processing (mesh,
68 landmarks, colours, visibility, pose, depth image, UV texture with visibility mask) and
writing the mesh and files (coloured OBJ, landmarks .txt/.npy, pose JSON, depth PNG/.npy,
textured OBJ + MTL + texture PNG) as one stage, ``outputs``, as ``write_face_outputs`` runs
them (overlapped on two threads); the same work is also timed split into post-processing and
writing. All eight writers (adding PLY, MAT, UV map) are timed separately. Post-processing and
writing run on a *realistic* position map (a ground-truth map of a posed face: the untrained
network's flat output would make the mesh degenerate and the rasteriser trivially fast).
Scene: an AFLW2000-3D photo with the official UV layout and the mean BFM when the reference
data is present, else a synthetic sample with the synthetic model's layout.

Wall-clock medians are the figures; process CPU time per stage (all threads summed) is
recorded too, as the machine is shared and wall time inflates with its load (the load
average is recorded). Writes bench/results/inference.json; the last line is
``inference ms_net=<median resfcn256 batch-1> ms_total=<median whole image -> files>``.

``--network-only`` measures batched network throughput alone (images/s per model, dtype
policy and batch size; no detector, no files), importing only Keras and the model package:
the mode for a GPU machine on any backend (``KERAS_BACKEND=jax``, no TensorFlow needed).
It writes bench/results/inference_network.json; its last line is
``inference batched_images_per_s=<best resfcn256> batch=<b> policy=<p>``.

int8 rows: the same pipeline with the network quantised to int8 by NNCF (``--engine
openvino-int8``; calibrated on 64 synthetic crops, cached), per model; the last line then also
gives ``ms_net_int8`` and ``ms_total_int8``. ``--no-int8`` skips them.

Usage: python bench/bench_inference.py [--repeats 15] [--batch 16] [--engine auto|keras|openvino] [--no-int8]
       KERAS_BACKEND=jax python bench/bench_inference.py --network-only --batches 64,256,1024
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import benchenv  # noqa: E402

from prnet_keras.utils import reference_data_dir, write_json  # noqa: E402

# "mesh + files": the coloured mesh, landmarks, pose, depth image and textured mesh (OBJ + MTL +
# texture PNG with the visibility mask): every quantity the face carries, once each.
WRITE_OUTPUTS = ("obj", "kpt", "pose", "depth", "texture")
# also timed separately (not in the total): every writer, incl. the alternative mesh formats
ALL_OUTPUTS = ("obj", "ply", "mat", "kpt", "pose", "depth", "texture", "uv")


def environment() -> dict:
    import keras

    backend = keras.backend.backend()
    # only the backend in use: importing TensorFlow under JAX would cost seconds (or fail on a GPU machine without it)
    env = benchenv.environment("cv2", "keras", "numba", "openvino", backend)
    if backend == "tensorflow":
        import tensorflow as tf

        env["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    elif backend == "jax":
        import jax

        env["gpus"] = [str(d) for d in jax.devices() if d.platform != "cpu"]
    elif backend == "torch":
        import torch

        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        env["gpus"] = []
    return env


def scene() -> dict:
    """Image (RGB), realistic crop-pixel GT map, its transform, the UV layout, and a description."""
    from prnet_keras.geometry import (
        UVLayout, crop_transform, load_mean_bfm, pose_vertices, render_uv_map, training_crop, uv_pixel_coords,
        vertices_to_crop,
    )
    from prnet_keras.inference import load_image

    ref = reference_data_dir()
    if ref is not None:
        import scipy.io

        model = load_mean_bfm(ref / "bfm-mean")
        layout = UVLayout.from_prnet_folder(ref / "prnet-uv-data")
        image = load_image(ref / "aflw2000-3d" / "image00050.jpg")
        pose = scipy.io.loadmat(ref / "aflw2000-3d" / "image00050.mat")["Pose_Para"]
        v = pose_vertices(model.vertices(), pose, image.shape[0])
        t = crop_transform(*training_crop(v[model.kpt_ind], None, 1.5))
        pm = render_uv_map(uv_pixel_coords(model.uv_coords, 256), model.triangles, vertices_to_crop(v, t), 256)
        return {"image": image, "map": pm, "transform": t, "layout": layout,
                "what": "AFLW2000-3D image00050 (450x450), official UV layout, mean-BFM GT map"}
    from prnet_keras.data.gt import make_ground_truth
    from prnet_keras.data.synth import generate_dataset
    from prnet_keras.geometry.synthetic import build_synthetic_model

    model = build_synthetic_model(seed=0, density="bfm")
    layout = UVLayout.from_model(model)
    with tempfile.TemporaryDirectory() as tmp:
        jpg = [p for p in generate_dataset(tmp, "aflw2000", count=1, seed=0) if p.suffix == ".jpg"][0]
        image = load_image(jpg)
        mat = scipy_loadmat(jpg.with_suffix(".mat"))
    gt = make_ground_truth(model, layout, image, mat)
    return {"image": image, "map": gt["position_map"], "transform": gt["transform"], "layout": layout,
            "what": f"synthetic AFLW-layout sample {image.shape[1]}x{image.shape[0]}, synthetic BFM-density layout"}


def scipy_loadmat(path):
    import scipy.io

    return scipy.io.loadmat(path)


def median_ms(samples: list[float]) -> float:
    return round(1000.0 * statistics.median(samples), 2)


def time_network(forward, batch: int, repeats: int) -> list[float]:
    """Wall seconds of ``forward`` on a (batch, 256, 256, 3) float32 input, after 2 warm-up calls."""
    x = np.random.default_rng(0).random((batch, 256, 256, 3), dtype=np.float32)
    for _ in range(2):
        forward(x)  # warm-up / tracing
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        forward(x)
        out.append(time.perf_counter() - t0)
    return out


def time_writes(sc: dict, outputs: tuple[str, ...], repeats: int, out_dir: Path) -> list[float]:
    from prnet_keras.inference import face_from_position_map
    from prnet_keras.inference.writers import write_face_outputs

    face = face_from_position_map(sc["map"], sc["transform"], sc["layout"], sc["image"])
    out = []
    for i in range(repeats):
        t0 = time.perf_counter()
        write_face_outputs(face, out_dir, f"all{i}", outputs, 256, True)
        out.append(time.perf_counter() - t0)
    return out


def pipeline(sc: dict, network, repeats: int, out_dir: Path) -> dict[str, list[float]]:
    """Whole image -> files, stage by stage, ``repeats`` times (``network``: a model.io.Network)."""
    from prnet_keras.inference import Predictor, face_from_position_map, get_detector
    from prnet_keras.inference.detect import Detection
    from prnet_keras.inference.writers import write_face_outputs

    layout, image = sc["layout"], sc["image"]
    pred = Predictor(network, layout, batch_size=1)
    detector = get_detector("mtcnn")  # defaults: min confidence 0.9, min face 40 px
    detector(image)  # warm-up: MTCNN graphs, the predict step's tracing, numba kernels
    pred.run_network(np.zeros((1, 256, 256, 3), np.uint8))
    warm = face_from_position_map(sc["map"], sc["transform"], layout, image)
    write_face_outputs(warm, out_dir, "warmup", WRITE_OUTPUTS, 256, True)
    keys = ("detect", "crop", "network", "outputs", "total")
    stages: dict[str, list[float]] = {k: [] for k in keys + ("split_postprocess", "split_write")}
    cpu: dict[str, list[float]] = {k: [] for k in keys}
    for i in range(repeats):
        marks = [(time.perf_counter(), time.process_time())]
        dets = detector(image)
        marks.append((time.perf_counter(), time.process_time()))
        det = dets[0] if dets else Detection(np.array([100.0, 100.0, 350.0, 350.0]), None, "box")
        crop, _ = pred.crop(image, det)
        marks.append((time.perf_counter(), time.process_time()))
        pred.run_network(crop[None])
        marks.append((time.perf_counter(), time.process_time()))
        # realistic map in place of the untrained output (see module docstring); the writers
        # compute visibility, depth, texture, pose and colours on the way, as load_model.py runs
        face = face_from_position_map(sc["map"], sc["transform"], layout, image)
        write_face_outputs(face, out_dir, f"face{i}", WRITE_OUTPUTS, 256, True)
        marks.append((time.perf_counter(), time.process_time()))
        for j, key in enumerate(keys[:-1]):
            stages[key].append(marks[j + 1][0] - marks[j][0])
            cpu[key].append(marks[j + 1][1] - marks[j][1])
        stages["total"].append(marks[-1][0] - marks[0][0])
        cpu["total"].append(marks[-1][1] - marks[0][1])
        # the same outputs split in two for the report (not in the total): computing every
        # quantity first (Face.prepare + texture), then writing the files of the prepared face
        face = face_from_position_map(sc["map"], sc["transform"], layout, image)
        t0 = time.perf_counter()
        face.prepare(("keypoints", "colors", "visibility", "pose", "depth_image"))
        face.texture(256, visibility_mask=True)
        t1 = time.perf_counter()
        write_face_outputs(face, out_dir, f"split{i}", WRITE_OUTPUTS, 256, True)
        stages["split_postprocess"].append(t1 - t0)
        stages["split_write"].append(time.perf_counter() - t1)
    stages.update({f"cpu_{k}": v for k, v in cpu.items()})
    stages["faces_detected"] = [float(len(dets))]
    return stages


def detector_rows(image: np.ndarray, repeats: int) -> dict:
    """MTCNN per engine at the default minimum face (40 px) and, beside the mtcnn package's own
    ``detect_faces`` (whose pyramid is right only at 20 px), at 20 px: median ms and faces found."""
    from prnet_keras.inference.detect import MTCNNDetector

    rows = {}
    for min_face, engines in ((40, ("openvino", "keras")), (20, ("openvino", "keras", "package"))):
        for engine in engines:
            detector = MTCNNDetector(0.9, min_face, engine=engine)
            faces = len(detector(image))  # warm-up: conversions, graphs, numba kernels
            seconds = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                detector(image)
                seconds.append(time.perf_counter() - t0)
            rows[f"{engine}_min_face_{min_face}"] = {"ms": median_ms(seconds), "faces": faces}
            print(f"MTCNN {engine} engine, min face {min_face} px: {median_ms(seconds)} ms, {faces} face(s)")
    return rows


def int8_rows(name: str, folded, model, sc: dict, args: argparse.Namespace, out_dir: Path) -> dict:
    """The pipeline with the int8 network (untrained weights: timing; its accuracy report is
    recorded but says nothing about a trained network)."""
    from prnet_keras.inference.calibration import CalibrationData
    from prnet_keras.model.engines import keras_forward
    from prnet_keras.model.io import Network

    calibration = CalibrationData(count=64, validation=16, seed=1)
    forward, used = keras_forward(folded, "openvino-int8", cache=True, calibration=calibration, layout=sc["layout"])
    network = Network(name, "keras", sc["layout"], forward, 256, model, args.batch, used)
    stages = pipeline(sc, network, args.repeats, out_dir)
    per_image = {k: median_ms(v) for k, v in stages.items() if k != "faces_detected" and not k.startswith("cpu_")}
    batch_s = time_network(network.predict, args.batch, max(3, args.repeats // 3))
    print(f"{name} (int8) wall: " + " ".join(f"{k}={v}ms" for k, v in per_image.items()))
    return {"engine": used, "per_image_ms": per_image, f"batch{args.batch}_ms": median_ms(batch_s),
            "batch_images_per_s": round(args.batch / statistics.median(batch_s), 1),
            "accuracy_report_untrained": getattr(forward, "report", None)}


def network_only(args: argparse.Namespace, engine: str) -> int:
    """Batched network throughput per model x dtype policy x batch size (see module doc)."""
    import keras

    from prnet_keras.model import build_model
    from prnet_keras.model.engines import keras_forward
    from prnet_keras.model.fold import fold_batch_norm

    env = environment()
    print("machine:", {k: env[k] for k in ("machine", "cpu_count", "platform", "keras_backend")}, "gpus:", env["gpus"])
    policies = args.policies.split(",") if args.policies else (
        ["float32", "mixed_bfloat16"] if env["gpus"] else ["float32"])
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    for policy in policies:
        keras.config.set_dtype_policy(policy)
        try:
            for name in ("resfcn256", "light"):
                folded = fold_batch_norm(build_model(name))
                forward, used = keras_forward(folded, engine)
                for batch in batches:
                    seconds = statistics.median(time_network(forward, batch, args.repeats))
                    rows.append({"model": name, "policy": policy, "engine": used, "batch": batch,
                                 "ms": round(1000 * seconds, 2), "images_per_s": round(batch / seconds, 1)})
                    print(f"{name} {policy} ({used}) batch {batch}: {rows[-1]['ms']} ms = "
                          f"{rows[-1]['images_per_s']} images/s")
        finally:
            keras.config.set_dtype_policy("float32")
    out = ROOT / "bench" / "results" / "inference_network.json"
    write_json(out, {"environment": env, "repeats": args.repeats, "results": rows})
    best = max((r for r in rows if r["model"] == "resfcn256"), key=lambda r: r["images_per_s"])
    print(f"wrote {out.relative_to(ROOT)}")
    print(f"inference batched_images_per_s={best['images_per_s']} batch={best['batch']} policy={best['policy']}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--engine", default="auto", choices=("auto", "keras", "openvino"),
                    help="what runs the network (default auto: OpenVINO on CPU when installed, else Keras)")
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 rows")
    ap.add_argument("--network-only", action="store_true",
                    help="batched network throughput only (any backend, no TensorFlow needed: the GPU mode)")
    ap.add_argument("--batches", default="1,16,64,256", help="--network-only: batch sizes")
    ap.add_argument("--policies", default=None,
                    help="--network-only: dtype policies (default float32, plus mixed_bfloat16 on an accelerator)")
    args = ap.parse_args()
    if args.network_only:
        return network_only(args, args.engine)

    import keras

    from prnet_keras.model import build_model
    from prnet_keras.model.engines import keras_forward
    from prnet_keras.model.fold import fold_batch_norm
    from prnet_keras.model.io import Network

    engine = args.engine

    env = environment()
    print("machine:", {k: env[k] for k in ("machine", "cpu_count", "affinity", "platform", "load_average_1min")})
    print("versions:", {k: env[k] for k in ("python", "numpy", "tensorflow", "keras", "openvino", "opencv", "numba")},
          "gpus:", env["gpus"])
    sc = scene()
    print("scene:", sc["what"], f"({sc['layout'].n_vertices} vertices, {len(sc['layout'].triangles)} triangles)")
    from prnet_keras.inference import get_detector

    results = {"environment": env, "scene": sc["what"], "repeats": args.repeats, "batch": args.batch,
               "total_outputs": list(WRITE_OUTPUTS),
               "detector": f"mtcnn ({get_detector('mtcnn').engine} engine), min confidence 0.9, min face 40 px",
               "detector_engines_ms": detector_rows(sc["image"], args.repeats),
               "n_vertices": sc["layout"].n_vertices, "n_triangles": int(len(sc["layout"].triangles)), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("resfcn256", "light"):
            keras.utils.set_random_seed(0)  # the same weights every run: conversions are cached
            model = build_model(name)
            folded = fold_batch_norm(model)  # what Predictor / load_network run
            forward, used = keras_forward(folded, engine)
            network = Network(name, "keras", sc["layout"], forward, 256, model, args.batch, used)
            stages = pipeline(sc, network, args.repeats, Path(tmp))
            per_image = {k: median_ms(v) for k, v in stages.items()
                         if k != "faces_detected" and not k.startswith("cpu_")}
            cpu_ms = {k[4:]: median_ms(v) for k, v in stages.items() if k.startswith("cpu_")}
            batch_s = time_network(network.predict, args.batch, max(3, args.repeats // 3))
            ips = round(args.batch / statistics.median(batch_s), 1)
            # for comparison: the Keras forward of the folded and of the unfolded model
            keras_ms = median_ms(time_network(keras_forward(folded, "keras")[0], 1, args.repeats))
            unfolded_ms = median_ms(time_network(keras_forward(model, "keras")[0], 1, args.repeats))
            results["models"][name] = {"params": int(model.count_params()), "engine": used, "per_image_ms": per_image,
                                       "per_image_process_cpu_ms": cpu_ms,
                                       "faces_detected": int(stages["faces_detected"][0]),
                                       "network_batch1_keras_ms": keras_ms,
                                       "network_batch1_keras_unfolded_ms": unfolded_ms,
                                       f"batch{args.batch}_ms": median_ms(batch_s), "batch_images_per_s": ips}
            print(f"{name} ({used} engine) wall: " + " ".join(f"{k}={v}ms" for k, v in per_image.items()))
            print(f"{name} process cpu (all threads): " + " ".join(f"{k}={v}ms" for k, v in cpu_ms.items()))
            print(f"{name}: batch {args.batch}: {median_ms(batch_s)} ms = {ips} images/s | batch 1 with Keras: "
                  f"{keras_ms} ms folded, {unfolded_ms} ms without BN folding")
            if not args.no_int8:
                results["models"][name]["int8"] = int8_rows(name, folded, model, sc, args, Path(tmp))
        all_ms = median_ms(time_writes(sc, ALL_OUTPUTS, args.repeats, Path(tmp)))
        results["write_all_outputs_ms"] = {"outputs": list(ALL_OUTPUTS), "median_ms": all_ms}
        print(f"writing all {len(ALL_OUTPUTS)} outputs ({','.join(ALL_OUTPUTS)}): {all_ms} ms (not in the total)")
    if hasattr(os, "getloadavg"):
        results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    out = ROOT / "bench" / "results" / "inference.json"
    write_json(out, results)
    r = results["models"]["resfcn256"]["per_image_ms"]
    print(f"wrote {out.relative_to(ROOT)}")
    int8 = results["models"]["resfcn256"].get("int8", {}).get("per_image_ms")
    tail = f" ms_net_int8={int8['network']} ms_total_int8={int8['total']}" if int8 else ""
    print(f"inference ms_net={r['network']} ms_total={r['total']}{tail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
