"""Where the next click goes: the point-sampling strategies of SAM-pose2seg.

SAM 2 is trained interactively: a first point, then correction points, each
placed from the error between the ground-truth mask and the previous
prediction (BMP_NOTES, "SAM-pose2seg"). The three strategies differ only in how
pose keypoints take part:

- :class:`MaskRefine` (SAM's default): 1st point uniform in the GT mask; later
  points uniform in the error region (with a small probability: in the GT mask).
- :class:`PoseMaskRefine`: 1st point = the available keypoint with the highest
  visibility; later points preferably an unused keypoint inside the error
  region (with a small probability: MaskRefine's rule); none there -> uniform
  in the error region.
- :class:`Pose1MaskRefine`: only the 1st point comes from the pose.

Everything works on one person at a time, in the model's input frame
(``S x S`` pixels, ``S`` = SAM's ``image_size``). Masks are (S, S) bool torch
tensors on any device; poses are numpy. Randomness comes only from the
``numpy.random.Generator`` passed in, so a run is reproducible on any device.

A click on a keypoint is always positive: at inference SAM-pose2seg is
prompted with positive keypoints only, so a keypoint is never taught as a
negative click. Keypoints therefore count as corrections only inside the
false-negative part of the error region (inside the GT, not predicted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..prompts import max_vis_indices

POSITIVE, NEGATIVE = 1, 0


@dataclass(frozen=True)
class Pose:
    """One person's keypoints in the model input frame.

    - ``keypoints`` (K, 2) float32 xy pixels
    - ``visibility`` (K,) float32 in [0, 1]; 0 = not available
    """

    keypoints: np.ndarray
    visibility: np.ndarray

    @staticmethod
    def empty(num_keypoints: int = 17) -> Pose:
        return Pose(np.zeros((num_keypoints, 2), np.float32), np.zeros(num_keypoints, np.float32))


@dataclass(frozen=True)
class Click:
    """One prompt point: ``xy`` in input pixels, ``label`` 1 positive / 0
    negative, ``keypoint`` the keypoint index it came from (None: from a mask)."""

    xy: tuple[float, float]
    label: int
    keypoint: int | None = None


def uniform_pixel(region: torch.Tensor, rng: np.random.Generator) -> tuple[float, float] | None:
    """A pixel (x, y) drawn uniformly from the True pixels of ``region`` (H, W), or None."""
    where = torch.nonzero(region)
    if len(where) == 0:
        return None
    y, x = where[int(rng.integers(len(where)))].tolist()
    return float(x), float(y)


def error_click(gt: torch.Tensor, pred: torch.Tensor, rng: np.random.Generator) -> Click:
    """SAM's correction click: uniform over the error region (false negatives
    and false positives together), positive in a false negative, negative in a
    false positive. A perfect prediction gets a negative click on the
    background, as SAM 2 does; a mask covering the whole frame gets a positive one.

    Args:
        gt: (H, W) bool ground truth.
        pred: (H, W) bool previous prediction.
    """
    false_neg = gt & ~pred
    false_pos = pred & ~gt
    n_fn, n_fp = int(false_neg.sum()), int(false_pos.sum())
    if n_fn + n_fp == 0:
        xy = uniform_pixel(~gt, rng)
        return Click(xy, NEGATIVE) if xy is not None else Click(uniform_pixel(gt, rng), POSITIVE)
    # One uniform draw over the union = pick the side by its share of pixels.
    if rng.random() < n_fn / (n_fn + n_fp):
        return Click(uniform_pixel(false_neg, rng), POSITIVE)
    return Click(uniform_pixel(false_pos, rng), NEGATIVE)


def mask_click(gt: torch.Tensor, rng: np.random.Generator) -> Click:
    """A positive click uniform in the GT mask (SAM's first click); an empty
    mask gets a negative click anywhere (SAM 2's rule for no foreground)."""
    xy = uniform_pixel(gt, rng)
    if xy is None:
        return Click(uniform_pixel(torch.ones_like(gt), rng), NEGATIVE)
    return Click(xy, POSITIVE)


def available_keypoints(pose: Pose, size: tuple[int, int], visibility_thr: float) -> np.ndarray:
    """Indices of keypoints that can be clicked, most visible first (ties: lower
    index): visibility >= ``visibility_thr`` (and > 0), finite, inside the
    (H, W) frame."""
    h, w = size
    kpts = np.asarray(pose.keypoints, dtype=np.float64)
    vis = np.asarray(pose.visibility, dtype=np.float64).copy()
    inside = np.isfinite(kpts).all(1) & (kpts[:, 0] >= 0) & (kpts[:, 1] >= 0)
    inside &= (kpts[:, 0] < w) & (kpts[:, 1] < h)
    vis[~inside | (vis <= 0)] = -np.inf
    return max_vis_indices(vis, num_points=len(vis), visibility_thr=visibility_thr)


def keypoint_pixel(xy: np.ndarray, size: tuple[int, int]) -> tuple[int, int]:
    """The (row, col) pixel a keypoint falls in, clipped to the frame."""
    h, w = size
    return min(max(int(xy[1]), 0), h - 1), min(max(int(xy[0]), 0), w - 1)


class MaskRefine:
    """SAM's default sampling (see module docstring).

    Args:
        prob_from_gt: probability that a correction click ignores the
            prediction and is drawn from the GT mask (SAM 2 uses 0.1).
    """

    name = "MaskRefine"

    def __init__(self, prob_from_gt: float = 0.1) -> None:
        _check_prob("prob_from_gt", prob_from_gt)
        self.prob_from_gt = prob_from_gt

    def first_click(self, gt: torch.Tensor, pose: Pose, rng: np.random.Generator) -> Click:
        return mask_click(gt, rng)

    def next_click(
        self, gt: torch.Tensor, pred: torch.Tensor, pose: Pose, used: set[int], rng: np.random.Generator
    ) -> Click:
        if self.prob_from_gt > 0 and rng.random() < self.prob_from_gt:
            return mask_click(gt, rng)
        return error_click(gt, pred, rng)


class Pose1MaskRefine(MaskRefine):
    """The 1st click is the most visible available keypoint (fallback: uniform
    in the GT mask); corrections follow :class:`MaskRefine`.

    Args:
        visibility_thr: keypoints with visibility >= this are available.
    """

    name = "Pose1MaskRefine"

    def __init__(self, visibility_thr: float = 0.5, prob_from_gt: float = 0.1) -> None:
        super().__init__(prob_from_gt)
        self.visibility_thr = visibility_thr

    def first_click(self, gt: torch.Tensor, pose: Pose, rng: np.random.Generator) -> Click:
        ranked = available_keypoints(pose, tuple(gt.shape), self.visibility_thr)
        if len(ranked) == 0:
            return mask_click(gt, rng)
        k = int(ranked[0])
        x, y = pose.keypoints[k]
        return Click((float(x), float(y)), POSITIVE, k)


class PoseMaskRefine(Pose1MaskRefine):
    """Pose-derived 1st click and pose-preferring corrections: the most visible
    unused available keypoint whose pixel is a false negative of the previous
    prediction; with probability ``prob_mask_rule`` MaskRefine's rule instead;
    when no keypoint qualifies, a uniform click in the error region.

    Args:
        visibility_thr: keypoints with visibility >= this are available.
        prob_mask_rule: probability of a plain MaskRefine correction.
        prob_from_gt: MaskRefine's GT-sampling probability (inside that rule).
    """

    name = "PoseMaskRefine"

    def __init__(
        self, visibility_thr: float = 0.5, prob_mask_rule: float = 0.1, prob_from_gt: float = 0.1
    ) -> None:
        super().__init__(visibility_thr, prob_from_gt)
        _check_prob("prob_mask_rule", prob_mask_rule)
        self.prob_mask_rule = prob_mask_rule

    def next_click(
        self, gt: torch.Tensor, pred: torch.Tensor, pose: Pose, used: set[int], rng: np.random.Generator
    ) -> Click:
        if self.prob_mask_rule > 0 and rng.random() < self.prob_mask_rule:
            return super().next_click(gt, pred, pose, used, rng)
        size = tuple(gt.shape)
        false_neg = gt & ~pred
        for k in available_keypoints(pose, size, self.visibility_thr):
            k = int(k)
            if k in used:
                continue
            if bool(false_neg[keypoint_pixel(pose.keypoints[k], size)]):
                x, y = pose.keypoints[k]
                return Click((float(x), float(y)), POSITIVE, k)
        return error_click(gt, pred, rng)


SAMPLERS: dict[str, type[MaskRefine]] = {
    c.name: c for c in (MaskRefine, PoseMaskRefine, Pose1MaskRefine)
}


def build_sampler(
    name: str, visibility_thr: float = 0.5, prob_from_gt: float = 0.1, prob_mask_rule: float = 0.1
) -> MaskRefine:
    """A sampler by name (``'MaskRefine'``, ``'PoseMaskRefine'``, ``'Pose1MaskRefine'``);
    each takes the probabilities that apply to it."""
    if name == "MaskRefine":
        return MaskRefine(prob_from_gt)
    if name == "Pose1MaskRefine":
        return Pose1MaskRefine(visibility_thr, prob_from_gt)
    if name == "PoseMaskRefine":
        return PoseMaskRefine(visibility_thr, prob_mask_rule, prob_from_gt)
    raise ValueError(f"sampler type must be one of {sorted(SAMPLERS)}, got {name!r}")


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"sampler.{name} must be in [0, 1], got {value}")
