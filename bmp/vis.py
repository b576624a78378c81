"""Overlays: masks, skeletons, boxes and prompt points.

Every person has a colour of their own (neighbours in a crowd must be told
apart); the iteration that found them is shown by the outline of their mask
and box, in the iteration's colour, by their label, and by a small legend."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .coco import OutputError, atomic_write
from .keypoints import SKELETON
from .structures import Instances

_FONT = cv2.FONT_HERSHEY_SIMPLEX

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
    scale = text_scale(image_rgb.shape[:2])
    for i, color in enumerate(colors):
        outline = iteration_color(int(people.iteration[i]))
        contours, _ = cv2.findContours(masks[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, outline, line + 1, cv2.LINE_AA)
        x0, y0, x1, y1 = (int(round(v)) for v in people.boxes[i])
        cv2.rectangle(out, (x0, y0), (x1, y1), outline, line)
        label = f"it{int(people.iteration[i])} {people.scores[i]:.2f}"
        if people.track_id[i] >= 0:
            label = f"#{int(people.track_id[i])} {label}"
        _label(out, label, (x0, max(10, y0 - 4)), color, scale)
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
    _legend(out, sorted({int(k) for k in people.iteration}), scale)
    return out


def text_scale(image_size: tuple[int, int]) -> float:
    """The ``putText`` font scale of labels on an image of ``(H, W)``: in
    proportion to the long side (text about 2 % of it tall), so labels keep their
    size relative to the people from a 640 px photo to 4K; 0.4 at least, the
    smallest that stays legible."""
    return max(0.4, max(image_size) / 1000)


def _label(
    out: np.ndarray, text: str, origin: tuple[int, int], color: tuple[int, int, int], scale: float
) -> None:
    """Text in ``color`` on a dark outline, readable on any background.

    The text is laid out once, as a coverage mask, and the outline is that mask
    dilated. Drawing the outline as a second ``putText`` with a larger thickness
    does not work: OpenCV >= 5 renders the Hershey font ids with an outline font
    whose thickness picks the weight, so the thicker pass has wider glyph
    advances and shows as a second, offset copy ("iteration 11"), and above a
    few pixels the two weights coincide and the outline vanishes."""
    thick = max(1, int(1.25 * scale))
    halo = max(1, int(round(1.5 * scale)))
    (width, height), baseline = cv2.getTextSize(text, _FONT, scale, thick)
    # The measured size is the layout's, not the ink's: pad by a glyph height.
    pad = halo + thick + height
    ink = np.zeros((height + baseline + 2 * pad, width + 2 * pad), np.uint8)
    cv2.putText(ink, text, (pad, pad + height), _FONT, scale, 255, thick, cv2.LINE_AA)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * halo + 1, 2 * halo + 1))
    outline = cv2.dilate(ink, kernel)
    x0, y0 = origin[0] - pad, origin[1] - height - pad
    _blend(out, outline, (x0, y0), (0, 0, 0))
    _blend(out, ink, (x0, y0), color)


def _blend(out: np.ndarray, alpha: np.ndarray, corner: tuple[int, int], color: tuple[int, int, int]) -> None:
    """Paint ``color`` into ``out`` with coverage ``alpha`` (0-255) placed at
    ``corner``; the parts outside the image are dropped."""
    h, w = out.shape[:2]
    x0, y0 = corner
    left, top = max(0, -x0), max(0, -y0)
    right, bottom = min(alpha.shape[1], w - x0), min(alpha.shape[0], h - y0)
    if right <= left or bottom <= top:
        return
    a = alpha[top:bottom, left:right, None].astype(np.float32) / 255.0
    region = out[y0 + top:y0 + bottom, x0 + left:x0 + right]
    region[:] = (region * (1 - a) + np.array(color, np.float32) * a + 0.5).astype(np.uint8)


def _legend(out: np.ndarray, iterations: list[int], scale: float) -> None:
    """A swatch and ``iteration K`` per iteration present, top left."""
    step, margin = int(round(35 * scale)), int(round(10 * scale))
    for row, iteration in enumerate(iterations):
        y = int(round(15 * scale)) + row * step
        cv2.rectangle(out, (margin, y), (margin + step - 4, y + step - 4), iteration_color(iteration), -1)
        text = f"iteration {iteration}" if iteration else "prior"
        _label(out, text, (margin + step + margin // 2, y + step - 6), (255, 255, 255), scale)


def _pt(xy: np.ndarray) -> tuple[int, int]:
    return int(round(float(xy[0]))), int(round(float(xy[1])))


def write_image(path: str | os.PathLike, image: np.ndarray, params: Sequence[int] = ()) -> None:
    """Encode ``image`` (BGR) by the file extension (with ``cv2.imencode``'s
    ``params``, e.g. JPEG quality) and write it atomically.

    ``cv2.imwrite`` reports failure (unwritable folder, unknown extension, full
    disk) only by returning False, so an unchecked call loses overlays silently;
    and a half-written file would look done to a resumed run. Raises
    :class:`~bmp.coco.OutputError` instead.
    """
    path = Path(path)
    try:
        ok, encoded = cv2.imencode(path.suffix or ".jpg", image, list(params))
    except cv2.error as exc:
        raise OutputError(f"cannot encode image {path}: {exc}") from None
    if not ok:
        raise OutputError(f"cannot encode image {path} as {path.suffix or '.jpg'}")
    with atomic_write(path, "wb") as f:
        f.write(encoded.tobytes())
