"""Run the server with the tests' cheap dome predictor under a real uvicorn (used by test_uvicorn.py).

    python tests/server/dome_server.py --port 8765 [--api-key-env NAME] [--workers 2 --queue-size 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import dome_layout, dome_network, make_settings, stub_detector  # noqa: E402

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
    args = p.parse_args()
    key = ServerSettings.from_config(api_key_env=args.api_key_env).api_key if args.api_key_env else None
    settings = make_settings(api_key=key, workers=args.workers, queue_size=args.queue_size,
                             max_request_bytes=20_000_000)
    app = create_app(Predictor(dome_network, dome_layout(), detector=stub_detector), settings)
    serve_app(app, "127.0.0.1", args.port, "warning")


if __name__ == "__main__":
    main()
