"""Choosing SAM point prompts from a pose.

Pure functions: each selection rule works on all N people at once (arrays
(N, K, ...), indices padded with -1), with a one-person form for tests and
tools; :func:`select_prompts` applies the configured rule and pads the result
to one (N, P, 2) batch with SAM's padding label -1 (never by repeating points,
which would change SAM's answer).
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
    """Keypoint indices chosen by :func:`max_spread` for one person, in the order chosen."""
    idx = max_spread_batch(np.asarray(keypoints)[None], np.asarray(scores)[None], num_points,
                           score_thr, percentile)[0]
    return idx[idx >= 0]


def max_spread_batch(
    keypoints: np.ndarray,
    scores: np.ndarray,
    num_points: int = 6,
    score_thr: float = 0.3,
    percentile: float = 80.0,
) -> np.ndarray:
    """:func:`max_spread` for N people at once: keypoints (N, K, 2), scores
    (N, K) -> (N, ``num_points``) indices in the order chosen, -1 padded.

    The greedy steps run for all people together (at most ``num_points``
    vectorised steps, not a loop over people)."""
    kpts = np.asarray(keypoints, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64).copy()
    n, k = s.shape
    out = np.full((n, num_points), -1, dtype=np.int64)
    if n == 0 or k == 0:
        return out
    s[~np.isfinite(s)] = -np.inf
    rows = np.arange(n)
    face = np.array([i for i in FACE if i < k])
    if len(face):
        best = face[np.argmax(s[:, face], axis=1)]  # ties: the lower index
        others = face[None] != best[:, None]
        s[:, face] = np.where(others, -np.inf, s[:, face])
    candidate = s >= score_thr
    has = candidate.any(1)
    # argmax takes the first of equal scores: ties resolve to the lower index.
    first = np.argmax(np.where(candidate, s, -np.inf), axis=1)
    out[has, 0] = first[has]
    chosen = np.zeros((n, k), dtype=bool)
    chosen[rows[has], first[has]] = True
    nearest = np.full((n, k), np.inf)  # distance to the closest chosen keypoint
    for step in range(1, num_points):
        remaining = candidate & ~chosen
        active = remaining.any(1)
        if not active.any():
            break
        last = out[:, step - 1].clip(0)
        nearest = np.minimum(nearest, np.linalg.norm(kpts - kpts[rows, last][:, None], axis=-1))
        gated = remaining & (s >= row_percentile(s, remaining, percentile)[:, None])
        pick = np.argmax(np.where(gated, nearest, -np.inf), axis=1)
        out[active, step] = pick[active]
        chosen[rows[active], pick[active]] = True
    return out


def row_percentile(values: np.ndarray, where: np.ndarray, percentile: float) -> np.ndarray:
    """Per row, ``np.percentile(values[i][where[i]], percentile)`` (numpy's
    default linear method, reproduced bit for bit); rows with nothing selected
    give +inf."""
    n, k = values.shape
    count = where.sum(1)
    ordered = np.sort(np.where(where, values, np.inf), axis=1)
    virtual = (count - 1) * np.true_divide(percentile, 100)
    below = np.floor(virtual)
    gamma = virtual - below
    top = (count - 1).clip(0)
    lo = np.where(virtual >= count - 1, top, below.astype(np.int64)).clip(0, k - 1)
    hi = np.where(virtual >= count - 1, top, lo + 1).clip(0, k - 1)
    a = np.take_along_axis(ordered, lo[:, None], 1)[:, 0]
    b = np.take_along_axis(ordered, hi[:, None], 1)[:, 0]
    with np.errstate(invalid="ignore"):  # inf - inf in rows with nothing selected
        diff = b - a
        result = np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
    return np.where(count > 0, result, np.inf)


def max_vis_indices(visibility: np.ndarray, num_points: int = 3, visibility_thr: float = 0.5) -> np.ndarray:
    """MaxVis_n: indices of the ``num_points`` most visible keypoints with
    visibility >= ``visibility_thr``, most visible first (ties: lower index)."""
    idx = max_vis_batch(np.asarray(visibility)[None], num_points, visibility_thr)[0]
    return idx[idx >= 0]


def max_vis_batch(visibility: np.ndarray, num_points: int = 3, visibility_thr: float = 0.5) -> np.ndarray:
    """:func:`max_vis_indices` for (N, K) visibilities -> (N, num_points), -1 padded."""
    vis = np.asarray(visibility, dtype=np.float64)
    vis = np.where(np.isfinite(vis), vis, -np.inf)
    order = np.argsort(-vis, axis=1, kind="stable")[:, :num_points]
    keep = np.take_along_axis(vis, order, 1) >= visibility_thr
    return _pad(np.where(keep, order, -1), num_points)


def max_vis(
    keypoints: np.ndarray, visibility: np.ndarray, num_points: int = 3, visibility_thr: float = 0.5
) -> np.ndarray:
    """(P, 2) points of :func:`max_vis_indices`."""
    idx = max_vis_indices(visibility, num_points, visibility_thr)
    return np.asarray(keypoints, dtype=np.float32)[idx].reshape(-1, 2)


def gt_indices(keypoints: np.ndarray, gt_visibility: np.ndarray, num_points: int = 6) -> np.ndarray:
    """Ground-truth poses: MaxSpread over keypoints with COCO v > 0 (binary)."""
    idx = gt_batch(np.asarray(keypoints)[None], np.asarray(gt_visibility)[None], num_points)[0]
    return idx[idx >= 0]


def gt_batch(keypoints: np.ndarray, gt_visibility: np.ndarray, num_points: int = 6) -> np.ndarray:
    """:func:`gt_indices` for N people -> (N, num_points), -1 padded."""
    binary = (np.asarray(gt_visibility) > 0).astype(np.float64)
    return max_spread_batch(keypoints, binary, num_points, score_thr=0.5, percentile=0.0)


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
    pts = np.asarray(other_keypoints, dtype=np.float32)
    points, valid = closest_keypoints_batch(
        np.asarray(center, np.float32)[None], pts, np.asarray(other_scores), num, score_thr
    )
    return points[0][valid[0]]


def closest_keypoints_batch(
    centers: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray,
    num: int,
    score_thr: float = 0.3,
    exclude_own: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """For each of N ``centers``, the ``num`` closest confident keypoints among
    M people's ``keypoints`` (M, K, 2), nearest first (ties: earlier person and
    keypoint). With ``exclude_own``, person i's own keypoints are skipped for
    centre i (the first N people are the ones the centres belong to).

    Returns:
        points (N, num, 2) float32 and valid (N, num) bool.
    """
    n = len(centers)
    m, k = keypoints.shape[:2]
    pts = np.asarray(keypoints, dtype=np.float32).reshape(-1, 2)
    usable = np.broadcast_to(np.asarray(scores).reshape(1, -1) >= score_thr, (n, m * k)).copy()
    if exclude_own:
        owner = np.repeat(np.arange(m), k)
        usable &= owner[None] != np.arange(n)[:, None]
    dist = np.linalg.norm(pts[None] - np.asarray(centers, np.float32)[:, None], axis=-1)
    dist = np.where(usable, dist, np.inf)
    order = np.argsort(dist, axis=1, kind="stable")[:, :num]
    valid = np.take_along_axis(usable, order, 1)
    points = pts[order] if m * k else np.zeros((n, 0, 2), np.float32)
    return _pad_points(points, valid, num)


def least_visible_indices(visibility: np.ndarray, num: int, visibility_thr: float = 0.5) -> np.ndarray:
    """Indices of the ``num`` least visible keypoints below ``visibility_thr``,
    least visible first (ties: lower index)."""
    idx = least_visible_batch(np.asarray(visibility)[None], num, visibility_thr)[0]
    return idx[idx >= 0]


def least_visible_batch(visibility: np.ndarray, num: int, visibility_thr: float = 0.5) -> np.ndarray:
    """:func:`least_visible_indices` for (N, K) visibilities -> (N, num), -1 padded."""
    vis = np.asarray(visibility, dtype=np.float64)
    order = np.argsort(vis, axis=1, kind="stable")[:, :num]
    keep = np.take_along_axis(vis, order, 1) < visibility_thr
    return _pad(np.where(keep, order, -1), num)


def _pad(indices: np.ndarray, width: int) -> np.ndarray:
    """(N, w) indices padded with -1 to (N, width) (K may be < width)."""
    extra = width - indices.shape[1]
    return np.pad(indices, ((0, 0), (0, extra)), constant_values=-1) if extra > 0 else indices


def _pad_points(points: np.ndarray, valid: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    extra = width - points.shape[1]
    if extra <= 0:
        return points, valid
    return (np.pad(points, ((0, 0), (0, extra), (0, 0))),
            np.pad(valid, ((0, 0), (0, extra)), constant_values=False))


def _gather(keypoints: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """keypoints (N, K, 2) at indices (N, P) -> points (N, P, 2), valid (N, P)."""
    valid = indices >= 0
    points = np.take_along_axis(keypoints, indices.clip(0)[..., None], 1)
    return np.where(valid[..., None], points, 0).astype(np.float32), valid


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
    keypoints = np.asarray(keypoints, dtype=np.float32)
    n = len(keypoints)
    p = config.width
    points = np.zeros((n, p, 2), dtype=np.float32)
    labels = np.full((n, p), PAD_LABEL, dtype=np.int32)
    if config.method == "max_spread":
        idx = max_spread_batch(keypoints, keypoint_scores, config.num_points, config.score_thr,
                               config.percentile)
    elif config.method == "max_vis":
        idx = max_vis_batch(visibility, config.num_points, config.visibility_thr)
    else:
        idx = gt_batch(keypoints, visibility, config.num_points)
    pos, ok = _gather(keypoints, idx)
    points[:, : config.num_points] = pos
    labels[:, : config.num_points] = np.where(ok, 1, PAD_LABEL)
    if config.negatives is None or n == 0:
        return points, labels
    if config.negatives == "others":
        if boxes is None:
            raise ValueError("negatives='others' needs the people's boxes")
        all_kpts, all_scores = keypoints, keypoint_scores
        if others is not None and len(others[0]):
            all_kpts = np.concatenate([keypoints, np.asarray(others[0], np.float32)])
            all_scores = np.concatenate([keypoint_scores, others[1]])
        centers = (boxes[:, :2] + boxes[:, 2:]) / 2
        neg, ok = closest_keypoints_batch(
            centers, all_kpts, all_scores, config.num_negative, config.score_thr, exclude_own=True
        )
    else:
        least = least_visible_batch(visibility, config.num_negative, config.visibility_thr)
        neg, ok = _gather(keypoints, least)
    start = config.num_points
    points[:, start:] = np.where(ok[..., None], neg, 0)
    labels[:, start:] = np.where(ok, 0, PAD_LABEL)
    return points, labels
