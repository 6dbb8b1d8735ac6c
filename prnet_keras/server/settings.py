"""Server settings: limits, pool sizes, auth and CORS (the ``server`` configuration section).

Every limit the server enforces lives here so tests and the CLI can tighten or loosen
them without touching the routes. The defaults are the packaged ``server`` section.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from prnet_keras.data.images import MAX_IMAGE_PIXELS
from prnet_keras.errors import InputError
from prnet_keras.matfile import MAX_MAT_BYTES

DEFAULT_API_KEY_ENV = "PRNET_API_KEY"
# What a configuration file may set (the rest is runtime: the key comes from the environment).
# max_image_pixels is the configuration's data.max_image_pixels (one limit for every image reader).
CONFIG_KEYS = ("host", "port", "max_request_bytes", "max_mat_bytes", "max_faces_per_image", "max_images_per_request",
               "max_faces_per_request", "max_mesh_vertices", "max_response_bytes", "max_json_depth", "workers",
               "queue_size", "timeout_s", "cors_origins")


@dataclasses.dataclass
class ServerSettings:
    """Limits and switches of one server instance.

    max_request_bytes: whole request body (bytes). max_image_pixels: width·height of one
    image, checked from its header before decoding (the configuration's one
    ``data.max_image_pixels``, shared with dataset builds and ``prnet-predict``).
    max_mat_bytes: memory the arrays of one ``.mat`` may take (declared sizes checked before
    inflating). max_faces_per_image / max_images_per_request / max_faces_per_request: counts
    (boxes, landmark sets and mats count as faces). max_mesh_vertices: vertices of a mesh
    sent to /evaluate (bounds ICP). max_response_bytes: size of one answer (meshes are large).
    max_json_depth: nesting of a JSON body. workers: threads running inference; queue_size:
    requests allowed to wait for a worker (beyond that: 503). timeout_s: seconds one request
    may take before it is answered 504 and its work is cancelled.
    api_key: required key (None = no auth). cors_origins: allowed origins (empty = CORS off).
    """

    host: str = "127.0.0.1"
    port: int = 20000
    max_request_bytes: int = 20_000_000
    max_image_pixels: int = MAX_IMAGE_PIXELS
    max_mat_bytes: int = MAX_MAT_BYTES
    max_faces_per_image: int = 16
    max_images_per_request: int = 8
    max_faces_per_request: int = 32
    max_mesh_vertices: int = 200_000
    max_response_bytes: int = 100_000_000
    max_json_depth: int = 32
    workers: int = 8
    queue_size: int = 8
    timeout_s: float = 60.0
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    detector: str | None = None
    model_name: str = "unknown"
    model_path: str | None = None
    extra_info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("max_request_bytes", "max_image_pixels", "max_mat_bytes", "max_faces_per_image",
                     "max_images_per_request", "max_faces_per_request", "max_mesh_vertices", "max_response_bytes",
                     "max_json_depth", "workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"server setting {name}: expected a positive integer, got {value!r}")
        if not isinstance(self.queue_size, int) or self.queue_size < 0:
            raise InputError(f"server setting queue_size: expected an integer >= 0, got {self.queue_size!r}")
        if not (isinstance(self.timeout_s, (int, float)) and self.timeout_s > 0):
            raise InputError(f"server setting timeout_s: expected a positive number, got {self.timeout_s!r}")
        if self.api_key == "":
            self.api_key = None
        self.cors_origins = tuple(self.cors_origins)

    @classmethod
    def from_config(
        cls, server: Mapping[str, Any] | None = None, api_key_env: str | None = DEFAULT_API_KEY_ENV, **overrides: Any
    ) -> "ServerSettings":
        """Settings from a ``server`` configuration section (None: the defaults), the API key
        from ``$api_key_env``, then ``overrides`` (None values ignored).

        ``max_image_pixels`` is not a key of that section: it is the configuration's one
        ``data.max_image_pixels`` (shared with dataset builds and ``prnet-predict``), which the
        entry point passes as an override.
        """
        cfg = {k: v for k, v in (server or {}).items() if k != "_doc"}
        unknown = set(cfg) - set(CONFIG_KEYS)
        if unknown:
            raise InputError(f"configuration section server: unknown keys {sorted(unknown)}; "
                             f"known: {', '.join(CONFIG_KEYS)}")
        values: dict[str, Any] = dict(cfg)
        if api_key_env:
            values["api_key"] = os.environ.get(api_key_env) or None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def public_limits(self) -> dict[str, Any]:
        """The limits a client may rely on (reported by GET /v1/info)."""
        return {
            "max_request_bytes": self.max_request_bytes,
            "max_image_pixels": self.max_image_pixels,
            "max_mat_bytes": self.max_mat_bytes,
            "max_faces_per_image": self.max_faces_per_image,
            "max_images_per_request": self.max_images_per_request,
            "max_faces_per_request": self.max_faces_per_request,
            "max_mesh_vertices": self.max_mesh_vertices,
            "max_response_bytes": self.max_response_bytes,
            "max_json_depth": self.max_json_depth,
            "workers": self.workers,
            "queue_size": self.queue_size,
            "timeout_s": self.timeout_s,
            "auth": self.api_key is not None,
        }
