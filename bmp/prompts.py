"""Choosing SAM point prompts from a pose.

Pure functions over one person's keypoints, plus :func:`select_prompts`, which
applies a configured method to every person and pads the result to one
(N, P, 2) batch with SAM's padding label -1 (never by repeating points, which
would change SAM's answer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: COCO indices of the nose and the eyes, collapsed to one point by MaxSpread.
FACE = (0, 1, 2)

PAD_LABEL = -1


@dataclass(frozen=True)
class PromptConfig:
    """How to turn poses into point prompts.

    - ``method``: ``'max_spread'`` (BMP "distance+confidence"), ``'max_vis'``
      (top-n by visibility) or ``'gt'`` (MaxSpread on binary visibility).
    - ``num_points``: n, the most positive points per person.
    - ``score_thr``: MaxSpread keeps keypoints with score >= this.
    - ``visibility_thr``: MaxVis keeps keypoints with visibility >= this.
    - ``percentile``: MaxSpread's gate on the remaining scores.
    """

    method: str = "max_spread"
    num_points: int = 6
    score_thr: float = 0.3
    visibility_thr: float = 0.5
    percentile: float = 80.0

    def __post_init__(self) -> None:
        if self.method not in ("max_spread", "max_vis", "gt"):
            raise ValueError(
                f"prompts.method must be 'max_spread', 'max_vis' or 'gt', got {self.method!r}"
            )
        if self.num_points < 1:
            raise ValueError(f"prompts.num_points must be >= 1, got {self.num_points}")


def max_spread(
    keypoints: np.ndarray,
    scores: np.ndarray,
    num_points: int = 6,
    score_thr: float = 0.3,
    percentile: float = 80.0,
) -> np.ndarray:
    """MaxSpread_n: confident keypoints spread as far apart as possible.

    Nose and eyes are collapsed to the most confident of them; keypoints with
    score < ``score_thr`` are dropped; the most confident keypoint starts the
    set, then the candidate farthest from the chosen set (by its minimum
    distance) is added, choosing only among candidates whose score reaches the
    ``percentile``-th percentile of the remaining scores.

    Args:
        keypoints: (K, 2) xy.
        scores: (K,) confidences.
    Returns:
        (P, 2) indices-ordered chosen points, P <= ``num_points``.
    """
    idx = max_spread_indices(keypoints, scores, num_points, score_thr, percentile)
    return np.asarray(keypoints, dtype=np.float32)[idx].reshape(-1, 2)


def max_spread_indices(
    keypoints: np.ndarray,
    scores: np.ndarray,
    num_points: int = 6,
    score_thr: float = 0.3,
    percentile: float = 80.0,
) -> np.ndarray:
    """Keypoint indices chosen by :func:`max_spread`, in the order chosen."""
    kpts = np.asarray(keypoints, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64).copy()
    scores[~np.isfinite(scores)] = -np.inf
    face = [i for i in FACE if i < len(scores)]
    if face:
        best = face[int(np.argmax(scores[face]))]
        for i in face:
            if i != best:
                scores[i] = -np.inf
    candidates = np.flatnonzero(scores >= score_thr)
    if len(candidates) == 0:
        return np.zeros(0, dtype=np.int64)
    # argmax takes the first of equal scores: ties resolve to the lower index.
    chosen = [int(candidates[np.argmax(scores[candidates])])]
    remaining = [int(c) for c in candidates if c != chosen[0]]
    while remaining and len(chosen) < num_points:
        rem = np.asarray(remaining)
        gate = np.percentile(scores[rem], percentile)
        gated = rem[scores[rem] >= gate]
        dist = np.linalg.norm(kpts[gated][:, None] - kpts[chosen][None], axis=-1).min(1)
        pick = int(gated[np.argmax(dist)])
        chosen.append(pick)
        remaining.remove(pick)
    return np.asarray(chosen, dtype=np.int64)


def max_vis_indices(visibility: np.ndarray, num_points: int = 3, visibility_thr: float = 0.5) -> np.ndarray:
    """MaxVis_n: indices of the ``num_points`` most visible keypoints with
    visibility >= ``visibility_thr``, most visible first (ties: lower index)."""
    vis = np.asarray(visibility, dtype=np.float64)
    vis = np.where(np.isfinite(vis), vis, -np.inf)
    order = np.argsort(-vis, kind="stable")
    order = order[vis[order] >= visibility_thr]
    return order[:num_points].astype(np.int64)


def max_vis(
    keypoints: np.ndarray, visibility: np.ndarray, num_points: int = 3, visibility_thr: float = 0.5
) -> np.ndarray:
    """(P, 2) points of :func:`max_vis_indices`."""
    idx = max_vis_indices(visibility, num_points, visibility_thr)
    return np.asarray(keypoints, dtype=np.float32)[idx].reshape(-1, 2)


def gt_indices(keypoints: np.ndarray, gt_visibility: np.ndarray, num_points: int = 6) -> np.ndarray:
    """Ground-truth poses: MaxSpread over keypoints with COCO v > 0 (binary)."""
    binary = (np.asarray(gt_visibility) > 0).astype(np.float64)
    return max_spread_indices(keypoints, binary, num_points, score_thr=0.5, percentile=0.0)


def select_prompts(
    keypoints: np.ndarray,
    keypoint_scores: np.ndarray,
    visibility: np.ndarray,
    config: PromptConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Point prompts for every person, padded to one batch.

    Args:
        keypoints: (N, K, 2).
        keypoint_scores: (N, K).
        visibility: (N, K).
    Returns:
        ``points`` (N, P, 2) float32 and ``labels`` (N, P) int32 with 1 for a
        positive point and -1 for padding; P = ``config.num_points``. A person
        with no usable keypoint gets only padding.
    """
    n = len(keypoints)
    p = config.num_points
    points = np.zeros((n, p, 2), dtype=np.float32)
    labels = np.full((n, p), PAD_LABEL, dtype=np.int32)
    for i in range(n):
        if config.method == "max_spread":
            idx = max_spread_indices(
                keypoints[i], keypoint_scores[i], p, config.score_thr, config.percentile
            )
        elif config.method == "max_vis":
            idx = max_vis_indices(visibility[i], p, config.visibility_thr)
        else:
            idx = gt_indices(keypoints[i], visibility[i], p)
        points[i, : len(idx)] = keypoints[i, idx]
        labels[i, : len(idx)] = 1
    return points, labels
