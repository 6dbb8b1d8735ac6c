"""The /ui page in headless Chromium: upload a photo, wait for the mesh, screenshot, check the canvas is drawn.

Skips (with the reason) when chromium / chromedriver or selenium are missing.
"""

from __future__ import annotations

import io
import os
import sys

import numpy as np
import pytest


BACKGROUND = np.array([32, 37, 43])  # the canvas clear colour (#20252b)


@pytest.fixture(scope="module")
def browser(chromium_paths, tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager reach the network
    chrome, driver = chromium_paths
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--window-size=1200,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chrome-profile')}"):
        opts.add_argument(flag)
    try:
        drv = webdriver.Chrome(service=Service(driver), options=opts)
    except Exception as exc:  # noqa: BLE001 - a broken local browser install is an environment problem
        pytest.skip(f"headless chromium could not start: {exc.__class__.__name__}: {str(exc)[:200]}")
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


@pytest.fixture(scope="module")
def live_server():
    sys.path.insert(0, os.path.dirname(__file__))
    from test_uvicorn import free_port, start, stop  # noqa: E402  (same folder; importlib mode)

    port = free_port()
    proc = start([sys.executable, "tests/server/dome_server.py", "--port", str(port)], port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def drawn_fraction(png: bytes) -> float:
    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.int16)
    return float((np.abs(a - BACKGROUND).sum(-1) > 30).mean())


def upload_and_wait(browser, path, timeout=60):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.find_element(By.ID, "file").send_keys(str(path))
    WebDriverWait(browser, timeout).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("ready", "noface", "error"))
    return browser.find_element(By.TAG_NAME, "body")


@pytest.mark.parametrize("query, expected", [("", None), ("?renderer=2d", "2d")])
def test_upload_photo_shows_rotatable_mesh(browser, live_server, helpers, tmp_path, query, expected):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(helpers.image_bytes(240, 320))
    browser.get(f"{live_server}/ui{query}")
    body = upload_and_wait(browser, photo)
    assert body.get_attribute("data-state") == "ready", browser.find_element(By.ID, "status").text
    renderer = body.get_attribute("data-renderer")
    assert renderer in ("webgl", "2d") and (expected is None or renderer == expected)
    mesh = browser.find_element(By.ID, "mesh")
    before = mesh.screenshot_as_png
    (tmp_path / "mesh.png").write_bytes(before)
    browser.save_screenshot(str(tmp_path / "page.png"))
    assert drawn_fraction(before) > 0.05, f"mesh canvas looks empty ({renderer})"
    assert drawn_fraction(browser.find_element(By.ID, "photo").screenshot_as_png) > 0.5
    assert int(body.get_attribute("data-mesh-vertices")) > 1000
    # drag to rotate: the picture changes
    ActionChains(browser).move_to_element(mesh).click_and_hold().move_by_offset(80, 20).release().perform()
    after = mesh.screenshot_as_png
    assert after != before
    assert not browser.find_element(By.ID, "obj").get_property("disabled")


def test_photo_without_face_says_so(browser, live_server, helpers, tmp_path):
    from selenium.webdriver.common.by import By

    photo = tmp_path / "blank.png"
    photo.write_bytes(helpers.image_bytes(100, 100, fmt="PNG", uniform=True))
    browser.get(f"{live_server}/ui")
    body = upload_and_wait(browser, photo)
    assert body.get_attribute("data-state") == "noface"
    assert "No face" in browser.find_element(By.ID, "status").text
