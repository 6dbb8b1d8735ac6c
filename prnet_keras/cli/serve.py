"""prnet-serve: the HTTP server (PRNet-keras-compatible API, native /v1 API, page at /ui).

    prnet-serve --model run/model.keras --host 127.0.0.1 --port 20000
    prnet-serve --model untrained:light          # smoke tests / benchmarks: random weights

The API key, when wanted, is read from an environment variable (``--api-key-env``,
default PRNET_API_KEY) so it never appears in the process list.

Configuration: the packaged defaults, then ``--config NAME|FILE``, then the flags. It uses
the sections ``server`` (address, limits, pool), ``inference`` (detector, min_confidence,
min_face_size, engine), ``crop`` (the crop rules of detections, given boxes / landmarks and
/extract's ground truth) and ``evaluate`` (icp, icp_method of /evaluate).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from prnet_keras.cli import cli_parser, run_cli
from prnet_keras.errors import PRNetError

UNTRAINED_PREFIX = "untrained:"


def build_parser() -> argparse.ArgumentParser:
    p = cli_parser(__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True,
                   help="model: .keras file, SavedModel folder or official checkpoint prefix; "
                        "'untrained:light' / 'untrained:resfcn256' for random weights (testing only)")
    p.add_argument("--uv-data", default=None,
                   help="UV layout: official uv-data folder or .npz (default: beside the model)")
    p.add_argument("--bfm", default="synthetic",
                   help="morphable model the UV layout came from (for /extract and /evaluate with fit .mat files)")
    p.add_argument("--detector", default=None, choices=("mtcnn", "opencv", "dlib"),
                   help="face detector (default: configuration inference.detector)")
    p.add_argument("--min-confidence", type=float, default=None,
                   help="MTCNN score threshold (default: configuration inference.min_confidence)")
    p.add_argument("--min-face-size", type=int, default=None,
                   help="smallest face searched, pixels (default: configuration inference.min_face_size)")
    p.add_argument("--engine", default=None, choices=("auto", "keras", "openvino"),
                   help="what runs the network: auto (OpenVINO on CPU when installed, else Keras), keras, openvino "
                        "(default: configuration inference.engine)")
    p.add_argument("--host", default=None, help="bind address (default: configuration server.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: configuration server.port, 20000)")
    p.add_argument("--config", default=None, help="configuration: a JSON file, or a NAME looked up as "
                   "./configure/NAME.json, then among the packaged ones")
    p.add_argument("--api-key-env", default="PRNET_API_KEY",
                   help="environment variable holding the API key; unset or empty = no key required")
    p.add_argument("--workers", type=int, default=None,
                   help="inference threads (default: configuration server.workers)")
    p.add_argument("--queue-size", type=int, default=None,
                   help="requests that may wait for a worker before 503 (default: configuration server.queue_size)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per request before 504 (default: configuration server.timeout_s)")
    p.add_argument("--batch-window-ms", type=float, default=5.0,
                   help="micro-batch the network calls of concurrent requests, waiting up to this long for company "
                        "(0 = off); pays off with --workers > 2")
    p.add_argument("--max-batch", type=int, default=8,
                   help="crops per batched network call (the network's working memory grows with it: ~50 MB per "
                        "crop for the light network under OpenVINO, kept once allocated)")
    p.add_argument("--cors-origin", action="append", default=None, metavar="ORIGIN",
                   help="allow browser calls from this origin (repeatable; default: configuration server.cors_origins, "
                        "none: CORS off)")
    p.add_argument("--icp", default=None, choices=("scipy", "open3d", "simpleicp"),
                   help="ICP backend for /evaluate (default: configuration evaluate.icp)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                   help="server log verbosity (uvicorn and prnet_keras)")
    return p


def build_predictor(model: str, uv_data: str | None, bfm: str, detector: str = "mtcnn", engine: str = "auto",
                    **options: Any) -> tuple[Any, dict[str, Any]]:
    """(Predictor, model info) for a model path or ``untrained:<name>``; ``engine`` runs Keras
    networks (``model.engines``); ``options`` go to the Predictor (min_confidence,
    min_face_size, crop_config)."""
    from prnet_keras.inference import Predictor

    if model.startswith(UNTRAINED_PREFIX):
        from prnet_keras.geometry import load_morphable_model, load_uv_layout
        from prnet_keras.model import build_model

        name = model[len(UNTRAINED_PREFIX):] or "light"
        layout = load_uv_layout(uv_data, None if uv_data else load_morphable_model(bfm))
        network = build_model(name)
        predictor = Predictor(network, layout, detector=detector, engine=engine, **options)
        return predictor, {"untrained": True, "architecture": name, "engine": predictor.engine}
    if not os.path.exists(model) and not os.path.exists(model + ".index"):
        raise PRNetError(f"--model {model}: no such file, folder or checkpoint prefix")
    predictor = Predictor.from_path(model, uv_data=uv_data, detector=detector, engine=engine, **options)
    return predictor, {"untrained": False, "engine": predictor.engine}


def serve_app(app: Any, host: str, port: int, log_level: str = "info") -> None:
    """Run ``app`` under uvicorn in this process until interrupted.

    Ctrl-C (or SIGTERM) first cancels every request's work (so uvicorn's graceful shutdown
    does not wait for a long reconstruction or ICP: those requests answer 503 within a
    moment), then uvicorn closes the connections.
    """
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            pool = getattr(getattr(app, "state", None), "pool", None)
            if pool is not None:
                pool.cancel_all("server stopping")
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_keep_alive=5,
                            timeout_graceful_shutdown=5, server_header=False)
    Server(config).run()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Ctrl-C while loading, or while serving (uvicorn shuts down, then raises it again): one line, exit 130
    return run_cli(lambda: _serve(args), "prnet-serve: stopped")


def build_server(args: argparse.Namespace) -> tuple[Any, Any]:
    """(FastAPI app, ServerSettings) from the parsed flags: the configuration is resolved here,
    once (packaged defaults, then ``--config``, then flags), and its values passed down."""
    from prnet_keras.config import load_config
    from prnet_keras.geometry import CropConfig
    from prnet_keras.server.app import create_app
    from prnet_keras.server.settings import ServerSettings

    config = load_config(args.config)
    inference, evaluate = config["inference"], config["evaluate"]
    detector = args.detector or inference["detector"]
    # Settings first: a bad flag fails before the (slow) model load.
    settings = ServerSettings.from_config(
        config["server"], api_key_env=args.api_key_env, host=args.host, port=args.port, workers=args.workers,
        queue_size=args.queue_size, timeout_s=args.timeout,
        cors_origins=None if args.cors_origin is None else tuple(args.cors_origin),
        max_image_pixels=config["data"]["max_image_pixels"],  # one image limit, shared with builds and prnet-predict
        detector=detector, model_path=args.model,
    )
    crop = CropConfig.from_dict(config["crop"])
    if args.batch_window_ms < 0 or args.max_batch < 1:
        raise PRNetError("--batch-window-ms must be >= 0 and --max-batch >= 1")
    predictor, settings.extra_info = build_predictor(
        args.model, args.uv_data, args.bfm, detector, args.engine or inference["engine"],
        min_confidence=_first(args.min_confidence, inference["min_confidence"]),
        min_face_size=_first(args.min_face_size, inference["min_face_size"]), crop_config=crop)
    if args.batch_window_ms > 0:
        from prnet_keras.server.batching import batched_predictor

        predictor = batched_predictor(predictor, args.batch_window_ms, args.max_batch)
        settings.extra_info["batching"] = {"window_ms": args.batch_window_ms, "max_batch": args.max_batch}
    settings.model_name = str(getattr(predictor.network, "name", None) or args.model)
    app = create_app(predictor, settings, morphable=args.bfm, icp_backend=args.icp or evaluate["icp"],
                     icp_method=evaluate["icp_method"], crop_config=crop)
    return app, settings


def _first(flag: Any, configured: Any) -> Any:
    return configured if flag is None else flag


def _serve(args: argparse.Namespace) -> int:
    app, settings = build_server(args)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
        logging.getLogger("prnet_keras.server").warning(
            "listening on %s without an API key: anyone who can reach this port can use the model (set $%s)",
            settings.host, args.api_key_env)
    print(f"prnet-serve: http://{settings.host}:{settings.port}/ui (page), /docs (API)", file=sys.stderr, flush=True)
    serve_app(app, settings.host, settings.port, args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
