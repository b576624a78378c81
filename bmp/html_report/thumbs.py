"""Small JPEG overlays of one image, one per loop iteration, for the HTML report.

Each is drawn at thumbnail size (labels then stay legible in the page) from the
logged COCO results: no model runs. A thumbnail's file name carries a digest of
everything it shows, so a re-run reuses the ones that are still right and never
shows a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..coco import coco_to_instances
from ..vis import draw_instances, write_image

#: Long side of every thumbnail, in pixels: the page's size and the disk's do not
#: grow with the images' resolution.
THUMB_LONG_SIDE = 480
JPEG_QUALITY = 80
#: Part of every digest: a change of drawing invalidates old thumbnails.
_DRAWING_VERSION = "1"

#: BGR colours of the highlight around a person new in the iteration shown.
NEW_COLOR = (0, 230, 255)  # yellow: no ground truth to judge by
FOUND_COLOR = (80, 220, 80)  # green: matched a ground-truth person
FALSE_POSITIVE_COLOR = (60, 60, 255)  # red: matched nobody
MISSED_COLOR = (255, 0, 255)  # magenta, dashed: a ground-truth person never found


@dataclass
class View:
    """What one thumbnail shows: ``people`` (COCO results, original pixels),
    the highlight colour of each (None: not new here), and the (x, y, w, h)
    boxes of ground-truth persons never found."""

    people: list[dict[str, Any]]
    highlight: list[tuple[int, int, int] | None]
    missed: list[list[float]] = field(default_factory=list)


def thumbnail_names(key: str, image_path: Path, views: list[View]) -> list[str]:
    """The file name of each view's thumbnail (``key`` must be a safe file stem)."""
    stat = os.stat(image_path)
    names = []
    for k, view in enumerate(views, 1):
        content = json.dumps([_DRAWING_VERSION, THUMB_LONG_SIDE, JPEG_QUALITY, str(image_path), stat.st_size,
                              stat.st_mtime_ns, view.people, view.highlight, view.missed], sort_keys=True)
        names.append(f"{key}_it{k}_{hashlib.sha1(content.encode()).hexdigest()[:10]}.jpg")
    return names


def write_thumbnails(folder: Path, names: list[str], image_path: Path, views: list[View]) -> None:
    """Draw the views whose thumbnail is not in ``folder`` yet (each written atomically)."""
    todo = [(name, view) for name, view in zip(names, views, strict=True) if not (folder / name).is_file()]
    if not todo:
        return
    from ..images import load_image

    small, factor = shrink(load_image(image_path))
    for name, view in todo:
        write_image(folder / name, render(small, factor, view), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])


def shrink(image_rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """The image with its long side at most :data:`THUMB_LONG_SIDE`, and the factor applied."""
    h, w = image_rgb.shape[:2]
    factor = min(1.0, THUMB_LONG_SIDE / max(h, w))
    if factor == 1.0:
        return image_rgb, factor
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(image_rgb, size, interpolation=cv2.INTER_AREA), factor


def render(small_rgb: np.ndarray, factor: float, view: View) -> np.ndarray:
    """The BGR overlay of ``view`` on the image shrunk by ``factor``."""
    out = draw_instances(small_rgb, coco_to_instances(view.people, small_rgb.shape[:2], scale=factor),
                         show_prompts=False)
    for person, color in zip(view.people, view.highlight, strict=True):
        if color is not None:
            x, y, w, h = (v * factor for v in person["bbox"])
            cv2.rectangle(out, (round(x) - 3, round(y) - 3), (round(x + w) + 3, round(y + h) + 3), color, 2)
    for box in view.missed:
        _dashed_box(out, [v * factor for v in box], MISSED_COLOR)
    return out


def _dashed_box(out: np.ndarray, xywh: list[float], color: tuple[int, int, int], dash: int = 6) -> None:
    x, y, w, h = xywh
    corners = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
    for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1], strict=True):
        length = max(abs(bx - ax), abs(by - ay))
        for start in np.arange(0, length, 2 * dash):
            t0, t1 = start / max(length, 1), min(start + dash, length) / max(length, 1)
            p0 = (round(ax + (bx - ax) * t0), round(ay + (by - ay) * t0))
            p1 = (round(ax + (bx - ax) * t1), round(ay + (by - ay) * t1))
            cv2.line(out, p0, p1, color, 2)
