"""Validation: segm AP of pose-prompted masks, scored by pycocotools.

Each val person's pose (GT keypoints, or every detected pose of the image)
prompts the model exactly as the loop's ``SAM2Segmenter`` does: points chosen
by the configured :class:`~bmp.prompts.PromptConfig` (MaxVis₃ for
SAM-pose2seg), one batched single-mask decode, logits > threshold at the
original size, small holes filled and sprinkles removed. The result score is
the pose's score (1 for GT poses) times the predicted IoU.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..evaluation.cocoeval import coco_metrics
from ..masks import encode_rle
from ..models.sam_decode import decode_by_point_count
from ..models.sam_features import EncoderFeatures, set_features
from ..prompts import PromptConfig, confidence_channel, select_prompts
from .config import ValConfig
from .data import ImageEntry, PersonMaskDataset, PoseSet, load_model_input
from .features import FrozenEncoder


def image_predictor(
    model: torch.nn.Module, mask_threshold: float = 0.0, max_hole_area: int = 10, max_sprinkle_area: int = 50
) -> Any:
    """A ``SAM2ImagePredictor`` for ``model``: validation decodes with sam2's own
    prompt transform and the loop segmenter's post-processing."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from ..models.segmenters import sam2_cleanup_transforms

    predictor = SAM2ImagePredictor(model, mask_threshold=mask_threshold)
    predictor._transforms = sam2_cleanup_transforms(
        model.image_size, mask_threshold, max_hole_area, max_sprinkle_area
    )
    return predictor


@torch.no_grad()
def predict_masks(
    predictor: Any,
    features: EncoderFeatures,
    orig_hw: tuple[int, int],
    poses: PoseSet,
    prompts: PromptConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks of ``poses`` in one image (``features`` of that image only).

    The predictor's model should be in eval mode, as it is in the loop; its
    transforms carry the mask clean-up (:func:`image_predictor`).

    Returns:
        masks (N, H, W) bool, predicted IoU (N,), and ``prompted`` (N,) bool --
        False for a pose with no usable keypoint (empty mask, IoU 0).
    """
    h, w = orig_hw
    n = len(poses)
    masks = np.zeros((n, h, w), dtype=bool)
    ious = np.zeros(n, dtype=np.float32)
    points, labels = select_prompts(
        poses.keypoints, poses.keypoint_scores, confidence_channel(poses, prompts), prompts
    )
    prompted = (labels > 0).any(1)
    rows = np.flatnonzero(prompted)
    if len(rows):
        set_features(predictor, features, orig_hw)
        raw, iou = decode_by_point_count(predictor, points[rows], labels[rows])
        masks[rows] = raw.cpu().numpy()
        ious[rows] = iou
    return masks, ious, prompted


def predict_dataset(
    model: torch.nn.Module,
    encoder: FrozenEncoder,
    dataset: PersonMaskDataset,
    cfg: ValConfig,
    autocast: AbstractContextManager | None = None,
) -> list[dict[str, Any]]:
    """COCO segm results for every val image of ``dataset``."""
    prompts = PromptConfig(**cfg.prompts)
    predictor = image_predictor(model, cfg.mask_threshold, cfg.max_hole_area, cfg.max_sprinkle_area)
    results: list[dict[str, Any]] = []
    name = Path(dataset.spec.ann_file).stem
    for entry in tqdm(dataset.images, desc=f"val {name}", unit="img", dynamic_ncols=True, leave=False):
        results += _predict_entry(predictor, encoder, dataset, entry, prompts, cfg, autocast)
    return results


def _predict_entry(
    predictor: Any, encoder: FrozenEncoder, dataset: PersonMaskDataset, entry: ImageEntry,
    prompts: PromptConfig, cfg: ValConfig, autocast: AbstractContextManager | None,
) -> list[dict[str, Any]]:
    if len(entry.prompts) == 0:
        return []
    model_input = load_model_input(entry, predictor.model.image_size)
    with autocast or nullcontext():
        features = encoder([model_input.key], [model_input.image])
        masks, ious, prompted = predict_masks(
            predictor, features, model_input.orig_hw, entry.prompts, prompts
        )
    return [
        {
            "image_id": entry.image_id,
            "category_id": dataset.person_category,
            "segmentation": encode_rle(masks[i]),
            "score": round(float(entry.prompts.scores[i] * ious[i]), 5),
        }
        for i in np.flatnonzero(prompted)
    ]


def validate(
    model: torch.nn.Module,
    encoder: FrozenEncoder,
    datasets: list[PersonMaskDataset],
    cfg: ValConfig,
    autocast: AbstractContextManager | None = None,
) -> dict[str, dict[str, float]]:
    """``{dataset name: COCOeval segm stats}`` (AP, AP50, ..., AR100, ...)."""
    was_training = [m.training for m in (model.sam_prompt_encoder, model.sam_mask_decoder)]
    model.eval()
    try:
        out = {}
        for dataset in datasets:
            results = predict_dataset(model, encoder, dataset, cfg, autocast)
            ids = [e.image_id for e in dataset.images]
            name = Path(dataset.spec.ann_file).stem
            name = name if name not in out else f"{name}_{len(out)}"
            out[name] = coco_metrics(
                dataset.coco, results, iou_types=("segm",), img_ids=ids
            )["segm"]
        return out
    finally:
        model.sam_prompt_encoder.train(was_training[0])
        model.sam_mask_decoder.train(was_training[1])
