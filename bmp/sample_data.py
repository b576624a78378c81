"""Where the shared sample data lives: ``$BMP_SHARED`` (default: the ``shared``
folder beside the checkout), whose ``data/coco`` holds COCO images with their
``annotations.json``. A GPU kit carries its own copy and points BMP_SHARED there."""

from __future__ import annotations

import os
from pathlib import Path


def shared_dir(checkout: Path | None = None) -> Path:
    """``$BMP_SHARED``, else the ``shared`` folder beside ``checkout``.

    ``checkout`` defaults to the working folder (``../shared``), since README's
    commands run from the project root; the tests pass their own checkout so
    that they find the data from any working folder. tools/kit.py loads this
    file by its path: it runs on a bare Python, before bmp is installed."""
    beside = Path("..") if checkout is None else checkout.parent
    return Path(os.environ.get("BMP_SHARED", beside / "shared"))


def shared_samples_dir(checkout: Path | None = None) -> Path:
    """The shared COCO sample folder, ``shared_dir(checkout)/data/coco``."""
    return shared_dir(checkout) / "data" / "coco"
