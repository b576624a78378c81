"""The BBox-Mask-Pose loop.

Per image (BMP_NOTES, "The loop")::

    detect_input = original
    repeat num_iters times:
        1. detect people on detect_input
        2. estimate their poses on the original image
        3. merge with earlier iterations by OKS pose-NMS
        4. segment the new people with the pose-prompted segmenter (original image)
        5. make all masks exclusive
        6. black out every found person: detect_input = mask_out(original, masks)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchvision.ops import nms

from .config import LoopConfig, load_config
from .images import ImageLike, load_image
from .masks import exclusive_masks, mask_out
from .models import DETECTORS, POSE_ESTIMATORS, SEGMENTERS, Detector, PoseEstimator, Segmenter
from .models.base import build_component
from .pose_nms import pose_nms
from .structures import Instances

STAGES = ("detect", "pose", "nms", "segment", "exclusive", "mask_out")


@dataclass
class StageTimes:
    """Seconds spent per loop stage in the last :meth:`BMP.predict` call."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start

    def summary(self) -> str:
        """``detect 31ms, pose 12ms, ...`` (the per-stage line of the CLI)."""
        return ", ".join(f"{k} {v * 1000:.0f}ms" for k, v in self.seconds.items())


@dataclass
class IterationRecord:
    """The loop's state after one iteration.

    - ``detect_input``: the (masked) image the detector saw.
    - ``detections``: step 1's output (boxes, detector scores and masks), before pose.
    - ``people``: everyone found up to and including this iteration, with
      exclusive masks among them.
    """

    iteration: int
    detect_input: np.ndarray
    detections: Instances
    people: Instances


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class BMP:
    """Detection, pose and segmentation of every person in an image by the
    BBox-Mask-Pose loop.

    >>> bmp = BMP.from_config("configs/bmp_lite.py")
    >>> people = bmp.predict("image.jpg")
    >>> people.boxes, people.keypoints, people.masks, people.iteration
    """

    def __init__(
        self,
        detector: Detector,
        pose: PoseEstimator,
        segmenter: Segmenter,
        loop: LoopConfig | None = None,
    ) -> None:
        self.detector = detector
        self.pose = pose
        self.segmenter = segmenter
        self.loop = loop or LoopConfig()
        self.times = StageTimes()
        #: What the detector saw in each iteration of the last call (for --vis and tests).
        self.detector_inputs: list[np.ndarray] = []

    @classmethod
    def from_config(
        cls,
        config: str | os.PathLike | dict | Any,
        device: str | None = None,
        weights_dirs: Sequence[str | os.PathLike] = (),
        num_iters: int | None = None,
    ) -> BMP:
        """Build the loop from an mmengine config file (or dict).

        Args:
            config: path to a config such as ``configs/bmp_lite.py``.
            device: ``'cpu'``, ``'cuda'``, ``'cuda:1'``; default: the config's,
                else CUDA when available.
            weights_dirs: folders searched for checkpoints before the cache.
            num_iters: override ``loop.num_iters``.
        """
        cfg = load_config(config)
        device = device or cfg.get("device") or default_device()
        dirs = [os.fspath(d) for d in weights_dirs] + list(cfg.get("weights_dirs") or [])
        loop_values = dict(cfg.get("loop") or {})
        if num_iters is not None:
            loop_values["num_iters"] = num_iters
        common = dict(device=device, weights_dirs=dirs)
        return cls(
            detector=build_component(DETECTORS, cfg.detector, "detector", **common),
            pose=build_component(POSE_ESTIMATORS, cfg.pose, "pose", **common),
            segmenter=build_component(SEGMENTERS, cfg.segmenter, "segmenter", **common),
            loop=LoopConfig.from_dict(loop_values),
        )

    def predict(
        self,
        image: ImageLike,
        num_iters: int | None = None,
        color_order: str = "rgb",
    ) -> Instances:
        """Every person in ``image``.

        Args:
            image: a path, or an (H, W[, 1|3|4]) array / tensor.
            num_iters: loop iterations (default: the config's).
            color_order: ``'rgb'`` or ``'bgr'`` for 3/4-channel arrays.
        Returns:
            :class:`Instances` with boxes, scores, keypoints, visibility, masks and
            the iteration each person was found in, ordered by iteration.
        """
        return self._run(image, num_iters, color_order, record=False)[0]

    def predict_iterations(
        self,
        image: ImageLike,
        num_iters: int | None = None,
        color_order: str = "rgb",
    ) -> list[IterationRecord]:
        """The loop's state after every iteration, for measuring what each one
        adds. ``records[-1].people`` equals what :meth:`predict` returns. The loop
        stops early after an iteration that detects nobody, so the list can be
        shorter than ``num_iters``."""
        return self._run(image, num_iters, color_order, record=True)[1]

    def _run(
        self, image: ImageLike, num_iters: int | None, color_order: str, record: bool
    ) -> tuple[Instances, list[IterationRecord]]:
        if isinstance(image, str | os.PathLike) and hasattr(self.detector, "select"):
            self.detector.select(os.fspath(image))
        original = load_image(image, color_order)
        self.times = StageTimes()
        self.detector_inputs = []
        records: list[IterationRecord] = []
        with self.times("segment"):
            self.segmenter.set_image(original)  # once per image, reused by every iteration
        found = Instances(original.shape[:2])
        detect_input = original
        for iteration in range(1, (num_iters or self.loop.num_iters) + 1):
            self.detector_inputs.append(detect_input)
            detections = self.detect(detect_input, iteration)
            if len(detections):
                new = self.estimate_pose(original, detections)
                found = self.merge(found, new)
                found = self.segment_new(found, iteration)
            if record:
                people = self.make_exclusive(found)
                records.append(IterationRecord(iteration, detect_input, detections, people))
            if len(detections) == 0:
                break  # the detector input would not change any more
            # Step 5 is applied to outputs only: exclusivity moves pixels between
            # masks but never changes their union, which is all that step 6 blacks out.
            with self.times("mask_out"):
                detect_input = mask_out(original, found.masks)
        return self.make_exclusive(found), records

    # The six steps ---------------------------------------------------------

    def detect(self, image: np.ndarray, iteration: int) -> Instances:
        """Step 1: people on the (masked) detector input, filtered by score and
        greedy box NMS, best first."""
        with self.times("detect"):
            people = self.detector.detect(image)
            h, w = image.shape[:2]
            boxes = people.boxes.copy()
            boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
            people = people.replace(boxes=boxes)
            keep = np.flatnonzero(people.det_scores > self.loop.det_score_thr)
            people = people[keep]
            if len(people):
                order = nms(
                    torch.from_numpy(people.boxes).float(),
                    torch.from_numpy(people.det_scores).float(),
                    self.loop.det_nms_iou,
                ).numpy()  # sorted by decreasing score
                people = people[order]
            return people.replace(
                iteration=np.full(len(people), iteration, np.int32), scores=people.det_scores.copy()
            )

    def estimate_pose(self, original: np.ndarray, people: Instances) -> Instances:
        """Step 2: top-down pose on the original image; score = mean keypoint score."""
        with self.times("pose"):
            people = self.pose.estimate(original, people)
            return people.replace(scores=people.keypoint_scores.mean(1).astype(np.float32))

    def merge(self, found: Instances, new: Instances) -> Instances:
        """Step 3: OKS pose-NMS over earlier and new people together."""
        with self.times("nms"):
            merged = Instances.cat([found, new])
            keep = pose_nms(merged, self.loop.oks_nms_thr, self.loop.oks_kpt_thr)
            return merged[keep]

    def segment_new(self, found: Instances, iteration: int) -> Instances:
        """Step 4: masks for this iteration's people (earlier people keep theirs;
        their prompts and the image embedding are unchanged)."""
        with self.times("segment"):
            new = found.iteration == iteration
            if not new.any():
                return found
            segmented = self.segmenter.segment(found[new])
            old = found[~new]
            return Instances.cat([old, segmented])

    def make_exclusive(self, found: Instances) -> Instances:
        """Step 5: every pixel claimed by several masks goes to the best mask."""
        if not self.loop.exclusive_masks or len(found) < 2:
            return found
        with self.times("exclusive"):
            return found.replace(masks=exclusive_masks(found.masks, found.mask_scores))
