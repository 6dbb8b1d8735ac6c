"""The API docs pages are served whole by the app: every script, style and icon they load comes
from this server (an installed package), they need no API key, and the public paths all exist.
(tests/server/test_browser.py renders them in Chromium with the network blocked.)"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from prnet_keras.server.app import PUBLIC_PATHS, create_app


@pytest.fixture(scope="module")
def keyed_client(predictor, helpers):
    with TestClient(create_app(predictor, helpers.make_settings(api_key="s3cret"))) as c:
        yield c


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_local_assets_without_the_key(keyed_client, page):
    r = keyed_client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assets = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]+)['"]""", r.text)
    assets += re.findall(r"""(?:url|spec-url)\s*[:=]\s*['"]([^'"]+)['"]""", r.text)
    assert assets and all(a.startswith("/") and not a.startswith("//") for a in assets), assets
    for asset in set(assets):
        got = keyed_client.get(asset)
        assert got.status_code == 200 and len(got.content) > 100, asset
    assert "cdn." not in r.text


def test_redoc_refuses_images_from_elsewhere(keyed_client):
    # ReDoc's bundle asks a CDN for its maker's logo; the policy keeps that request in the browser
    assert keyed_client.get("/redoc").headers["content-security-policy"] == "img-src 'self' data:"


def test_every_public_path_exists_and_the_rest_needs_the_key(keyed_client):
    for path in PUBLIC_PATHS:
        assert keyed_client.get(path).status_code == 200, path
    assert keyed_client.get("/v1/info").status_code == 401
    assert keyed_client.get("/docs/static/../../v1/info").status_code in (401, 404)
