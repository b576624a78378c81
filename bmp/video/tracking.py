"""Identities across video frames: Hungarian matching on mask IoU and OKS.

Design (why, in short):

- BMP already gives every person a mask and a pose, the two cues that stay
  reliable in crowds where boxes overlap heavily. The similarity of a track and
  a person is the weighted mean of mask IoU, OKS and box IoU (default weights
  0.4 / 0.4 / 0.2; a cue is left out of the mean when it is undefined: an empty
  mask, or no confident keypoint on either side). OKS is the mean of both
  directions of :func:`bmp.pose_nms.oks_matrix`. Box IoU keeps a small weight:
  it is ambiguous in crowds but robust when a pose or a coarse mask changes
  shape between frames (a person falling).
- The track's side is *predicted* for the current frame: its last box, pose and
  mask moved by its velocity (an exponential average of its box-centre motion
  per processed frame) times the frames since it was last seen; the similarity
  is the better of the moved and the unmoved prediction, because box-centre
  velocity is noisy when a person changes shape. With SAM 2 propagation on, the
  propagated mask replaces the track's last mask.
- Two Hungarian rounds (:func:`scipy.optimize.linear_sum_assignment`), ByteTrack
  style: tracks seen in the previous frame first (``match_thr``), then lost
  tracks against the people left (``reid_thr``): short-gap re-identification.
- Birth: an unmatched person with score >= ``birth_score`` starts a new track;
  weaker ones stay untracked (``track_id = -1``) so flickering false positives
  do not mint ids. Death: a track unseen for more than ``max_age`` processed
  frames is dropped; ids are never reused.

The tracker's state is a pure function of the (people, ids) sequence passed to
:meth:`Tracker.commit`, which is how a resumed run rebuilds it from the JSONL log.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..config import ConfigError
from ..masks import box_iou, mask_iou
from ..pose_nms import oks_matrix
from ..structures import Instances


@dataclass(frozen=True)
class TrackerConfig:
    """Association rules (config: ``video = dict(tracker=dict(...))``).

    - ``mask_weight``, ``oks_weight``, ``box_weight``: weights of mask IoU, OKS
      and box IoU in the similarity (a weighted mean over the defined cues).
    - ``match_thr``: least similarity to continue a track seen in the previous frame.
    - ``reid_thr``: least similarity to re-identify a lost track after a gap.
    - ``birth_score``: least instance score for a new track.
    - ``max_age``: processed frames a track may stay unseen before it dies.
    - ``oks_kpt_thr``: keypoints with score > this count in OKS.
    - ``mask_stride``: masks are compared at 1/stride resolution (speed, memory).
    - ``velocity_momentum``: weight of the old velocity in its moving average.
    """

    mask_weight: float = 0.4
    oks_weight: float = 0.4
    box_weight: float = 0.2
    match_thr: float = 0.2
    reid_thr: float = 0.3
    birth_score: float = 0.3
    max_age: int = 15
    oks_kpt_thr: float = 0.3
    mask_stride: int = 4
    velocity_momentum: float = 0.5

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> TrackerConfig:
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"video.tracker: unknown key(s) {unknown}; accepted: {sorted(known)}")
        cfg = cls(**values)
        weights = (cfg.mask_weight, cfg.oks_weight, cfg.box_weight)
        if min(weights) < 0 or cfg.box_weight + max(cfg.mask_weight, cfg.oks_weight) <= 0:
            raise ConfigError(f"video.tracker: cue weights must be >= 0 with box_weight or mask/oks "
                              f"weights > 0, got {weights}")
        if cfg.max_age < 0 or cfg.mask_stride < 1:
            raise ConfigError("video.tracker: max_age must be >= 0 and mask_stride >= 1")
        return cfg


@dataclass
class Track:
    """One identity: its last appearance and its motion.

    ``box`` (4,) xyxy, ``keypoints`` (17, 2), ``keypoint_scores`` (17,),
    ``mask`` (h, w) bool at 1/stride resolution, ``velocity`` (2,) pixels per
    processed frame, ``last_step`` the processed-frame counter when last seen.
    """

    track_id: int
    box: np.ndarray
    keypoints: np.ndarray
    keypoint_scores: np.ndarray
    mask: np.ndarray
    score: float
    det_score: float
    last_step: int
    first_step: int
    hits: int = 1
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float64))

    def shift(self, step: int) -> np.ndarray:
        """(2,) predicted displacement from the last sighting to ``step``."""
        return self.velocity * (step - self.last_step)


def downsample_masks(masks: np.ndarray, stride: int) -> np.ndarray:
    """(N, H, W) bool -> (N, ceil(H/s), ceil(W/s)) by striding (cheap, enough for IoU)."""
    return np.ascontiguousarray(masks[:, ::stride, ::stride]) if stride > 1 else masks


def _shift_mask(mask: np.ndarray, dxy: np.ndarray) -> np.ndarray:
    """(h, w) mask translated by ``dxy`` cells, zero-filled (no wrap-around)."""
    dx, dy = (int(round(v)) for v in dxy)
    if dx == 0 and dy == 0:
        return mask
    h, w = mask.shape
    out = np.zeros_like(mask)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        mask[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def _box_area(boxes: np.ndarray) -> np.ndarray:
    wh = np.clip(boxes[:, 2:] - boxes[:, :2], 0, None)
    return wh[:, 0] * wh[:, 1]


def hungarian(similarity: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Maximum-similarity one-to-one pairs (row, col) with similarity >= threshold."""
    if similarity.size == 0:
        return []
    allowed = similarity >= threshold
    # Forbidden pairs get a cost no allowed assignment can beat, then are dropped.
    cost = np.where(allowed, 1.0 - similarity, 1e6)
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if allowed[r, c]]


