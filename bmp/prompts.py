"""Choosing SAM point prompts from a pose.

Each selection rule is one function over all N people at once (arrays
(N, K, ...), indices padded with -1); the one-person forms are a batch of one.
:func:`select_prompts` applies the configured rule and pads the result to one
(N, P, 2) batch with SAM's padding label -1 (never by repeating points, which
would change SAM's answer).

The rules are the reference implementation's (``bboxmaskpose/sam2_utils.py``,
``_pose2seg`` and ``_select_keypoints``), decision for decision, ties included:

- a person is prompted only if some keypoint has score > ``score_thr`` and
  confidence > ``visibility_thr`` (both strict);
- its candidates are then the keypoints with confidence >= ``visibility_thr``;
- MaxSpread first collapses nose and eyes to the most confident of them (by
  the confidence channel; the other two are dropped only if that one passes
  ``visibility_thr``), orders the candidates by score (ties: higher keypoint
  index first), starts from the first and greedily adds the candidate farthest
  from the chosen set among those whose score reaches the ``percentile``-th
  percentile of all candidates' scores, chosen ones counted as -1;
- MaxVis takes the candidates by decreasing confidence (ties: higher index).

"Confidence" is the channel named by ``PromptConfig.confidence``: the
keypoint visibility (the reference's choice), presence, expected OKS or the
keypoint score itself (SAM-pose2seg's Table 6 compares them). Arithmetic is
in float32, as the reference's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .structures import Instances

#: COCO indices of the nose and the eyes, collapsed to one point by MaxSpread.
FACE = (0, 1, 2)

PAD_LABEL = -1

#: Per-keypoint channels that can rank prompt candidates (``Instances`` fields).
CONFIDENCE_CHANNELS = ("visibility", "presence", "kpt_oks", "score")


@dataclass(frozen=True)
class PromptConfig:
    """How to turn poses into point prompts.

    - ``method``: ``'max_spread'`` (BMP "distance+confidence"), ``'max_vis'``
      (the reference's "k_most_visible") or ``'gt'`` (MaxSpread on binary
      ground-truth visibility, v = 0 dropped).
    - ``num_points``: n, the most positive points per person.
    - ``score_thr``: the reference's ``confidence_thr``: a person needs a
      keypoint with score > this (and confidence > ``visibility_thr``).
    - ``visibility_thr``: candidates have confidence >= this.
    - ``confidence``: which channel is the "confidence" that gates, filters
      and (for MaxVis and the face point) ranks: one of
      :data:`CONFIDENCE_CHANNELS`; the reference uses visibility.
    - ``percentile``: MaxSpread's score gate over all candidates.
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
    visibility_thr: float = 0.3
    confidence: str = "visibility"
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
        if self.confidence not in CONFIDENCE_CHANNELS:
            raise ValueError(
                f"prompts.confidence must be one of {CONFIDENCE_CHANNELS}, got {self.confidence!r}"
            )
        if self.negatives not in (None, "others", "least_visible"):
            raise ValueError(
                f"prompts.negatives must be None, 'others' or 'least_visible', got {self.negatives!r}"
            )

    @property
    def width(self) -> int:
        """Prompt points per person, padding included."""
        return self.num_points + (self.num_negative if self.negatives else 0)


def _candidates(
    scores: np.ndarray, confidence: np.ndarray, score_thr: float, visibility_thr: float,
    collapse_face: bool,
) -> np.ndarray:
    """(N, K) bool: the keypoints a person's prompts are chosen from."""
    prompted = ((scores > score_thr) & (confidence > visibility_thr)).any(1)
    candidate = (confidence >= visibility_thr) & prompted[:, None]
    k = scores.shape[1]
    if collapse_face and k >= len(FACE):
        face = np.asarray(FACE)
        best = face[np.argmax(confidence[:, face], axis=1)]  # first of equal values
        collapse = np.take_along_axis(confidence, best[:, None], 1)[:, 0] >= visibility_thr
        dropped = (face[None] != best[:, None]) & collapse[:, None]
        candidate[:, face] &= ~dropped
    return candidate


