"""Object Keypoint Similarity and the pose NMS that merges loop iterations.

Both follow the reference implementation (``bboxmaskpose/demo_utils.py``,
``pose_nms`` and ``compute_oks``) decision for decision, with one deliberate
correction: the reference reads the detector's xyxy boxes as xywh, so its OKS
area is ``x2 * y2`` and its enlarged-box test spans a box of width ``x1 + x2``;
here both come from the true xyxy box.
"""

from __future__ import annotations

import numpy as np

from .structures import Instances

#: COCO keypoint sigmas (the per-keypoint falloff of OKS), in COCO keypoint order.
COCO_SIGMAS = np.array(
    [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
     0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089],
    dtype=np.float64,
)


def oks_matrix(
    keypoints: np.ndarray,
    keypoint_scores: np.ndarray,
    areas: np.ndarray,
    score_thr: float = 0.3,
    sigmas: np.ndarray = COCO_SIGMAS,
    boxes: np.ndarray | None = None,
) -> np.ndarray:
    """OKS between every pair of poses.

    ``oks[i, j]`` treats pose ``i`` as the reference (COCO's ground truth):
    ``areas[i]`` sets the scale and only its keypoints with score >
    ``score_thr`` count. A reference with no such keypoint scores 0, unless
    its ``boxes`` are given: then it is compared as COCO compares an unlabelled
    ground truth, by each keypoint's distance outside the reference box
    enlarged by its own size on every side (0 inside), averaged over all
    keypoints. The matrix is not symmetric.

    Args:
        keypoints: (N, K, 2) xy.
        keypoint_scores: (N, K).
        areas: (N,) reference areas in pixels².
        boxes: (N, 4) xyxy reference boxes, for the unlabelled case.
    Returns:
        (N, N) float64 in [0, 1].
    """
    kpts = np.asarray(keypoints, dtype=np.float32)
    n, k = kpts.shape[:2]
    if n == 0:
        return np.zeros((0, 0))
    var = (2 * sigmas[:k]) ** 2
    confident = np.asarray(keypoint_scores) > score_thr  # the reference's labelled keypoints
    labelled = confident.any(1)
    # Differences in float32 like the reference (its keypoints are float32 arrays).
    delta = kpts[None] - kpts[:, None]  # delta[i, j] = pose j - reference i
    weight = confident
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float64)
        wh = boxes[:, 2:] - boxes[:, :2]
        lo = (boxes[:, :2] - wh)[:, None, None]
        hi = (boxes[:, 2:] + wh)[:, None, None]
        outside = (np.maximum(0, lo - kpts[None]) + np.maximum(0, kpts[None] - hi)).astype(np.float32)
        delta = np.where(labelled[:, None, None, None], delta, outside)
        weight = np.where(labelled[:, None], confident, True)
    area = np.asarray(areas, dtype=np.float64)[:, None, None]
    e = (delta**2).sum(-1) / var / (area + np.spacing(1)) / 2  # (N, N, K)
    w = weight[:, None, :]
    return np.where(w.any(-1), (np.exp(-e) * w).sum(-1) / np.maximum(w.sum(-1), 1), 0.0)


def pose_nms(
    instances: Instances, oks_thr: float = 0.8, score_thr: float = 0.3, prefer: str = "confident",
    fixed: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the poses that survive OKS-NMS, in their original order.

    The reference's greedy rule: take the pair (i, j) with the highest
    ``oks[i, j]`` (first in row-major order on ties); drop one of them; make
    the dropped pose unmatchable (its column) and forget that pair; repeat
    while any entry exceeds ``oks_thr``. A dropped pose keeps its row, so it
    can still suppress others. ``prefer='confident'`` (BMP's rule) drops ``j``
    if ``i`` has more confident keypoints (score > ``score_thr``), else ``i``
    (equal counts: the pair's reference ``i``). ``prefer='earlier'`` first
    drops the one found in the later iteration (the lite config: a person
    re-detected through a mask that did not cover them keeps the pose of its
    first, unmasked detection), then applies BMP's rule. ``fixed`` (N,) bool:
    poses that are never dropped (the caller's own boxes, ``BMP.predict(boxes=)``);
    a pair of a fixed and a free pose drops the free one, two fixed poses
    never suppress each other.
    """
    if prefer not in ("confident", "earlier"):
        raise ValueError(f"prefer must be 'confident' or 'earlier', got {prefer!r}")
    n = len(instances)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    oks = oks_matrix(instances.keypoints, instances.keypoint_scores, instances.areas, score_thr,
                     boxes=instances.boxes)
    np.fill_diagonal(oks, -1.0)
    confident = (instances.keypoint_scores > score_thr).sum(1)
    removed = np.zeros(n, dtype=bool)
    if fixed is not None:
        oks[np.ix_(fixed, fixed)] = 0
    while (oks > oks_thr).any():
        i, j = np.unravel_index(np.argmax(oks), oks.shape)
        drop = j if confident[i] > confident[j] else i
        if prefer == "earlier" and instances.iteration[i] != instances.iteration[j]:
            drop = i if instances.iteration[i] > instances.iteration[j] else j
        if fixed is not None and fixed[drop]:
            drop = j if drop == i else i
        oks[:, drop] = 0
        oks[drop, j] = 0
        removed[drop] = True
    return np.flatnonzero(~removed)
