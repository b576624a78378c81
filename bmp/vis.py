"""Overlays: masks, skeletons, boxes and prompt points, coloured by iteration."""

from __future__ import annotations

import cv2
import numpy as np

from .keypoints import SKELETON
from .structures import Instances

#: Base BGR colour per loop iteration (1: blue, 2: orange, 3: green, 4: magenta...).
ITERATION_COLORS = ((230, 120, 30), (20, 140, 255), (60, 200, 60), (200, 60, 200), (40, 220, 220))


def iteration_color(iteration: int, shade: int = 0) -> tuple[int, int, int]:
    """The colour of people found in ``iteration``, varied a little by ``shade``
    so neighbours found in the same iteration stay distinguishable."""
    base = np.array(ITERATION_COLORS[(iteration - 1) % len(ITERATION_COLORS)], np.float32)
    factor = 0.7 + 0.3 * ((shade * 37) % 10) / 9
    return tuple(int(c) for c in np.clip(base * factor, 0, 255))


def track_color(track_id: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour per track id (golden-ratio hue steps)."""
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
    """An (H, W, 3) BGR overlay ready for ``cv2.imwrite``. People with a
    ``track_id`` >= 0 (video) are coloured by track and labelled ``#id``; the
    others by the iteration that found them."""
    canvas = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR).astype(np.float32)
    colors = [
        track_color(int(t)) if t >= 0 else iteration_color(int(it), i)
        for i, (it, t) in enumerate(zip(people.iteration, people.track_id, strict=True))
    ]
    for mask, color in zip(people.masks, colors, strict=True):
        canvas[mask] = canvas[mask] * (1 - mask_alpha) + np.array(color, np.float32) * mask_alpha
    out = canvas.astype(np.uint8)
    line = max(1, int(round(max(image_rgb.shape[:2]) / 400)))
    for i, color in enumerate(colors):
        x0, y0, x1, y1 = (int(round(v)) for v in people.boxes[i])
        cv2.rectangle(out, (x0, y0), (x1, y1), color, line)
        label = f"it{int(people.iteration[i])} {people.scores[i]:.2f}"
        if people.track_id[i] >= 0:
            label = f"#{int(people.track_id[i])} {label}"
        cv2.putText(out, label, (x0, max(10, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * line, color, max(1, line // 2), cv2.LINE_AA)
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
    return out


def _pt(xy: np.ndarray) -> tuple[int, int]:
    return int(round(float(xy[0]))), int(round(float(xy[1])))
