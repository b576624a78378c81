"""Weight-free person masks that follow the image: GrabCut seeded by poses.

No person-segmentation weights are needed. Per person, OpenCV's GrabCut (colour
Gaussian mixtures + a graph cut on the image's edges) runs on the person's reach
box, resampled to at most ``working_size`` pixels a side, with its seeds drawn
from the poses' skeleton distance ``u`` (:mod:`bmp.models.skeleton_field`, in
part radii):

- sure foreground: the person's own skeleton core (``u < sure_fg``) where no
  other body is nearer;
- probable foreground: the body template (``u < probable_fg``);
- sure background: other people's skeleton cores (``u_j < others_bg`` and
  nearer than this person's), beyond ``reach`` part radii, and (optionally)
  outside the person's box grown by ``box_margin``;
- probable background: the rest.

So a mask grows into clothing and hair of the person's colours and stops at
edges, but never takes a neighbour's skeleton. The masks overlap between
people; :class:`~bmp.models.pose2instance.Pose2InstanceSegmenter` with
``prior="grabcut"`` uses their union as its person probability and partitions
it by pose (exclusive masks), or with ``per_person_prior=True`` each person's own
mask as its probability. Work and memory per person grow with its box at
working resolution, plus one pass over the box at full resolution.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import cv2
import numpy as np
import torch

from ..structures import Instances
from .base import SEGMENTERS
from .skeleton_field import body_reach_boxes, person_scales, skeleton_distance_grid

#: (y0, y1, x0, x1) pixel box and the person's (y1 - y0, x1 - x0) bool mask in it.
PersonMask = tuple[tuple[int, int, int, int], np.ndarray]


def grabcut_seeds(
    own: np.ndarray, rivals: np.ndarray, sure_fg: float, probable_fg: float, others_bg: float, reach: float
) -> np.ndarray:
    """(H, W) uint8 GrabCut labels from skeleton distances.

    Args:
        own: (H, W) the person's ``u``. rivals: (R, H, W) the other people's.
        sure_fg, probable_fg, others_bg, reach: thresholds in part radii, see
            :class:`PoseGrabCutSegmenter`.
    """
    nearest = rivals.min(0) if len(rivals) else np.full_like(own, np.inf)
    labels = np.full(own.shape, cv2.GC_PR_BGD, np.uint8)
    labels[own < probable_fg] = cv2.GC_PR_FGD
    labels[(own < sure_fg) & (own < nearest)] = cv2.GC_FGD
    # Later rules win: a neighbour's skeleton or the far field is never this person.
    labels[(nearest < others_bg) & (nearest < own)] = cv2.GC_BGD
    labels[own > reach] = cv2.GC_BGD
    return labels


@SEGMENTERS.register_module()
class PoseGrabCutSegmenter:
    """Per-person GrabCut masks seeded by the poses (no weights). The masks may
    overlap; as ``Pose2InstanceSegmenter``'s prior they become exclusive.

    Args:
        kpt_thr: keypoints with visibility >= this are drawn.
        working_size: GrabCut runs on the reach box resampled to at most this
            many pixels along its longer side (cost ~ its square).
        iterations: GrabCut's rounds of refitting the colour models.
        sure_fg: skeleton core radius (part radii) taken as sure foreground.
        probable_fg: body template radius taken as probable foreground.
        others_bg: other people's skeleton core radius taken as sure background.
        reach: beyond this many part radii from the skeleton is sure background
            (Pose2Instance's mask prior cannot move a boundary farther than
            ``radius + T logit(1 - floor)`` ~ 2 anyway).
        box_margin: when set, outside the person's box grown by this fraction of
            its size is sure background too (None: boxes are ignored). A
            detector's box bounds the person; 0.05 leaves room for its error.
    """

    def __init__(
        self,
        kpt_thr: float = 0.3,
        working_size: int = 128,
        iterations: int = 3,
        sure_fg: float = 0.4,
        probable_fg: float = 1.0,
        others_bg: float = 0.5,
        reach: float = 2.0,
        box_margin: float | None = 0.05,
    ) -> None:
        if working_size < 8:
            raise ValueError(f"working_size must be >= 8, got {working_size}")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        if not 0 < sure_fg <= probable_fg < reach:
            raise ValueError(
                f"need 0 < sure_fg ({sure_fg}) <= probable_fg ({probable_fg}) < reach ({reach})"
            )
        if others_bg <= 0:
            raise ValueError(f"others_bg must be > 0, got {others_bg}")
        if box_margin is not None and box_margin < 0:
            raise ValueError(f"box_margin must be >= 0 or None, got {box_margin}")
        self.kpt_thr = kpt_thr
        self.working_size = working_size
        self.iterations = iterations
        self.sure_fg = sure_fg
        self.probable_fg = probable_fg
        self.others_bg = others_bg
        self.reach = reach
        self.box_margin = box_margin
        self._image: np.ndarray | None = None

    def set_image(self, image: np.ndarray) -> None:
        """Keeps a reference to the (H, W, 3) uint8 image (no copy)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"PoseGrabCutSegmenter needs an (H, W, 3) uint8 image, got {image.dtype} "
                             f"{image.shape}")
        self._image = image

    def segment(self, people: Instances, others: Instances | None = None) -> Instances:
        """Fills ``masks`` (N, H, W), overlapping, and ``mask_scores`` (N,): the
        mean score of the drawn keypoints. ``others`` (earlier people) seed
        background only."""
        h, w = people.image_size
        n = len(people)
        groups = [people] if others is None else [people, others]
        keypoints = np.concatenate([g.keypoints for g in groups])
        valid = np.concatenate([self._valid(g) for g in groups])
        boxes = np.concatenate([g.boxes for g in groups])
        masks = np.zeros((n, h, w), dtype=bool)  # lazily mapped: only boxes get pages
        for i, ((y0, y1, x0, x1), crop) in self.person_masks(keypoints, valid, boxes, n):
            masks[i, y0:y1, x0:x1] = crop
        own = valid[:n]
        scores = np.where(own, people.keypoint_scores, 0).sum(1) / np.maximum(own.sum(1), 1)
        return people.replace(masks=masks, mask_scores=scores.astype(np.float32))

    def person_masks(
        self, keypoints: np.ndarray, valid: np.ndarray, boxes: np.ndarray, num_own: int
    ) -> Iterator[tuple[int, PersonMask]]:
        """``(i, (box, mask))`` for each of the first ``num_own`` people with a
        drawn keypoint. ``keypoints`` (N, 17, 2), ``valid`` (N, 17) and xyxy
        ``boxes`` (N, 4): the rest of the N people only seed background."""
        image = self._require_image()
        h, w = image.shape[:2]
        scales = person_scales(boxes, keypoints, valid)
        reach = body_reach_boxes(keypoints, valid, scales, self.reach)
        for i in range(num_own):
            if np.isnan(reach[i, 0]):
                continue
            x0, y0 = max(0, math.floor(reach[i, 0])), max(0, math.floor(reach[i, 1]))
            x1, y1 = min(w, math.ceil(reach[i, 2]) + 1), min(h, math.ceil(reach[i, 3]) + 1)
            if x0 >= x1 or y0 >= y1:
                continue
            yield i, ((y0, y1, x0, x1), self._refine(image, i, (y0, y1, x0, x1), keypoints, valid, boxes,
                                                     scales, reach))

    def _refine(
        self,
        image: np.ndarray,
        i: int,
        box: tuple[int, int, int, int],
        keypoints: np.ndarray,
        valid: np.ndarray,
        boxes: np.ndarray,
        scales: np.ndarray,
        reach: np.ndarray,
    ) -> np.ndarray:
        """Person ``i``'s (y1 - y0, x1 - x0) bool mask on ``box``."""
        y0, y1, x0, x1 = box
        step = max(1.0, max(x1 - x0, y1 - y0) / self.working_size)
        cols, rows = max(2, round((x1 - x0) / step)), max(2, round((y1 - y0) / step))
        sx, sy = (x1 - x0) / cols, (y1 - y0) / rows
        crop = image[y0:y1, x0:x1]
        small = crop if (cols, rows) == (x1 - x0, y1 - y0) else cv2.resize(
            crop, (cols, rows), interpolation=cv2.INTER_AREA)
        # Only the rivals that reach this box can seed it: one batched field.
        near = (reach[:, 0] < x1) & (reach[:, 2] >= x0) & (reach[:, 1] < y1) & (reach[:, 3] >= y0)
        near[i] = False
        index = np.concatenate([[i], np.flatnonzero(near)])
        # Keypoints in working-pixel units, pixel centres at integers.
        origin = np.array([x0 - 0.5 + 0.5 * sx, y0 - 0.5 + 0.5 * sy], np.float32)
        local = (keypoints[index] - origin) / np.array([sx, sy], np.float32)
        u = skeleton_distance_grid(
            torch.from_numpy(np.ascontiguousarray(local, np.float32)), torch.from_numpy(valid[index]),
            torch.from_numpy(scales[index] / math.sqrt(sx * sy)), (0, 0), 1, (rows, cols),
            max_elements=1 << 18,
        ).numpy()
        labels = grabcut_seeds(u[0], u[1:], self.sure_fg, self.probable_fg, self.others_bg, self.reach)
        if self.box_margin is not None:
            self._outside_box_is_background(labels, boxes[i], origin, (sx, sy))
        fg = (labels == cv2.GC_FGD).any()
        if fg and ((labels == cv2.GC_BGD) | (labels == cv2.GC_PR_BGD)).any():
            bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
            # GrabCut's k-means starts from OpenCV's global RNG: reseeded, a
            # person's mask does not depend on who was segmented before.
            cv2.setRNGSeed(0)
            # A crop too flat to fit the colour mixtures raises: the seeds stand.
            with contextlib.suppress(cv2.error):
                cv2.grabCut(small, labels, None, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)
        person = ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).astype(np.uint8) * 255
        if (cols, rows) != (x1 - x0, y1 - y0):
            person = cv2.resize(person, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        return person > 127

    def _outside_box_is_background(
        self, labels: np.ndarray, box: np.ndarray, origin: np.ndarray, step: tuple[float, float]
    ) -> None:
        assert self.box_margin is not None
        rows, cols = labels.shape
        bx0, by0, bx1, by1 = (float(v) for v in box)
        mx, my = self.box_margin * (bx1 - bx0), self.box_margin * (by1 - by0)
        if bx1 - bx0 < 1 or by1 - by0 < 1:
            return  # no box to trust
        xs = origin[0] + step[0] * np.arange(cols)
        ys = origin[1] + step[1] * np.arange(rows)
        outside_x = (xs < bx0 - mx) | (xs > bx1 + mx)
        outside_y = (ys < by0 - my) | (ys > by1 + my)
        labels[outside_y[:, None] | outside_x[None, :]] = cv2.GC_BGD

    def _valid(self, people: Instances) -> np.ndarray:
        return (people.visibility >= self.kpt_thr) & np.isfinite(people.keypoints).all(-1)

    def _require_image(self) -> np.ndarray:
        if self._image is None:
            raise RuntimeError("PoseGrabCutSegmenter.set_image must be called before segmenting")
        return self._image

