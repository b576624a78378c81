"""A headless Chromium for the report and demo tests (selenium + Debian's
``chromium`` and ``chromium-driver``, which ``tools/install.sh`` installs).

A missing browser fails the tests that need it, with the command that installs
it; only ``BMP_WITHOUT_EXTRAS=1`` turns that into a skip, for machines that
cannot have a browser (the GPU kit's target)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXTRAS_LEFT_OUT, WITHOUT_EXTRAS

INSTALL_HINT = "bash tools/install.sh (as root on Debian: apt-get install chromium chromium-driver)"


def _find(*names: str) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def _missing(what: str) -> None:
    message = f"{what} is missing: {INSTALL_HINT}"
    if WITHOUT_EXTRAS:
        pytest.skip(f"{EXTRAS_LEFT_OUT}: {message}")
    pytest.fail(message)


@contextmanager
def headless_chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A selenium ``webdriver.Chrome`` on a headless Chromium that records the
    page's console (``console_errors(driver)``)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium")
    binary = _find("chromium", "chromium-browser", "google-chrome")
    driver_path = _find("chromedriver")
    if binary is None:
        _missing("Chromium")
    if driver_path is None:
        _missing("chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager would otherwise try to download one.
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[str]:
    """The page's console messages at level SEVERE so far."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def artifact_dir() -> Path:
    """Where browser tests keep their screenshots (``BMP_TEST_ARTIFACTS``,
    default ``outputs/test_artifacts``), kept after the run."""
    root = Path(__file__).resolve().parents[1]
    folder = Path(os.environ.get("BMP_TEST_ARTIFACTS", root / "outputs" / "test_artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
