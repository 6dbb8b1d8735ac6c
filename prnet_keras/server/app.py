"""The FastAPI application: PRNet-keras-compatible routes, native /v1 routes, the /ui page.

``create_app(predictor, settings)`` wires a :class:`FaceService` around the predictor and adds
the hardening every route shares: a request-size cap (checked on Content-Length and while
streaming), an optional API key (``X-API-Key`` or ``Authorization: Bearer``) on everything
but /healthz and the static page, CORS only when origins are configured, a bounded
inference pool (503 when saturated, 504 on time-out) and one JSON error shape:
``{"error": {"code", "field", "message"}}``.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from prnet_keras.server import compat, native, swap
from prnet_keras.server.codec import ApiError, json_depth
from prnet_keras.server.pool import InferencePool
from prnet_keras.server.responses import JSONSafeResponse, error_response
from prnet_keras.server.service import FaceService
from prnet_keras.server.settings import ServerSettings

log = logging.getLogger("prnet_keras.server")
STATIC_DIR = Path(__file__).resolve().parent / "static"
# Reachable without the API key: health for load balancers; the page, the API docs (Swagger UI,
# its OAuth2 redirect page, ReDoc) with their assets, and the schema hold no data (every call
# the page or "Try it out" makes carries the key the user types in).
DOCS_ASSETS = "/docs/static"
PUBLIC_PATHS = ("/healthz", "/ui", "/ui/", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc")
PUBLIC_PREFIXES = ("/ui/static/", DOCS_ASSETS + "/")


def _field_from_loc(loc: tuple) -> str | None:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or None


# Routes whose body must be JSON (FastAPI would otherwise answer a wrong type with a 422
# "field required"): anything else is 415.
JSON_ROUTES = ("/predict", "/extract", "/evaluate")


class LimitsMiddleware:
    """Pure ASGI, before any route: 401 without the key; 413 on a body larger than the limit
    (declared, or counted while a chunked body streams in: it is read here, whole, and
    replayed to the route); 415 for a non-JSON body on the JSON routes; 422 for JSON nested
    deeper than ``max_json_depth``."""

    def __init__(self, app: Callable, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        method = scope.get("method", "GET")
        if self.settings.api_key and not _is_public(path) and method != "OPTIONS":
            if not _key_ok(headers, self.settings.api_key):
                await error_response(401, "unauthorized",
                                     "missing or wrong API key (send X-API-Key or Authorization: Bearer)",
                                     "X-API-Key", {"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        limit = self.settings.max_request_bytes
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                response = error_response(400, "bad_request", "Content-Length is not a number", "Content-Length")
                await response(scope, receive, send)
                return
            if int(declared) > limit:
                await error_response(413, "too_large", f"request body of {declared} bytes exceeds the limit {limit}",
                                     "body")(scope, receive, send)
                return
        if method not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if path in JSON_ROUTES and ctype and not (ctype == "application/json" or ctype.endswith("+json")):
            await error_response(415, "unsupported_media_type", f"Content-Type {ctype!r}: this route takes "
                                 "application/json", "Content-Type")(scope, receive, send)
            return
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:  # chunked uploads without Content-Length
                await error_response(413, "too_large", f"request body exceeds the limit {limit} bytes",
                                     "body")(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if (not ctype or "json" in ctype) and json_depth(body) > self.settings.max_json_depth:
            await error_response(422, "invalid_json", f"body: JSON nested deeper than {self.settings.max_json_depth} "
                                 "levels", "body")(scope, receive, send)
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only http.disconnect, when the client leaves

        await self.app(scope, replay, send)


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _key_ok(headers: dict[str, str], key: str) -> bool:
    given = headers.get("x-api-key")
    auth = headers.get("authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), key.encode("utf-8"))


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> Response:
        errs = exc.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        field = _field_from_loc(tuple(first.get("loc", ())))
        code = "invalid_json" if first.get("type") == "json_invalid" else "invalid_field"
        msg = f"{field or 'body'}: {first.get('msg', 'invalid value')}"
        if len(errs) > 1:
            msg += f" (and {len(errs) - 1} more problem(s))"
        return error_response(422, code, msg, field or "body")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), None, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(req: Request, exc: Exception) -> Response:
        # the boundary of last resort: bad input never gets here (every input is checked first)
        log.error("unhandled server error in %s %s", req.method, req.url.path, exc_info=exc)
        return error_response(500, "internal_error", f"internal error ({exc.__class__.__name__}); see the server log")


def _document_api_key(app: FastAPI) -> None:
    """Declare the X-API-Key header in the OpenAPI schema so /docs offers "Authorize"."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
            for path, ops in schema.get("paths", {}).items():
                if not _is_public(path):
                    for op in ops.values():
                        op["security"] = [{"ApiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(predictor: Any, settings: ServerSettings | None = None, *, layout: Any = None,
               morphable: Any = "synthetic", icp_backend: str = "open3d", icp_method: str = "point_to_plane",
               crop_config: Any = None, service: FaceService | None = None) -> FastAPI:
    """The server application around ``predictor`` (see :class:`FaceService` for the other options)."""
    from prnet_keras import __version__

    settings = settings or ServerSettings.from_config()  # the defaults, the API key from $PRNET_API_KEY
    service = service or FaceService(predictor, layout=layout, morphable=morphable, detector=settings.detector,
                                     icp_backend=icp_backend, icp_method=icp_method, crop_config=crop_config)
    pool = InferencePool(settings.workers, settings.queue_size, settings.timeout_s)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown()

    # /docs (Swagger UI) and /redoc load their scripts, styles and icon from DOCS_ASSETS, served
    # from the fastapi-offline package: no CDN, so the docs work on machines without internet.
    app = FastAPIOffline(
        static_url=DOCS_ASSETS, redoc_url=None,
        title="prnet-keras server", version=__version__, default_response_class=JSONSafeResponse, lifespan=lifespan,
        description="PRNet 3D face reconstruction: PRNet-keras-compatible API (/predict, /extract, /evaluate), "
                    "native API (/v1/...: reconstruction, face swap), and a page for people at /ui.",
    )
    app.state.settings = settings
    app.state.service = service
    app.state.pool = pool
    _install_error_handlers(app)
    app.include_router(compat.router)
    app.include_router(native.router)
    app.include_router(swap.router)

    @app.get("/ui", include_in_schema=False)
    async def ui_page() -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                            headers={"Cache-Control": "no-cache"})

    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")

    @app.get("/redoc", include_in_schema=False)
    async def redoc_page(request: Request) -> Response:
        from fastapi.openapi.docs import get_redoc_html

        root = request.scope.get("root_path", "")
        page = get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png", with_google_fonts=False)
        # ReDoc's bundle shows its maker's logo from a CDN; images from elsewhere are refused, so
        # the page asks nothing of the internet (the logo just does not show).
        page.headers["Content-Security-Policy"] = "img-src 'self' data:"
        return page

    if settings.api_key:
        _document_api_key(app)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "X-API-Key", "Authorization"],
                           expose_headers=["X-Swap-Pairs", "X-Changed-Pixels"])
    app.add_middleware(LimitsMiddleware, settings=settings)
    return app

