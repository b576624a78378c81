"""Video: the BBox-Mask-Pose loop over frames with stable identities.

``bmp.track(video)`` yields ``(frame_index, Instances)`` with ``track_id``;
``bmp video`` (:mod:`bmp.video.cli`) writes an annotated MP4, a per-frame JSONL
and a summary. Modules: :mod:`.io` (decode/encode, PyAV or OpenCV),
:mod:`.tracking` (Hungarian matching on mask IoU + OKS), :mod:`.propagation`
(SAM 2 video memory), :mod:`.records` (JSONL), :mod:`.pipeline`.

Names are imported on first use, so ``bmp video --help`` (which imports
:mod:`bmp.video.cli`) stays light, and PyAV is imported only when a video is opened.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PriorConfig": "config", "VideoConfig": "config",
    "Frame": "io", "VideoError": "io", "VideoInfo": "io", "VideoReader": "io", "VideoWriter": "io",
    "VideoPipeline": "pipeline", "track": "pipeline",
    "Tracker": "tracking", "TrackerConfig": "tracking",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'bmp.video' has no attribute {name!r}")
