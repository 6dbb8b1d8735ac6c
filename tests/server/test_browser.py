"""The /ui page and the API docs in headless Chromium: upload a photo, wait for the mesh, screenshot,
check the canvas is drawn; /docs and /redoc list the operations.

The browser resolves no host but 127.0.0.1, as on a machine without internet, and every test
checks from the browser's network log that the page asked for nothing elsewhere.
Skips (with the reason) when chromium / chromedriver or selenium are missing.
"""

from __future__ import annotations

import io
import json
import os
import sys
import urllib.request

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
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # offline: no CDN, no fonts
                 f"--user-data-dir={tmp_path_factory.mktemp('chrome-profile')}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # network requests, for offsite_requests()
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


def offsite_requests(browser, server: str) -> list[str]:
    """http(s)/ws URLs off ``server`` that the browser tried to fetch since the last call; a
    request the page's own Content-Security-Policy refused never leaves the browser and is not
    counted."""
    urls, refused = {}, set()
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message.get("method") == "Network.requestWillBeSent":
            urls[params["requestId"]] = params["request"]["url"]
        elif message.get("method") == "Network.loadingFailed" and params.get("blockedReason") == "csp":
            refused.add(params["requestId"])
    return [u for rid, u in urls.items() if rid not in refused
            and u.startswith(("http:", "https:", "ws:", "wss:")) and not u.startswith(server + "/")]


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
    assert offsite_requests(browser, live_server) == []


def test_photo_without_face_says_so(browser, live_server, helpers, tmp_path):
    from selenium.webdriver.common.by import By

    photo = tmp_path / "blank.png"
    photo.write_bytes(helpers.image_bytes(100, 100, fmt="PNG", uniform=True))
    browser.get(f"{live_server}/ui")
    body = upload_and_wait(browser, photo)
    assert body.get_attribute("data-state") == "noface"
    assert "No face" in browser.find_element(By.ID, "status").text


def test_api_docs_render_offline(browser, live_server):
    """/docs (Swagger UI) and /redoc list every operation of the schema, with their assets served
    by the app itself (the browser can reach no other host)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with urllib.request.urlopen(f"{live_server}/openapi.json", timeout=30) as r:
        schema = json.load(r)
    operations = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    assert len(operations) >= 5
    browser.get_log("performance")  # start the network log afresh
    browser.get(f"{live_server}/docs")
    WebDriverWait(browser, 60).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock-summary")) >= len(operations))
    listed = {(b.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text,
               b.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute("data-path"))
              for b in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary")}
    assert listed == operations
    assert offsite_requests(browser, live_server) == []
    browser.get(f"{live_server}/redoc")
    WebDriverWait(browser, 60).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-section-id^='operation/']")) >= len(operations))
    assert "prnet-keras server" in browser.find_element(By.TAG_NAME, "h1").text
    assert offsite_requests(browser, live_server) == []


def test_swap_with_a_second_photo(browser, live_server, helpers, tmp_path):
    """The "swap with..." control: drop a second photo, see the result, get a download link;
    a region the server's layout lacks shows the server's message."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    photo, ref = tmp_path / "photo.jpg", tmp_path / "ref.jpg"
    photo.write_bytes(helpers.image_bytes(240, 320))
    ref.write_bytes(helpers.image_bytes(200, 200, seed=3))
    browser.get(f"{live_server}/ui")
    assert browser.find_element(By.ID, "reffile").get_property("disabled")  # no photo to edit yet
    assert upload_and_wait(browser, photo).get_attribute("data-state") == "ready"

    def swapped(expect_error: bool = False):
        WebDriverWait(browser, 60).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-swap") in ("ready", "error"))
        body = browser.find_element(By.TAG_NAME, "body")
        status = browser.find_element(By.ID, "swapstatus").text
        assert body.get_attribute("data-swap") == ("error" if expect_error else "ready"), status
        return status

    browser.find_element(By.ID, "reffile").send_keys(str(ref))
    assert "face 1 ← face 1" in swapped()
    result = browser.find_element(By.ID, "swapresult")
    assert browser.execute_script("return arguments[0].naturalWidth", result) == 320
    assert browser.execute_script("return arguments[0].naturalHeight", result) == 240
    link = browser.find_element(By.ID, "swapdownload")
    assert link.get_attribute("href").startswith("blob:") and link.get_attribute("download") == "swap-face.jpg"
    assert result.is_displayed()
    # the test server's toy layout has no eye region: the page says what the server said
    browser.execute_script("document.body.dataset.swap = 'idle'")
    Select(browser.find_element(By.ID, "region")).select_by_value("eyes")
    assert "has no eyes region" in swapped(expect_error=True)
