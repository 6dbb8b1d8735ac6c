"""Reliability replay: hostile and malformed requests against a local prnet-serve (loopback only).

    .venv/bin/python bench/bench_fuzz.py                        # untrained light network, OpenCV detector
    .venv/bin/python bench/bench_fuzz.py --detector mtcnn --timeout 5

Starts ``prnet-serve --model untrained:light --detector D --timeout T`` (an API key set) and
replays, while sampling the server's RSS every 50 ms:

1. hand-made cases: a box of 1e300, 1000-deep JSON on a native and a compatible route, a
   974 kB .mat declaring a 12,500 x 10,000 array to /predict, /extract and /evaluate (four at
   once), a mesh .mat of 2 M vertices, landmarks for 2,000 faces, the largest /predict the
   caps allow, 8 images x 16 mats, a 30,000² PNG header, wrong Content-Type, a chunked body
   over the limit, missing / wrong keys;
2. a seeded random set of malformed bodies on every route (junk JSON, wrong types, junk
   base64, truncated images, numbers out of range);
3. bursts of 64 mixed valid requests (images of different sizes, every route);
4. heavy legal requests one at a time, each answered 504 after ``--timeout``: how long its
   work goes on after the 504 (polling /healthz until nothing is in flight) and how much CPU
   the server burns in that time.

Writes bench/results/fuzz[_DETECTOR].json; the last line is
``fuzz requests=<n> 5xx=<n> peak_rss_mb=<v> max_after_timeout_s=<v>``.
Targets: 0 x 5xx (503 busy excepted), peak RSS <= 2.5 GB, work stops <= 5 s after its 504.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_server import HOST, free_port, machine, wait_up  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"


# ---- payloads ---------------------------------------------------------------------------------
def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def jpeg(h: int, w: int, seed: int = 0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((w, h), Image.BICUBIC).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def mat(d: dict, compress: bool = False) -> bytes:
    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(buf, d, do_compression=compress)
    return buf.getvalue()


def fit_mat() -> bytes:
    """A synthetic-model fit placing a face in the middle of a 200x200 image."""
    from prnet_keras.geometry import make_pose_para

    pose = make_pose_para(np.array([0.05, 0.3, -0.02]), np.array([100.0, 95.0, 0.0]), 5e-4)
    return mat({"Pose_Para": pose, "Shape_Para": np.zeros((199, 1)), "Exp_Para": np.zeros((29, 1))})


def declared_array_bomb(rows: int = 12_500, cols: int = 10_000) -> bytes:
    """A compressed MAT v5 file whose one double array declares rows x cols (all zeros)."""
    def element(kind: int, payload: bytes) -> bytes:
        return struct.pack("<II", kind, len(payload)) + payload + b"\0" * (-len(payload) % 8)

    nbytes = rows * cols * 8
    head = (element(6, struct.pack("<II", 6, 0)) + element(5, struct.pack("<2i", rows, cols)) + element(1, b"x")
            + struct.pack("<II", 9, nbytes))
    matrix_tag = struct.pack("<II", 14, len(head) + nbytes)
    comp = zlib.compressobj(9)
    out = [comp.compress(matrix_tag + head)]
    chunk = b"\0" * (1 << 22)
    for _ in range(nbytes // len(chunk)):
        out.append(comp.compress(chunk))
    out.append(comp.compress(b"\0" * (nbytes % len(chunk))) + comp.flush())
    data = b"".join(out)
    header = b"MATLAB 5.0 MAT-file".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    return header + struct.pack("<II", 15, len(data)) + data


def big_mesh_mat(n: int) -> bytes:
    return mat({"vertices": np.zeros((n, 3)), "kptIdxs": np.arange(68), "colors": np.zeros((n, 3))}, compress=True)


def png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


# ---- request sets -----------------------------------------------------------------------------
def hand_made(mesh: str) -> list[tuple[str, str, dict]]:
    img = b64(jpeg(200, 200))
    fit = b64(fit_mat())
    bomb = b64(declared_array_bomb())
    print(f"  .mat bomb: {len(bomb) * 3 // 4} bytes declaring 12500x10000 doubles", file=sys.stderr)
    deep = "[" * 1000 + "]" * 1000
    cases = [
        ("POST", "/v1/reconstruct", {"json": {"image": img, "boxes": [[0, 0, 1e300, 1e300]]}}),
        ("POST", "/v1/reconstruct", {"content": deep, "headers": {"content-type": "application/json"}}),
        ("POST", "/predict", {"content": '{"imageMatList":' + deep + "}",
                              "headers": {"content-type": "application/json"}}),
        ("POST", "/evaluate", {"json": {"imageMatList": [{"rawImage": img, "rawOrgMats": [fit],
                                                          "rawPredictMats": [b64(big_mesh_mat(2_000_000))]}]}}),
        ("POST", "/v1/reconstruct", {"json": {"image": img, "landmarks": np.full((2000, 68, 2), 50.0).tolist()}}),
        ("POST", "/predict", {"json": {"imageMatList": [{"rawImage": img, "rawMats": [fit] * 16}] * 8}}),
        ("POST", "/predict", {"json": {"imageMatList": [{"rawImage": img, "rawMats": [fit] * 4}] * 8}}),
        ("POST", "/v1/reconstruct", {"files": {"image": ("huge.png", png_header(30_000, 30_000))}}),
        ("POST", "/predict", {"content": "hello", "headers": {"content-type": "text/plain"}}),
        ("POST", "/v1/reconstruct", {"content": (b"x" * 1_000_000 for _ in range(21)),
                                     "headers": {"content-type": "application/json"}}),
        ("GET", "/v1/info", {"headers": {"X-API-Key": "wrong"}}),
        ("GET", "/v1/info", {"headers": {"X-API-Key": None}}),
        ("GET", "/healthz", {"headers": {"X-API-Key": None}}),
    ]
    for route in ("/predict", "/extract"):
        cases.append(("POST", route, {"json": {"imageMatList": [{"rawImage": img, "rawMats": [bomb]}]}}))
    cases.append(("POST", "/evaluate", {"json": {"imageMatList": [{"rawImage": img, "rawOrgMats": [bomb],
                                                                    "rawPredictMats": [mesh]}]}}))
    cases += [("POST", "/predict", {"json": {"imageMatList": [{"rawImage": img, "rawMats": [bomb]}]}})] * 4
    return cases


def random_junk(seed: int, count: int) -> list[tuple[str, str, dict]]:
    rng = np.random.default_rng(seed)
    good = b64(jpeg(120, 160))
    junk_values = [None, True, -1, 0, 1e308, -1e308, 3.5, "", "x" * 50, [], {}, [[]], [1, 2], {"a": 1},
                   "data:image/png;base64,AAAA", b64(os.urandom(64)), good[: len(good) // 2], good]
    cases = []
    for i in range(count):
        v = lambda: junk_values[rng.integers(len(junk_values))]  # noqa: E731
        route = ["/v1/reconstruct", "/predict", "/extract", "/evaluate"][i % 4]
        if rng.random() < 0.15:
            cases.append(("POST", route, {"content": os.urandom(int(rng.integers(0, 300))),
                                          "headers": {"content-type": "application/json"}}))
        elif route == "/v1/reconstruct":
            body = {"image": v(), "outputs": [None, ["landmarks"], ["bogus"], "mesh_obj"][int(rng.integers(4))],
                    "boxes": (v() if rng.random() < 0.5
                              else rng.uniform(-1e6, 1e6, (int(rng.integers(1, 4)), 4)).tolist()),
                    "landmarks": v()}
            kept = {k: x for k, x in body.items() if x is not None or rng.random() < .5}
            cases.append(("POST", route, {"json": kept}))
        else:
            item = {"rawImage": v(), "rawMats": [v() for _ in range(int(rng.integers(0, 3)))],
                    "rawOrgMats": [v()], "rawPredictMats": [v()]}
            cases.append(("POST", route, {"json": {"matType": v() if rng.random() < .3 else "normal",
                                                   "imageMatList": [item] if rng.random() < .8 else v()}}))
    return cases


def burst(mesh: str) -> list[tuple[str, str, dict]]:
    sizes = [(120, 160), (480, 640), (900, 700), (64, 64), (333, 250), (1080, 1920), (2000, 1500), (240, 320)]
    fit = b64(fit_mat())
    out = []
    for i in range(64):
        h, w = sizes[i % len(sizes)]
        raw = jpeg(h, w, i)
        img = b64(raw)
        out.append([
            ("POST", "/v1/reconstruct", {"files": {"image": ("a.jpg", raw)}, "data": {"outputs": "landmarks,pose"}}),
            ("POST", "/v1/reconstruct", {"json": {"image": img, "boxes": [[10, 10, 60, 60]], "outputs": ["mesh_ply"]}}),
            ("POST", "/predict", {"json": {"imageMatList": [{"rawImage": img, "rawMats": []}]}}),
            ("POST", "/extract", {"json": {"imageMatList": [{"rawImage": b64(jpeg(200, 200, i)), "rawMats": [fit]}]}}),
            ("POST", "/evaluate", {"json": {"imageMatList": [{"rawImage": b64(jpeg(200, 200, i)), "rawOrgMats": [fit],
                                                              "rawPredictMats": [mesh]}]}}),
        ][i % 5])
    return out


def heavy(mesh: str) -> list[tuple[str, str, dict]]:
    """Legal requests that take longer than a short time-out."""
    fit = b64(fit_mat())
    img = b64(jpeg(200, 200))
    big = jpeg(6000, 8000)
    boxes = [[100 + 300 * k, 100, 400 + 300 * k, 400] for k in range(16)]
    return [
        ("POST", "/evaluate", {"json": {"imageMatList": [{"rawImage": img, "rawOrgMats": [fit] * 3,
                                                          "rawPredictMats": [mesh] * 3}]}}),
        ("POST", "/predict", {"json": {"imageMatList": [{"rawImage": img, "rawMats": [fit] * 2}] * 8}}),
        ("POST", "/v1/reconstruct", {"files": {"image": ("big.jpg", big)},
                                     "data": {"boxes": json.dumps(boxes), "outputs": "landmarks,pose,mesh_ply"}}),
    ]


# ---- running ----------------------------------------------------------------------------------
def send(client, base: str, req: tuple[str, str, dict]) -> tuple[str, int, float]:
    import httpx

    method, path, kw = req
    kw = dict(kw)
    headers = {"X-API-Key": KEY, **kw.pop("headers", {})}
    headers = {k: v for k, v in headers.items() if v is not None}
    t0 = time.perf_counter()
    try:
        status = client.request(method, base + path, headers=headers, **kw).status_code
    except httpx.HTTPError as exc:
        status = -1
        print(f"  {path}: {exc.__class__.__name__}: {exc}", file=sys.stderr)
    return path, status, time.perf_counter() - t0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sample_rss(pid: int, stop: threading.Event, out: dict) -> None:
    """Peak RSS overall (``out["peak"]``) and per phase (``out["phases"][out["phase"]]``)."""
    page = os.sysconf("SC_PAGE_SIZE")
    while not stop.is_set():
        try:
            rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except OSError:
            break
        out["peak"] = max(out.get("peak", 0), rss)
        phases = out.setdefault("phases", {})
        phase = out.get("phase", "start")
        phases[phase] = max(phases.get(phase, 0), rss)
        stop.wait(0.05)


def start_server(detector: str, timeout: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    base = f"http://{HOST}:{port}"
    cmd = [sys.executable, "-m", "prnet_keras.cli.serve", "--model", "untrained:light", "--detector", detector,
           "--host", HOST, "--port", str(port), "--timeout", str(timeout), "--log-level", "critical"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PRNET_API_KEY": KEY, "TF_CPP_MIN_LOG_LEVEL": "2"})
    wait_up(proc, base, 300)
    return proc, base


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def replay(proc, base: str, args, mem: dict, statuses: list, after: list) -> None:
    """Phase A (default time-out): hand-made, random, bursts. Phase B (short time-out): heavy."""
    import httpx

    with httpx.Client(timeout=600) as client:
        body = {"imageMatList": [{"rawImage": b64(jpeg(200, 200)), "rawMats": [b64(fit_mat())]}]}
        # /evaluate's predictions: a realistic one (the fit's own mesh, as a trained network would come
        # close to) for the bursts; the untrained network's collapsed mesh (every vertex in one spot,
        # the slowest case for nearest-point search) for the heavy requests
        meshes = {route: client.post(f"{base}{route}", headers={"X-API-Key": KEY}, json=body).json()[
            "imageMeshList"][0]["faceMeshList"][0]["rawMesh"] for route in ("/extract", "/predict")}
        mesh = meshes["/extract"]
        if args.phase == "A":
            mem["phase"] = "idle after warm-up"
            time.sleep(0.5)
            mem["phase"] = "hand-made"
            print("hand-made cases", file=sys.stderr)
            with ThreadPoolExecutor(8) as ex:
                statuses += [("hand-made",) + s for s in ex.map(lambda c: send(client, base, c),
                                                                   hand_made(meshes["/predict"]))]
            mem["phase"] = "random"
            print("random malformed requests", file=sys.stderr)
            with ThreadPoolExecutor(8) as ex:
                statuses += [("random",) + s for s in ex.map(lambda c: send(client, base, c),
                                                                random_junk(0, args.random))]
            for k in range(args.bursts):
                mem["phase"] = "burst"
                print(f"burst {k + 1}: 64 mixed requests at once", file=sys.stderr)
                with ThreadPoolExecutor(64) as ex:
                    statuses += [("burst",) + s for s in ex.map(lambda c: send(client, base, c), burst(mesh))]
            return
        print("heavy legal requests, one at a time, past the time-out", file=sys.stderr)
        for n, req in enumerate(heavy(meshes["/predict"])):
            mem["phase"] = f"heavy {n} {req[1]}"
            while client.get(f"{base}/healthz").json()["in_flight"]:
                time.sleep(0.05)
            path, status, wall = send(client, base, req)
            statuses.append(("heavy", path, status, wall))
            t504, cpu0 = time.perf_counter(), cpu_seconds(proc.pid)
            while client.get(f"{base}/healthz").json()["in_flight"]:
                time.sleep(0.05)
            after.append({"route": path, "status": status, "wall_s": round(wall, 2),
                          "work_after_answer_s": round(time.perf_counter() - t504, 2),
                          "cpu_after_answer_s": round(cpu_seconds(proc.pid) - cpu0, 2)})
            print(f"  {path}: {status} after {wall:.1f} s; work went on {after[-1]['work_after_answer_s']} s",
                  file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--detector", default="opencv", choices=("opencv", "mtcnn"))
    p.add_argument("--timeout", type=float, default=5.0, help="server time-out for the heavy requests, seconds")
    p.add_argument("--random", type=int, default=300, help="random malformed requests")
    p.add_argument("--bursts", type=int, default=2, help="bursts of 64 mixed requests")
    p.add_argument("--out", default=None, help="default bench/results/fuzz.json (fuzz_mtcnn.json for mtcnn)")
    args = p.parse_args(argv)
    out_path = Path(args.out or ROOT / "bench" / "results" / ("fuzz.json" if args.detector == "opencv"
                                                              else f"fuzz_{args.detector}.json"))
    statuses: list[tuple[str, str, int, float]] = []
    after: list[dict] = []
    mem: dict = {}
    alive = True
    for phase, timeout in (("A", 60.0), ("B", args.timeout)):
        args.phase = phase
        proc, base = start_server(args.detector, timeout)
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(proc.pid, stop, mem), daemon=True)
        sampler.start()
        try:
            replay(proc, base, args, mem, statuses, after)
            alive = alive and proc.poll() is None
        finally:
            stop.set()
            sampler.join()
            stop_server(proc)

    hist = Counter(s for _, _, s, _ in statuses)
    unexpected = [(kind, path, s) for kind, path, s, _ in statuses
                  if (s >= 500 and s != 503 and kind != "heavy") or s < 0]
    timed_out = [a for a in after if a["status"] == 504]
    result = {
        "benchmark": "fuzz", "detector": args.detector,
        "server": "prnet-serve --model untrained:light (defaults: 8 workers, queue 8, batching 5 ms); time-out 60 s, "
                  f"{args.timeout:g} s for the heavy requests",
        "requests": len(statuses), "status_histogram": {str(k): v for k, v in sorted(hist.items())},
        "by_set": {kind: dict(Counter(str(s) for k2, _, s, _ in statuses if k2 == kind))
                   for kind in ("hand-made", "random", "burst", "heavy")},
        "http_5xx_unexpected": len(unexpected), "unexpected": unexpected[:20], "server_alive_at_end": alive,
        "peak_rss_mb": round(mem.get("peak", 0) / 2**20, 1),
        "peak_rss_mb_by_phase": {k: round(v / 2**20, 1) for k, v in mem.get("phases", {}).items()},
        "heavy": after,
        "max_work_after_504_s": max((a["work_after_answer_s"] for a in timed_out), default=None),
        "slowest_request_s": round(max(w for *_, w in statuses), 2),
        "machine": machine(),
    }
    from prnet_keras.utils import write_json

    write_json(out_path, result)
    print(json.dumps(result, indent=2))
    print(f"fuzz requests={result['requests']} 5xx={len(unexpected)} peak_rss_mb={result['peak_rss_mb']} "
          f"max_after_timeout_s={result['max_work_after_504_s']}")
    ok = not unexpected and alive and result["peak_rss_mb"] <= 2560 and (result["max_work_after_504_s"] or 0) <= 5
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
