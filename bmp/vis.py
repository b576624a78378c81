"""Overlays: masks, skeletons, boxes and prompt points.

Every person has a colour of their own (neighbours in a crowd must be told
apart); the iteration that found them is shown by the outline of their mask
and box, in the iteration's colour, by their label, and by a small legend."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .coco import OutputError, atomic_write
from .keypoints import SKELETON
from .structures import Instances

#: Base BGR colour per loop iteration (1: blue, 2: orange, 3: green, 4: magenta...).
ITERATION_COLORS = ((230, 120, 30), (20, 140, 255), (60, 200, 60), (200, 60, 200), (40, 220, 220))


def iteration_color(iteration: int) -> tuple[int, int, int]:
    """The outline colour of people found in ``iteration``."""
    return ITERATION_COLORS[(iteration - 1) % len(ITERATION_COLORS)]


def track_color(track_id: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour per person or track id (golden-ratio
    hue steps: consecutive ids get distant hues)."""
    hue = int((track_id * 0.618033988749895 % 1.0) * 180)
    hsv = np.array([[[hue, 200, 230]]], np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def draw_instances(
    image_rgb: np.ndarray,
    people: Instances,
    kpt_thr: float = 0.3,
    mask_alpha: float = 0.45,
    show_prompts: bool = True,
) -> np.ndarray:
    """An (H, W, 3) BGR overlay ready for ``cv2.imwrite``.

    Each person is filled in a colour of their own (by ``track_id`` in video,
    labelled ``#id``; else by their index), outlined in their iteration's
    colour and labelled ``itK score``; a legend names the iteration colours."""
    canvas = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR).astype(np.float32)
    colors = [
        track_color(int(t)) if t >= 0 else track_color(i)
        for i, t in enumerate(people.track_id)
    ]
    masks = people.masks
    for mask, color in zip(masks, colors, strict=True):
        canvas[mask] = canvas[mask] * (1 - mask_alpha) + np.array(color, np.float32) * mask_alpha
    out = canvas.astype(np.uint8)
    line = max(1, int(round(max(image_rgb.shape[:2]) / 400)))
    for i, color in enumerate(colors):
        outline = iteration_color(int(people.iteration[i]))
        contours, _ = cv2.findContours(masks[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, outline, line + 1, cv2.LINE_AA)
        x0, y0, x1, y1 = (int(round(v)) for v in people.boxes[i])
        cv2.rectangle(out, (x0, y0), (x1, y1), outline, line)
        label = f"it{int(people.iteration[i])} {people.scores[i]:.2f}"
        if people.track_id[i] >= 0:
            label = f"#{int(people.track_id[i])} {label}"
        _label(out, label, (x0, max(10, y0 - 4)), color, line)
        kpts, ok = people.keypoints[i], people.keypoint_scores[i] >= kpt_thr
        for a, b in SKELETON:
            if ok[a] and ok[b]:
                cv2.line(out, _pt(kpts[a]), _pt(kpts[b]), color, line, cv2.LINE_AA)
        for k in np.flatnonzero(ok):
            cv2.circle(out, _pt(kpts[k]), line + 1, (255, 255, 255), -1, cv2.LINE_AA)
        if show_prompts:
            for p, lab in zip(people.prompts[i], people.prompt_labels[i], strict=True):
                if lab == 1:
                    cv2.drawMarker(out, _pt(p), (0, 255, 0), cv2.MARKER_STAR, 6 + 3 * line, line)
                elif lab == 0:
                    cv2.drawMarker(out, _pt(p), (0, 0, 255), cv2.MARKER_TILTED_CROSS, 6 + 3 * line, line)
    _legend(out, sorted({int(k) for k in people.iteration}), line)
    return out


def _label(
    out: np.ndarray, text: str, origin: tuple[int, int], color: tuple[int, int, int], line: int
) -> None:
    """Text in ``color`` on a dark outline, readable on any background."""
    scale, thick = 0.4 * line, max(1, line // 2)
    cv2.putText(out, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(out, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


def _legend(out: np.ndarray, iterations: list[int], line: int) -> None:
    """A swatch and ``iteration K`` per iteration present, top left."""
    step = 14 * line
    for row, iteration in enumerate(iterations):
        y = 6 * line + row * step
        cv2.rectangle(out, (4 * line, y), (4 * line + step - 4, y + step - 4), iteration_color(iteration), -1)
        _label(out, f"iteration {iteration}" if iteration else "prior", (4 * line + step + 2, y + step - 6),
               (255, 255, 255), line)


def _pt(xy: np.ndarray) -> tuple[int, int]:
    return int(round(float(xy[0]))), int(round(float(xy[1])))


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Encode ``image`` (BGR) by the file extension and write it atomically.

    ``cv2.imwrite`` reports failure (unwritable folder, unknown extension, full
    disk) only by returning False, so an unchecked call loses overlays silently;
    and a half-written file would look done to a resumed run. Raises
    :class:`~bmp.coco.OutputError` instead.
    """
    path = Path(path)
    try:
        ok, encoded = cv2.imencode(path.suffix or ".jpg", image)
    except cv2.error as exc:
        raise OutputError(f"cannot encode image {path}: {exc}") from None
    if not ok:
        raise OutputError(f"cannot encode image {path} as {path.suffix or '.jpg'}")
    with atomic_write(path, "wb") as f:
        f.write(encoded.tobytes())
