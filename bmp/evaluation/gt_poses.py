"""``--gt-kpts``: ground-truth poses in, masks out (the pose-to-segmentation
benchmark of Pose2Seg and SAM-pose2seg).

Every non-crowd person with at least one labelled keypoint (v > 0) is
segmented from its GT pose: a prompted segmenter (SAM 2) gets MaxSpread points
on the binary GT visibility with v = 0 dropped (``PromptConfig(method='gt')``);
a weight-free segmenter draws from the labelled keypoints. Persons without
labelled keypoints stay in the ground truth as misses: the benchmark is
unchanged, a pose-driven method simply cannot see them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..images import ImageError, load_image
from ..masks import encode_rle, exclusive_masks
from ..structures import NUM_KEYPOINTS, Instances
from .dataset import EvalDataset, EvalImage
from .records import Result


def instances_from_gt(anns: Sequence[dict[str, Any]], image_size: tuple[int, int]) -> Instances:
    """GT persons as :class:`Instances`: COCO boxes to xyxy, keypoint scores,
    visibility and presence = 1 where v > 0, else 0."""
    boxes = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    kpts = np.array([a["keypoints"] for a in anns], np.float32).reshape(-1, NUM_KEYPOINTS, 3)
    labelled = (kpts[..., 2] > 0).astype(np.float32)
    ones = np.ones(len(anns), np.float32)
    return Instances(
        image_size, boxes=boxes, scores=ones, det_scores=ones, keypoints=kpts[..., :2].copy(),
        keypoint_scores=labelled, visibility=labelled.copy(), presence=labelled.copy(),
        iteration=np.ones(len(anns), np.int32),
    )


def use_gt_prompts(segmenter: Any) -> Any:
    """Switch a prompted segmenter to MaxSpread on GT visibility (v = 0 dropped),
    keeping its number of points; segmenters without prompts are unchanged."""
    config = getattr(segmenter, "prompt_config", None)
    if config is not None:
        segmenter.prompt_config = dataclasses.replace(config, method="gt")
    return segmenter


def build_segmenter(
    config: str | os.PathLike, device: str | None, weights_dirs: Sequence[str | os.PathLike]
) -> Any:
    """Only the segmenter of a loop config (no detector or pose model is needed),
    with GT prompts."""
    from ..config import checkpoint_dirs, load_config
    from ..loop import default_device
    from ..models import SEGMENTERS
    from ..models.base import build_component

    cfg = load_config(config)
    device = device or cfg.get("device") or default_device()
    dirs = checkpoint_dirs(cfg, weights_dirs)
    segmenter = build_component(SEGMENTERS, cfg.segmenter, "segmenter", device=device, weights_dirs=dirs)
    return use_gt_prompts(segmenter)


class GTPosePredictor:
    """Masks for the GT poses of one image at a time (an ``ImagePredictor``)."""

    def __init__(self, segmenter: Any, dataset: EvalDataset) -> None:
        self.segmenter = segmenter
        self.dataset = dataset
        self.last_count = 0

    def __call__(self, image: EvalImage) -> dict[str, Any]:
        original = load_image(image.path)
        check_size(original, image)
        anns = [
            a for a in self.dataset.gt.imgToAnns[image.id]
            if not a["iscrowd"] and any(v > 0 for v in (a.get("keypoints") or [])[2::3])
        ]
        people = instances_from_gt(anns, original.shape[:2])
        self.segmenter.set_image(original)
        people = (self.segmenter.segment(people) if len(people) else people).to_host()
        exclusive = exclusive_masks(people.masks, people.mask_scores)
        self.last_count = len(people)
        gt_ids = [a["id"] for a in anns]
        return {"gt_kpts": {
            "segmenter": _mask_results(people.masks, people.mask_scores, image.id, gt_ids),
            "exclusive": _mask_results(exclusive, people.mask_scores, image.id, gt_ids),
        }}

    def to_record(self, payload: dict[str, Any], image: EvalImage) -> dict[str, Any]:
        # The masks are encoded in __call__ already: its payload is what callers read.
        return payload

    def progress(self) -> str:
        return f"{self.last_count} poses"


def _mask_results(masks: np.ndarray, scores: np.ndarray, image_id: int, gt_ids: list[int]) -> list[Result]:
    # Mask-only results: loadRes then takes box and area from the mask itself.
    return [
        {"image_id": image_id, "category_id": 1, "segmentation": encode_rle(m),
         "score": round(float(s), 5), "gt_id": int(g)}
        for m, s, g in zip(masks, scores, gt_ids, strict=True)
    ]


def check_size(image: np.ndarray, info: EvalImage) -> None:
    """Results of an image whose size differs from the annotation's cannot be
    compared with its masks: usually a wrong images folder."""
    if image.shape[:2] != (info.height, info.width):
        raise ImageError(
            f"{info.path} is {image.shape[1]}x{image.shape[0]} but the annotation says "
            f"{info.width}x{info.height} (wrong images folder?)"
        )
