"""Object Keypoint Similarity and the pose NMS that merges loop iterations."""

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
) -> np.ndarray:
    """OKS between every pair of poses.

    ``oks[i, j]`` treats pose ``i`` as the reference: its box ``areas[i]`` sets the
    scale and only its keypoints with score > ``score_thr`` count. The matrix is
    therefore not symmetric.

    Args:
        keypoints: (N, K, 2) xy.
        keypoint_scores: (N, K).
        areas: (N,) reference areas in pixels² (box area, xyxy-derived).
    Returns:
        (N, N) float64 in [0, 1]; 0 where the reference has no confident keypoint.
    """
    kpts = np.asarray(keypoints, dtype=np.float64)
    n = len(kpts)
    if n == 0:
        return np.zeros((0, 0))
    var = (2 * sigmas) ** 2  # (K,)
    d2 = ((kpts[:, None] - kpts[None]) ** 2).sum(-1)  # (N, N, K)
    scale = np.maximum(np.asarray(areas, dtype=np.float64), np.spacing(1))[:, None, None]
    e = d2 / (var[None, None] * scale * 2)
    valid = (np.asarray(keypoint_scores) > score_thr)[:, None, :]  # reference's keypoints
    count = valid.sum(-1)
    sim = (np.exp(-e) * valid).sum(-1)
    return np.where(count > 0, sim / np.maximum(count, 1), 0.0)


def pose_nms(
    instances: Instances, oks_thr: float = 0.8, score_thr: float = 0.3, prefer: str = "confident"
) -> np.ndarray:
    """Indices of the poses that survive OKS-NMS, in their original order.

    While any pair has OKS > ``oks_thr`` (in either direction), one member is
    dropped. ``prefer='confident'`` (BMP's rule) drops the one with fewer
    confident keypoints (score > ``score_thr``), ties the lower instance score,
    then the later index. ``prefer='earlier'`` first drops the one found in the
    later iteration: a person re-detected through a mask that did not cover
    them keeps the box of its first, unmasked detection.
    """
    if prefer not in ("confident", "earlier"):
        raise ValueError(f"prefer must be 'confident' or 'earlier', got {prefer!r}")
    n = len(instances)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    oks = oks_matrix(instances.keypoints, instances.keypoint_scores, instances.areas, score_thr)
    sim = np.maximum(oks, oks.T)
    np.fill_diagonal(sim, 0.0)
    confident = (instances.keypoint_scores > score_thr).sum(1)
    # Higher rank = more worth keeping (lexsort: last key is the primary one).
    keys = [-np.arange(n), instances.scores, confident]
    if prefer == "earlier":
        keys.append(-instances.iteration)
    order = np.lexsort(keys)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    alive = np.ones(n, dtype=bool)
    while True:
        pairs = (sim > oks_thr) & alive[:, None] & alive[None, :]
        if not pairs.any():
            break
        i, j = np.unravel_index(np.argmax(np.where(pairs, sim, -1.0)), sim.shape)
        alive[i if rank[i] < rank[j] else j] = False
    return np.flatnonzero(alive)
