"""Where the shared sample data lives: ``$BMP_SHARED`` (default ``../shared``,
beside a checkout), whose ``data/coco`` holds COCO images with their
``annotations.json``. A GPU kit carries its own copy and points BMP_SHARED there."""

from __future__ import annotations

import os
from pathlib import Path


def shared_samples_dir() -> Path:
    """The shared COCO sample folder, ``$BMP_SHARED/data/coco``."""
    return Path(os.environ.get("BMP_SHARED", "../shared")) / "data" / "coco"