class Tracker:
    """Gives each person of each frame a persistent ``track_id``.

    >>> tracker = Tracker()
    >>> for people in frames:                  # Instances per processed frame
    ...     people = tracker.update(people)    # people.track_id: (N,) int32, -1 = untracked

    :meth:`update` = :meth:`assign` (decide ids) + :meth:`commit` (update state).
    """

    def __init__(self, config: TrackerConfig | dict | None = None) -> None:
        self.config = config if isinstance(config, TrackerConfig) else TrackerConfig.from_dict(config)
        self.tracks: dict[int, Track] = {}
        self.step = 0  # processed frames committed so far
        self.next_id = 1

    # Association -------------------------------------------------------------

    def similarity(
        self,
        tracks: list[Track],
        people: Instances,
        small_masks: np.ndarray,
        propagated: dict[int, np.ndarray] | None = None,
    ) -> np.ndarray:
        """(T, N) similarity of tracks (predicted to the current frame) and people:
        the better of the motion-moved and the unmoved prediction.

        Args:
            small_masks: (N, h, w) the people's masks at 1/stride resolution.
            propagated: track id -> (h, w) mask for this frame, used instead of
                the track's last mask.
        """
        if len(tracks) == 0 or len(people) == 0:
            return np.zeros((len(tracks), len(people)))
        step = self.step + 1
        moved = np.stack([tr.shift(step) for tr in tracks])  # (T, 2) pixels
        sim = self._cue_similarity(tracks, people, small_masks, moved, propagated)
        if np.any(moved):
            still = self._cue_similarity(tracks, people, small_masks, np.zeros_like(moved), propagated)
            sim = np.maximum(sim, still)
        return sim

    def _cue_similarity(
        self,
        tracks: list[Track],
        people: Instances,
        small_masks: np.ndarray,
        shifts: np.ndarray,
        propagated: dict[int, np.ndarray] | None,
    ) -> np.ndarray:
        """(T, N) weighted mean of mask IoU, OKS and box IoU with the tracks moved by ``shifts``."""
        cfg = self.config
        t, n = len(tracks), len(people)
        boxes = np.stack([tr.box for tr in tracks]) + np.tile(shifts, 2)
        kpts = np.stack([tr.keypoints for tr in tracks]) + shifts[:, None, :]
        masks = np.stack([
            propagated[tr.track_id] if propagated and tr.track_id in propagated
            else _shift_mask(tr.mask, shifts[i] / cfg.mask_stride)
            for i, tr in enumerate(tracks)
        ])
        mask_sim = mask_iou(masks, small_masks)
        has_mask = (masks.reshape(t, -1).any(1)[:, None] & small_masks.reshape(n, -1).any(1)[None])

        scores = np.concatenate([np.stack([tr.keypoint_scores for tr in tracks]), people.keypoint_scores])
        oks = oks_matrix(np.concatenate([kpts, people.keypoints]), scores,
                         np.concatenate([_box_area(boxes), people.areas]), cfg.oks_kpt_thr)
        oks = (oks[:t, t:] + oks[t:, :t].T) / 2
        confident = scores > cfg.oks_kpt_thr
        has_pose = confident[:t].any(1)[:, None] & confident[t:].any(1)[None]

        w_mask = np.where(has_mask, cfg.mask_weight, 0.0)
        w_oks = np.where(has_pose, cfg.oks_weight, 0.0)
        total = w_mask + w_oks + cfg.box_weight
        weighted = w_mask * mask_sim + w_oks * oks + cfg.box_weight * box_iou(boxes, people.boxes)
        return np.where(total > 0, weighted / np.maximum(total, 1e-9), 0.0)

    def assign(self, people: Instances, propagated: dict[int, np.ndarray] | None = None) -> np.ndarray:
        """(N,) int32 track ids for ``people`` in the next frame (state unchanged)."""
        cfg = self.config
        ids = np.full(len(people), -1, np.int32)
        if len(people) == 0:
            return ids
        small = downsample_masks(people.masks, cfg.mask_stride)
        active = [tr for tr in self.tracks.values() if tr.last_step == self.step]
        lost = [tr for tr in self.tracks.values() if tr.last_step < self.step]
        free = np.arange(len(people))
        for tracks, threshold in ((active, cfg.match_thr), (lost, cfg.reid_thr)):
            if not tracks or not len(free):
                continue
            sim = self.similarity(tracks, people[free], small[free], propagated)
            matched = hungarian(sim, threshold)
            for r, c in matched:
                ids[free[c]] = tracks[r].track_id
            free = np.setdiff1d(free, [free[c] for _, c in matched])
        next_id = self.next_id
        for i in free:  # in the loop's order: earlier iterations, then by score
            if people.scores[i] >= cfg.birth_score:
                ids[i] = next_id
                next_id += 1
        return ids

    # State -------------------------------------------------------------------

    def commit(self, people: Instances, ids: np.ndarray) -> None:
        """Advance one processed frame: update the tracks named in ``ids``
        (creating new ones), age the others and drop those past ``max_age``."""
        cfg = self.config
        self.step += 1
        small = downsample_masks(people.masks, cfg.mask_stride)
        for i, tid in enumerate(np.asarray(ids).tolist()):
            if tid < 0:
                continue
            box = people.boxes[i].astype(np.float64)
            track = self.tracks.get(tid)
            if track is None:
                self.tracks[tid] = Track(
                    track_id=tid, box=box, keypoints=people.keypoints[i].astype(np.float64),
                    keypoint_scores=people.keypoint_scores[i].copy(), mask=small[i].copy(),
                    score=float(people.scores[i]), det_score=float(people.det_scores[i]),
                    last_step=self.step, first_step=self.step,
                )
                self.next_id = max(self.next_id, tid + 1)
                continue
            gap = self.step - track.last_step
            moved = ((box[:2] + box[2:]) - (track.box[:2] + track.box[2:])) / 2 / gap
            m = cfg.velocity_momentum if track.hits > 1 else 0.0
            track.velocity = m * track.velocity + (1 - m) * moved
            track.box, track.mask = box, small[i].copy()
            track.keypoints = people.keypoints[i].astype(np.float64)
            track.keypoint_scores = people.keypoint_scores[i].copy()
            track.score, track.det_score = float(people.scores[i]), float(people.det_scores[i])
            track.last_step, track.hits = self.step, track.hits + 1
        for tid in [t for t, tr in self.tracks.items() if self.step - tr.last_step > cfg.max_age]:
            del self.tracks[tid]

    def update(self, people: Instances, propagated: dict[int, np.ndarray] | None = None) -> Instances:
        """Assign ids, commit them, and return ``people`` with ``track_id`` set."""
        ids = self.assign(people, propagated)
        self.commit(people, ids)
        return people.replace(track_id=ids)

    def predicted(self, max_gap: int = 1) -> Instances | None:
        """Tracks seen within the last ``max_gap`` processed frames, boxes moved
        to where they should be in the next frame (the loop's temporal prior)."""
        step = self.step + 1
        tracks = [tr for tr in self.tracks.values() if step - tr.last_step <= max_gap]
        if not tracks:
            return None
        return _as_instances(tracks, step)


def _as_instances(tracks: list[Track], step: int) -> Instances:
    """Tracks as Instances (boxes, poses, scores, ids; image size unknown: 0 x 0)."""
    shifts = np.stack([tr.shift(step) for tr in tracks])
    return Instances(
        (0, 0),
        boxes=(np.stack([tr.box for tr in tracks]) + np.tile(shifts, 2)).astype(np.float32),
        keypoints=(np.stack([tr.keypoints for tr in tracks]) + shifts[:, None]).astype(np.float32),
        keypoint_scores=np.stack([tr.keypoint_scores for tr in tracks]).astype(np.float32),
        scores=np.array([tr.score for tr in tracks], np.float32),
        det_scores=np.array([tr.det_score for tr in tracks], np.float32),
        masks=np.zeros((len(tracks), 0, 0), bool),
        track_id=np.array([tr.track_id for tr in tracks], np.int32),
    )
