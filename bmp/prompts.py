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
    - ``negatives``: optional negative points: ``'others'`` (the confident
      keypoints of other people closest to this person's box centre) or
      ``'least_visible'`` (this person's least visible keypoints below
      ``visibility_thr``); ``num_negative`` of them.
    - ``use_box``: also prompt with the person's box.

    BMP found that negatives and boxes do not help SAM 2.1; they are off by default.
    """

    method: str = "max_spread"
    num_points: int = 6
    score_thr: float = 0.3
    visibility_thr: float = 0.5
    percentile: float = 80.0
    negatives: str | None = None
    num_negative: int = 1
    use_box: bool = False

    def __post_init__(self) -> None:
        if self.method not in ("max_spread", "max_vis", "gt"):
            raise ValueError(
                f"prompts.method must be 'max_spread', 'max_vis' or 'gt', got {self.method!r}"
            )
        if self.num_points < 1:
            raise ValueError(f"prompts.num_points must be >= 1, got {self.num_points}")
        if self.negatives not in (None, "others", "least_visible"):
            raise ValueError(
                f"prompts.negatives must be None, 'others' or 'least_visible', got {self.negatives!r}"
            )

    @property
    def width(self) -> int:
        """Prompt points per person, padding included."""
        return self.num_points + (self.num_negative if self.negatives else 0)


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


def closest_other_keypoints(
    center: np.ndarray,
    other_keypoints: np.ndarray,
    other_scores: np.ndarray,
    num: int,
    score_thr: float = 0.3,
) -> np.ndarray:
    """(P, 2) the ``num`` confident keypoints of other people closest to ``center``.

    Args:
        center: (2,) this person's box centre.
        other_keypoints: (M, K, 2) the other people's keypoints.
        other_scores: (M, K).
    """
    pts = np.asarray(other_keypoints, dtype=np.float32).reshape(-1, 2)
    ok = np.asarray(other_scores).reshape(-1) >= score_thr
    pts = pts[ok]
    order = np.argsort(np.linalg.norm(pts - np.asarray(center, np.float32), axis=1), kind="stable")
    return pts[order[:num]]


def least_visible_indices(visibility: np.ndarray, num: int, visibility_thr: float = 0.5) -> np.ndarray:
    """Indices of the ``num`` least visible keypoints below ``visibility_thr``,
    least visible first (ties: lower index)."""
    vis = np.asarray(visibility, dtype=np.float64)
    order = np.argsort(vis, kind="stable")
    return order[vis[order] < visibility_thr][:num].astype(np.int64)


def select_prompts(
    keypoints: np.ndarray,
    keypoint_scores: np.ndarray,
    visibility: np.ndarray,
    config: PromptConfig,
    boxes: np.ndarray | None = None,
    others: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Point prompts for every person, padded to one batch.

    Args:
        keypoints: (N, K, 2).
        keypoint_scores: (N, K).
        visibility: (N, K).
        boxes: (N, 4) xyxy, needed for ``negatives='others'``.
        others: keypoints (M, K, 2) and scores (M, K) of people not being
            segmented now (earlier iterations), also used as negatives.
    Returns:
        ``points`` (N, P, 2) float32 and ``labels`` (N, P) int32: 1 positive,
        0 negative, -1 padding; P = ``config.width``. A person with no usable
        keypoint gets only padding.
    """
    n = len(keypoints)
    p = config.width
    points = np.zeros((n, p, 2), dtype=np.float32)
    labels = np.full((n, p), PAD_LABEL, dtype=np.int32)
    if config.negatives == "others":
        if boxes is None:
            raise ValueError("negatives='others' needs the people's boxes")
        all_kpts, all_scores = keypoints, keypoint_scores
        if others is not None and len(others[0]):
            all_kpts = np.concatenate([keypoints, others[0]])
            all_scores = np.concatenate([keypoint_scores, others[1]])
    for i in range(n):
        if config.method == "max_spread":
            idx = max_spread_indices(
                keypoints[i], keypoint_scores[i], config.num_points, config.score_thr, config.percentile
            )
        elif config.method == "max_vis":
            idx = max_vis_indices(visibility[i], config.num_points, config.visibility_thr)
        else:
            idx = gt_indices(keypoints[i], visibility[i], config.num_points)
        points[i, : len(idx)] = keypoints[i, idx]
        labels[i, : len(idx)] = 1
        if config.negatives == "others":
            rest = np.arange(len(all_kpts)) != i
            center = (boxes[i, :2] + boxes[i, 2:]) / 2
            neg = closest_other_keypoints(
                center, all_kpts[rest], all_scores[rest], config.num_negative, config.score_thr
            )
        elif config.negatives == "least_visible":
            idx = least_visible_indices(visibility[i], config.num_negative, config.visibility_thr)
            neg = keypoints[i, idx]
        else:
            continue
        start = config.num_points
        points[i, start : start + len(neg)] = neg
        labels[i, start : start + len(neg)] = 0
    return points, labels
