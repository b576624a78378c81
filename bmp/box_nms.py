"""Greedy box NMS of one iteration's detections, as the reference filters them.

The reference (``bboxmaskpose/api.py``) keeps person boxes with score above a
threshold, sorts them by score and runs mmpose's ``nms``
(``mmpose/evaluation/functional/nms.py``), which measures boxes in whole
pixels: width ``x2 - x1 + 1``, so IoUs of small or touching boxes come out
higher than the continuous IoU.
"""

from __future__ import annotations

import numpy as np


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> np.ndarray:
    """Indices of the kept boxes, best first.

    Args:
        boxes: (N, 4) xyxy.
        scores: (N,).
        iou_thr: a box is dropped when its +1-pixel IoU with a kept, better box
            exceeds this.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    # The reference sorts by score and mmpose's nms sorts the sorted list again:
    # two stable reversals leave equal scores in their original order.
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_thr]
    return np.asarray(keep, dtype=np.int64)
