"""Run the server with the tests' cheap dome predictor under a real uvicorn (used by test_uvicorn.py
and test_concurrency.py).

    python tests/server/dome_server.py --port 8765 [--api-key-env NAME] [--workers 2 --queue-size 8]
        [--detector stub|opencv|mtcnn] [--layout dome|synthetic] [--network-delay S] [--timeout S]

``--network-delay`` makes every network call take S seconds (checking for cancellation every
10 ms, as the library's own stages do), to exercise time-outs and stopping.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import dome_layout, dome_network, make_settings, stub_detector  # noqa: E402

from prnet_keras.cancel import check_cancelled  # noqa: E402
from prnet_keras.cli.serve import serve_app  # noqa: E402
from prnet_keras.inference import Predictor  # noqa: E402
from prnet_keras.server.app import create_app  # noqa: E402
from prnet_keras.server.settings import ServerSettings  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--api-key-env", default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--queue-size", type=int, default=8)
    p.add_argument("--detector", default="stub")
    p.add_argument("--layout", default="dome", choices=("dome", "synthetic"))
    p.add_argument("--network-delay", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=30.0)
    args = p.parse_args()
    key = ServerSettings.from_config(api_key_env=args.api_key_env).api_key if args.api_key_env else None
    settings = make_settings(api_key=key, workers=args.workers, queue_size=args.queue_size,
                             max_request_bytes=20_000_000, timeout_s=args.timeout,
                             detector=None if args.detector == "stub" else args.detector)
    if args.layout == "synthetic":
        from prnet_keras.geometry import load_morphable_model, load_uv_layout

        layout = load_uv_layout(None, load_morphable_model("synthetic"))
    else:
        layout = dome_layout()

    def network(crops):
        end = time.monotonic() + args.network_delay
        while time.monotonic() < end:
            check_cancelled()
            time.sleep(0.01)
        return dome_network(crops)

    detector = stub_detector if args.detector == "stub" else args.detector
    app = create_app(Predictor(network, layout, detector=detector), settings)
    serve_app(app, "127.0.0.1", args.port, "warning")


if __name__ == "__main__":
    main()
