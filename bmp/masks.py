"""Mask operations of the loop: clean-up, exclusivity, mask-out, RLE."""

from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from .structures import Instances


def remove_small_regions(mask: np.ndarray, max_hole_area: int, max_sprinkle_area: int) -> np.ndarray:
    """Fill holes smaller than ``max_hole_area`` px, drop islands smaller than
    ``max_sprinkle_area`` px (SAM's own post-processing, done on the host so it
    works without sam2's CUDA extension)."""
    out = mask.astype(bool)
    if max_hole_area > 0:
        out = _drop_components(out, max_hole_area, fill_holes=True)
    if max_sprinkle_area > 0:
        out = _drop_components(out, max_sprinkle_area, fill_holes=False)
    return out


def _drop_components(mask: np.ndarray, max_area: int, fill_holes: bool) -> np.ndarray:
    region = ~mask if fill_holes else mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] < max_area) + 1
    if len(small) == 0:
        return mask
    flip = np.isin(labels, small)
    return mask | flip if fill_holes else mask & ~flip


def exclusive_masks(masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Give every pixel claimed by several masks to the highest-scoring one.

    Args:
        masks: (N, H, W) bool.
        scores: (N,) segmenter confidence.
    Returns:
        (N, H, W) bool, pairwise disjoint.
    """
    if len(masks) <= 1:
        return masks.astype(bool, copy=True)
    masks = masks.astype(bool)
    out = masks.copy()
    # Only pixels claimed more than once need a decision; in practice few.
    contested = masks.sum(0, dtype=np.int16) > 1
    if not contested.any():
        return out
    # Stable ordering on ties: the earlier instance wins.
    rank = np.empty(len(scores), dtype=np.int16)
    rank[np.lexsort((-np.arange(len(scores)), np.asarray(scores)))] = np.arange(len(scores))
    claims = masks[:, contested]  # (N, P)
    owner = np.where(claims, rank[:, None], -1).argmax(0)
    out[:, contested] = claims & (owner[None] == np.arange(len(masks))[:, None])
    return out


def mask_out(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """A copy of ``image`` (H, W, C) with every pixel under any of ``masks``
    (N, H, W) set to 0 (black)."""
    out = image.copy()
    if len(masks):
        out[np.any(masks, axis=0)] = 0
    return out


def box_masks(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W) bool masks filling each xyxy box (clipped to the image)."""
    h, w = size
    ys = np.arange(h)[None, :, None]
    xs = np.arange(w)[None, None, :]
    b = np.asarray(boxes, dtype=np.float64)
    return (
        (xs >= np.floor(b[:, 0, None, None])) & (xs < np.ceil(b[:, 2, None, None]))
        & (ys >= np.floor(b[:, 1, None, None])) & (ys < np.ceil(b[:, 3, None, None]))
    )


def fill_missing_masks(people: Instances, found: Instances | None, min_iou: float = 0.5) -> np.ndarray:
    """``people.masks`` with every empty mask replaced: by the mask of the
    person in ``found`` whose box overlaps it best (IoU >= ``min_iou``), else by
    the person's box."""
    masks = people.masks.copy()
    empty = np.flatnonzero(~masks.reshape(len(masks), -1).any(1))
    if len(empty) == 0:
        return masks
    masks[empty] = box_masks(people.boxes[empty], people.image_size)
    if found is not None and len(found):
        iou = box_iou(people.boxes[empty], found.boxes)
        best = iou.argmax(1)
        for row, i in enumerate(empty):
            if iou[row, best[row]] >= min_iou and found.masks[best[row]].any():
                masks[i] = found.masks[best[row]]
    return masks


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-9)


def encode_rle(mask: np.ndarray) -> dict:
    """COCO RLE of one (H, W) bool mask, with ``counts`` as str (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU between two stacks of (H, W) bool masks."""
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)
