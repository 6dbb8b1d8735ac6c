"""prnet_keras.server: the HTTP server (FastAPI).

    from prnet_keras.server import ServerSettings, create_app
    app = create_app(predictor, ServerSettings.from_config())   # then run it with uvicorn

Routes: PRNet-keras compatible ``/``, ``/predict``, ``/extract``, ``/evaluate``; native
``/v1/reconstruct``, ``/v1/info``, ``/healthz``; the page ``/ui``; OpenAPI at ``/docs``.
"""

from prnet_keras.server.app import create_app
from prnet_keras.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
