"""`bmp demo` in a headless Chromium: upload a shared COCO image, run the lite
loop, and see what `bmp run` finds on that image, in the page and in the download."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bmp.demo.catalog import repo_configs_dir
from bmp.demo.service import DemoOptions, DemoService
from tests.browser import artifact_dir, console_errors, headless_chromium
from tests.conftest import COCO_DIR, MODELS_DIR, import_extra
from tests.test_demo import IMAGE, bmp_run_results, without_unseeded

import_extra("gradio")  # skips this module only under BMP_WITHOUT_EXTRAS=1

#: Seconds to wait for the page, the upload and the run (the lite loop takes ~2 s on a CPU).
WAIT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def serving_demo(tmp_path: Path) -> Iterator[str]:
    """The demo served from a thread, as `bmp demo --weights-dir ../shared/models
    --device cpu` serves it, and shut down after the test."""
    from bmp.demo.app import build_app, launch

    service = DemoService(DemoOptions(
        results_root=tmp_path / "results", weights_dirs=[str(MODELS_DIR)], device="cpu",
        config_folders=[repo_configs_dir()], sample_folders=[COCO_DIR],
    ))
    port = free_port()
    app = build_app(service)
    launch(app, service, "127.0.0.1", port, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()
    assert not port_open(port), "the demo server still listens after close()"


def test_upload_and_run_shows_the_people_bmp_run_finds(tmp_path):
    expected = bmp_run_results(IMAGE, tmp_path)
    with headless_chromium(1280, 1700) as driver, serving_demo(tmp_path) as demo_url:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        wait = WebDriverWait(driver, WAIT_S)
        driver.get(demo_url)
        upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#bmp-upload input[type=file]"))
        upload.send_keys(str(IMAGE))
        # Run only once the upload is stored, else the click would send no image.
        wait.until(lambda d: IMAGE.stem in d.find_element(By.ID, "bmp-upload").text)
        driver.find_element(By.ID, "bmp-run").click()
        found = wait.until(lambda d: re.search(r"(\d+) (?:people|person) \(",
                                               d.find_element(By.ID, "bmp-count").text))
        status = driver.find_element(By.ID, "bmp-status").text
        overlays = driver.find_elements(By.CSS_SELECTOR, "#bmp-gallery img")
        links = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#bmp-json a")]
        driver.save_screenshot(str(artifact_dir() / "demo_lite_000000197388.png"))
        errors = console_errors(driver)
        download = next((h for h in links if h and h.endswith("_results.json")), None)
        assert download is not None, links
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the local server only
        with no_proxy.open(download, timeout=30) as response:
            served = json.loads(response.read())

    assert int(found.group(1)) == len(expected) > 0, status
    assert "Error" not in status and "bmp_lite" in status
    assert len(overlays) == 2  # one per iteration of the lite config
    assert without_unseeded(served) == without_unseeded(expected)
    assert errors == [], errors