def _descending(values: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """(N, K) keypoint indices by decreasing value, ties to the higher index
    (``np.argsort(v)[::-1]``), non-candidates last."""
    k = values.shape[1]
    # Sorting the reversed row stably and mapping back puts the higher index first among ties.
    keyed = np.where(candidate, -values.astype(np.float64), np.inf)[:, ::-1]
    return k - 1 - np.argsort(keyed, axis=1, kind="stable")


def max_spread_batch(
    keypoints: np.ndarray,
    scores: np.ndarray,
    num_points: int = 6,
    *,
    confidence: np.ndarray | None = None,
    score_thr: float = 0.3,
    visibility_thr: float = 0.3,
    percentile: float = 80.0,
) -> np.ndarray:
    """MaxSpread_n for N people: keypoints (N, K, 2), scores and confidence
    (N, K) (confidence defaults to the scores) -> (N, ``num_points``) keypoint
    indices in the order chosen, -1 padded.

    The greedy steps run for all people together (at most ``num_points``
    vectorised steps, not a loop over people)."""
    kpts = np.asarray(keypoints, dtype=np.float32)
    s = _finite(scores)
    conf = s if confidence is None else _finite(confidence)
    n, k = s.shape
    out = np.full((n, num_points), -1, dtype=np.int64)
    if n == 0 or k == 0:
        return out
    candidate = _candidates(s, conf, score_thr, visibility_thr, collapse_face=True)
    order = _descending(s, candidate)  # conf order: position j holds keypoint order[:, j]
    valid = np.take_along_axis(candidate, order, 1)
    count = valid.sum(1)
    pts = np.take_along_axis(kpts, order[..., None], 1)
    available = np.where(valid, np.take_along_axis(s, order, 1), np.float32(0))
    rows = np.arange(n)
    has = count > 0
    out[has, 0] = order[has, 0]
    available[has, 0] = -1
    nearest = np.full((n, k), np.inf, dtype=np.float32)
    last = np.zeros(n, dtype=np.int64)
    # The reference adds count - 1 points in total; later picks cannot change earlier ones.
    for step in range(1, num_points):
        active = count > step
        if not active.any():
            break
        nearest = np.minimum(nearest, np.linalg.norm(pts - pts[rows, last][:, None], axis=-1))
        gate = row_percentile(available, valid, percentile)
        spread = np.where(available < gate[:, None], np.float32(-1), nearest)
        pick = np.argmax(np.where(valid, spread, -np.inf), axis=1)
        out[active, step] = order[active, pick[active]]
        available[rows[active], pick[active]] = -1
        last = np.where(active, pick, last)
    return out


def max_spread_indices(
    keypoints: np.ndarray,
    scores: np.ndarray,
    num_points: int = 6,
    *,
    confidence: np.ndarray | None = None,
    score_thr: float = 0.3,
    visibility_thr: float = 0.3,
    percentile: float = 80.0,
) -> np.ndarray:
    """:func:`max_spread_batch` for one person: indices in the order chosen."""
    conf = None if confidence is None else np.asarray(confidence)[None]
    idx = max_spread_batch(np.asarray(keypoints)[None], np.asarray(scores)[None], num_points,
                           confidence=conf, score_thr=score_thr, visibility_thr=visibility_thr,
                           percentile=percentile)[0]
    return idx[idx >= 0]


def max_spread(keypoints: np.ndarray, scores: np.ndarray, num_points: int = 6, **kwargs: Any) -> np.ndarray:
    """(P, 2) points of :func:`max_spread_indices`."""
    idx = max_spread_indices(keypoints, scores, num_points, **kwargs)
    return np.asarray(keypoints, dtype=np.float32)[idx].reshape(-1, 2)


def row_percentile(values: np.ndarray, where: np.ndarray, percentile: float) -> np.ndarray:
    """Per row, ``np.percentile(values[i][where[i]], percentile)``, reproduced
    bit for bit: numpy's linear method with the index arithmetic in float64 and
    the interpolation in the values' dtype; rows with nothing selected give +inf."""
    dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.dtype(np.float64)
    n, k = values.shape
    count = where.sum(1)
    ordered = np.sort(np.where(where, values, np.inf).astype(dtype), axis=1)
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
        # numpy passes gamma as a Python float: it takes the values' dtype.
        result = np.where(gamma >= 0.5, b - diff * (1 - gamma).astype(dtype), a + diff * gamma.astype(dtype))
    return np.where(count > 0, result.astype(dtype), dtype.type(np.inf))


def max_vis_batch(
    visibility: np.ndarray,
    num_points: int = 3,
    visibility_thr: float = 0.5,
    scores: np.ndarray | None = None,
    score_thr: float = 0.5,
) -> np.ndarray:
    """MaxVis_n for (N, K) confidences -> (N, num_points) indices, most
    confident first (ties: higher index), -1 padded. With ``scores`` a person
    is prompted only if some keypoint has score > ``score_thr`` and confidence
    > ``visibility_thr``; without, only the confidence gate applies."""
    conf = _finite(visibility)
    s = conf if scores is None else _finite(scores)
    thr = score_thr if scores is not None else visibility_thr
    candidate = _candidates(s, conf, thr, visibility_thr, collapse_face=False)
    order = _descending(conf, candidate)[:, :num_points]
    keep = np.take_along_axis(candidate, order, 1)
    return _pad(np.where(keep, order, -1), num_points)


def max_vis_indices(visibility: np.ndarray, num_points: int = 3, visibility_thr: float = 0.5,
                    scores: np.ndarray | None = None, score_thr: float = 0.5) -> np.ndarray:
    """:func:`max_vis_batch` for one person."""
    s = None if scores is None else np.asarray(scores)[None]
    idx = max_vis_batch(np.asarray(visibility)[None], num_points, visibility_thr, s, score_thr)[0]
    return idx[idx >= 0]


def max_vis(
    keypoints: np.ndarray, visibility: np.ndarray, num_points: int = 3, visibility_thr: float = 0.5
) -> np.ndarray:
    """(P, 2) points of :func:`max_vis_indices`."""
    idx = max_vis_indices(visibility, num_points, visibility_thr)
    return np.asarray(keypoints, dtype=np.float32)[idx].reshape(-1, 2)


def _finite(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return np.where(np.isfinite(v), v, np.float32(-np.inf))


def gt_indices(keypoints: np.ndarray, gt_visibility: np.ndarray, num_points: int = 6) -> np.ndarray:
    """Ground-truth poses: MaxSpread over keypoints with COCO v > 0 (binary)."""
    idx = gt_batch(np.asarray(keypoints)[None], np.asarray(gt_visibility)[None], num_points)[0]
    return idx[idx >= 0]


def gt_batch(keypoints: np.ndarray, gt_visibility: np.ndarray, num_points: int = 6) -> np.ndarray:
    """:func:`gt_indices` for N people -> (N, num_points), -1 padded."""
    binary = (np.asarray(gt_visibility) > 0).astype(np.float32)
    return max_spread_batch(keypoints, binary, num_points, confidence=binary, score_thr=0.5,
                            visibility_thr=0.5)


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


def confidence_channel(people: Instances, config: PromptConfig) -> np.ndarray:
    """The (N, K) channel of ``people`` that ``config.confidence`` names."""
    name = "keypoint_scores" if config.confidence == "score" else config.confidence
    return getattr(people, name)


def select_prompts(
    keypoints: np.ndarray,
    keypoint_scores: np.ndarray,
    confidence: np.ndarray,
    config: PromptConfig,
    boxes: np.ndarray | None = None,
    others: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Point prompts for every person, padded to one batch.

    Args:
        keypoints: (N, K, 2).
        keypoint_scores: (N, K).
        confidence: (N, K) the channel that gates, filters and ranks
            (:func:`confidence_channel`; GT visibility for ``method='gt'``).
        boxes: (N, 4) xyxy, needed for ``negatives='others'``.
        others: keypoints (M, K, 2) and scores (M, K) of people not being
            segmented now (earlier iterations), also used as negatives.
    Returns:
        ``points`` (N, P, 2) float32 and ``labels`` (N, P) int32: 1 positive,
        0 negative, -1 padding; P = ``config.width``. A person with no usable
        keypoint gets only padding (the reference then decodes it from SAM's
        padding token alone; see :class:`~bmp.models.segmenters.SAM2Segmenter`).
    """
    keypoints = np.asarray(keypoints, dtype=np.float32)
    n = len(keypoints)
    p = config.width
    points = np.zeros((n, p, 2), dtype=np.float32)
    labels = np.full((n, p), PAD_LABEL, dtype=np.int32)
    if config.method == "max_spread":
        idx = max_spread_batch(keypoints, keypoint_scores, config.num_points, confidence=confidence,
                               score_thr=config.score_thr, visibility_thr=config.visibility_thr,
                               percentile=config.percentile)
    elif config.method == "max_vis":
        idx = max_vis_batch(confidence, config.num_points, config.visibility_thr, keypoint_scores,
                            config.score_thr)
    else:
        idx = gt_batch(keypoints, confidence, config.num_points)
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
        least = least_visible_batch(confidence, config.num_negative, config.visibility_thr)
        neg, ok = _gather(keypoints, least)
    start = config.num_points
    points[:, start:] = np.where(ok[..., None], neg, 0)
    labels[:, start:] = np.where(ok, 0, PAD_LABEL)
    return points, labels
