"""Server load test: N concurrent clients for D seconds against a local prnet-serve (loopback only).

    .venv/bin/python bench/bench_server.py                      # untrained light network, 32 clients, 30 s
    .venv/bin/python bench/bench_server.py --model run/model.keras --clients 32 --duration 30

Each client loops POST /v1/reconstruct (multipart JPEG, 320x240, one given face box, outputs
landmarks + pose) until the deadline, so every request runs exactly one network pass plus
post-processing. The server runs with ``--workers 8 --batch-window-ms 5 --queue-size <clients>``
(eight request threads whose network calls are micro-batched together): the pool admits every
client, so a 503 here means a bug and is counted as an error (503s are also reported
separately). Latency is client-side (queueing included); ``service_ms_p50`` is the server's
own decode + network + post-processing time per request. Peak memory is the server
process's peak RSS, sampled every 100 ms.
Writes bench/results/server.json; the last line is ``server rps=<v> p99_ms=<v> errors=<n>``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # loopback only, by design


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in ("prnet-keras", "tensorflow", "tensorflow-cpu", "keras", "numpy", "fastapi", "uvicorn", "httpx"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None  # shared machines: context for the figures
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(), "load_average_at_end": load,
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "python": platform.python_version(), "versions": versions}


def test_image() -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:320]
    img = np.stack([xx * 255 // 319, yy * 255 // 239, rng.integers(0, 255, (240, 320))], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def wait_up(proc: subprocess.Popen, base: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early with {proc.returncode}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit(f"server not up after {timeout} s")


def rss_sampler(pid: int, stop: threading.Event, out: dict) -> None:
    import psutil

    proc = psutil.Process(pid)
    peak = 0
    while not stop.is_set():
        try:
            peak = max(peak, proc.memory_info().rss)
        except psutil.Error:
            break
        stop.wait(0.1)
    out["peak_rss_mb"] = round(peak / 2**20, 1)


def client_loop(base: str, image: bytes, deadline: float, record: list, lock: threading.Lock) -> None:
    import httpx

    data = {"outputs": "landmarks,pose", "boxes": json.dumps([[110, 70, 210, 170]])}
    with httpx.Client(base_url=base, timeout=120) as http:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            service = None
            try:
                resp = http.post("/v1/reconstruct", files={"image": ("bench.jpg", image, "image/jpeg")}, data=data)
                status = resp.status_code
                if status == 200:  # server-side work, without the time spent queued
                    service = sum(resp.json()["timing_ms"].values())
            except httpx.HTTPError:
                status = -1
            with lock:
                record.append((status, time.perf_counter() - t0, service))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="untrained:light", help="model path, or untrained:light (default)")
    p.add_argument("--uv-data", default=None)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    p.add_argument("--workers", type=int, default=8, help="server request threads (share one micro-batched network)")
    p.add_argument("--batch-window-ms", type=float, default=5.0, help="server micro-batching window (0 = off)")
    p.add_argument("--max-batch", type=int, default=None,
                   help="crops per batched network call (default: prnet-serve's)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "server.json"))
    args = p.parse_args(argv)
    if not (1 <= args.clients <= 256 and 1 <= args.duration <= 600):
        raise SystemExit("error: --clients must be 1..256 and --duration 1..600 s")

    port = free_port()
    base = f"http://{HOST}:{port}"
    cmd = [sys.executable, "-m", "prnet_keras.cli.serve", "--model", args.model, "--detector", "opencv",
           "--host", HOST, "--port", str(port), "--workers", str(args.workers), "--queue-size", str(args.clients),
           "--batch-window-ms", str(args.batch_window_ms), "--log-level", "warning"]
    if args.max_batch:
        cmd += ["--max-batch", str(args.max_batch)]
    if args.uv_data:
        cmd += ["--uv-data", args.uv_data]
    env = {**os.environ, "PRNET_API_KEY": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        wait_up(proc, base, 300)
        image = test_image()
        warm: list = []
        client_loop(base, image, time.monotonic() + 3, warm, threading.Lock())  # compile / warm caches
        mem: dict = {}
        stop = threading.Event()
        sampler = threading.Thread(target=rss_sampler, args=(proc.pid, stop, mem), daemon=True)
        sampler.start()
        record: list = []
        lock = threading.Lock()
        t0 = time.monotonic()
        deadline = t0 + args.duration
        threads = [threading.Thread(target=client_loop,
                                    args=(base, image, deadline, record, lock)) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        stop.set()
        sampler.join()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()

    status = np.array([s for s, _, _ in record])
    lat_ok = np.array([d for s, d, _ in record if s == 200]) * 1000.0
    service = np.array([v for s, _, v in record if s == 200 and v is not None])
    ok = int((status == 200).sum())
    busy = int((status == 503).sum())
    errors = int(len(status) - ok)
    result = {
        "benchmark": "server", "model": args.model, "clients": args.clients, "duration_s": round(elapsed, 2),
        "workers": args.workers, "queue_size": args.clients, "batch_window_ms": args.batch_window_ms,
        "max_batch": args.max_batch, "request": "POST /v1/reconstruct multipart 320x240 JPEG, 1 box, landmarks+pose",
        "requests": int(len(status)), "ok": ok, "errors": errors, "http_503": busy,
        "rps": round(ok / elapsed, 2),
        "latency_ms": {"p50": round(float(np.percentile(lat_ok, 50)), 1) if ok else None,
                       "p99": round(float(np.percentile(lat_ok, 99)), 1) if ok else None,
                       "max": round(float(lat_ok.max()), 1) if ok else None},
        "service_ms_p50": round(float(np.percentile(service, 50)), 1) if service.size else None,
        "server_peak_rss_mb": mem.get("peak_rss_mb"), "machine": machine(),
    }
    from prnet_keras.utils import write_json

    write_json(args.out, result)
    print(json.dumps(result, indent=2))
    print(f"server rps={result['rps']} p99_ms={result['latency_ms']['p99']} errors={errors}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
