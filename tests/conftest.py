"""Shared fixtures: paths to ../shared data and small real architectures with
random weights saved as checkpoint files (loaded back through bmp.weights)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from bmp.sample_data import shared_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED = shared_dir(ROOT)
COCO_DIR = SHARED / "data" / "coco"
COCO_ANN = COCO_DIR / "annotations.json"
MODELS_DIR = SHARED / "models"
#: The GPU kit leaves PyAV out (tools/kit.py): only where this says so may the
#: video tests skip for want of it; anywhere else its absence fails them.
WITHOUT_PYAV = os.environ.get("BMP_WITHOUT_PYAV") == "1"
PYAV_LEFT_OUT = "BMP_WITHOUT_PYAV=1: PyAV is not installed (the GPU kit leaves it out)"


def import_pyav() -> ModuleType:
    """``import av`` for a video test module, or skip the module under BMP_WITHOUT_PYAV=1."""
    if WITHOUT_PYAV:
        return pytest.importorskip("av", reason=PYAV_LEFT_OUT)
    import av

    return av


#: Likewise the optional extras' packages (Gradio, supervision) and the browser
#: tests' selenium + Chromium: only BMP_WITHOUT_EXTRAS=1 lets their tests skip.
WITHOUT_EXTRAS = os.environ.get("BMP_WITHOUT_EXTRAS") == "1"
EXTRAS_LEFT_OUT = "BMP_WITHOUT_EXTRAS=1: the optional extras and the browser are not installed"


def import_extra(name: str) -> ModuleType:
    """``import name`` (an optional extra) for a test module, or skip the module
    under BMP_WITHOUT_EXTRAS=1 when it is missing."""
    if WITHOUT_EXTRAS:
        return pytest.importorskip(name, reason=EXTRAS_LEFT_OUT)
    return importlib.import_module(name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Video tests that reach PyAV through bmp.video rather than importing it."""
    if not WITHOUT_PYAV:
        return
    try:
        import av  # noqa: F401
    except ImportError:
        pass
    else:
        return
    skip = pytest.mark.skip(reason=PYAV_LEFT_OUT)
    for item in items:
        if item.path.name.startswith("test_video"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never read or write the user's real checkpoint cache, never download."""
    monkeypatch.setenv("BMP_HOME", str(tmp_path_factory.getbasetemp() / "bmp_home"))
    monkeypatch.setenv("BMP_OFFLINE", "1")
    monkeypatch.delenv("BMP_WEIGHTS_DIR", raising=False)


@contextmanager
def offline_bmp_home(tmp_path_factory) -> Iterator[None]:
    """The isolation of ``_isolated_cache`` for module-scoped fixtures, which
    run before it: no download, and a cache under the session's temp folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BMP_OFFLINE", "1")
        mp.setenv("BMP_HOME", str(tmp_path_factory.getbasetemp() / "bmp_home"))
        yield


@pytest.fixture(scope="session")
def coco_images() -> list[Path]:
    images = sorted(COCO_DIR.glob("*.jpg"))
    if not images:
        pytest.fail(f"shared COCO images missing in {COCO_DIR}")
    return images


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """RTMDet-Ins-tiny, RTMPose-t and SAM 2.1 Hiera-T with random weights, each
    saved the way its official checkpoint is laid out."""
    from tests.tiny_models import save_tiny_checkpoints

    folder = tmp_path_factory.mktemp("tiny_weights")
    save_tiny_checkpoints(folder)
    return folder


def rng_pose(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 100, size=(17, 2)).astype(np.float32)


@pytest.fixture(scope="session")
def people_with_masks():
    """A shared COCO image with its ground-truth people (boxes and masks)."""
    from bmp.images import load_image
    from bmp.models.detectors import GroundTruthDetector

    det = GroundTruthDetector(str(COCO_ANN), min_area=32 * 32)
    det.select("000000197388.jpg")
    image = load_image(COCO_DIR / "000000197388.jpg")
    return image, det.detect(image)
