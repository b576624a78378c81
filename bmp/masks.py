"""Mask operations of the loop: clean-up, exclusivity, mask-out, RLE.

The loop's operations (:func:`exclusive_masks`, :func:`mask_out`,
:func:`fill_missing_masks`, :func:`component_areas`) take numpy arrays or torch
tensors and answer in the same kind, on the same device, so masks a GPU model
produced never leave the GPU inside the loop. One torch implementation serves
both: numpy inputs are wrapped without a copy.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from .structures import Instances, MaskArray


def _tensor(x: MaskArray, device: torch.device | None = None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if device is None else x.to(device)
    return torch.from_numpy(np.ascontiguousarray(x)).to(device or "cpu")


def _like(result: torch.Tensor, reference: MaskArray) -> MaskArray:
    return result if isinstance(reference, torch.Tensor) else result.cpu().numpy()


def to_numpy(x: MaskArray) -> np.ndarray:
    """A host numpy view/copy of an array or tensor."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def remove_small_regions(mask: np.ndarray, max_hole_area: int, max_sprinkle_area: int) -> np.ndarray:
    """Fill holes smaller than ``max_hole_area`` px, drop islands smaller than
    ``max_sprinkle_area`` px, on the host (one full-resolution mask)."""
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


def component_areas(region: torch.Tensor, max_rounds: int = 512) -> torch.Tensor:
    """For each pixel of ``region`` (N, H, W) bool, the area of its
    8-connected component (0 outside the region), on the region's device.

    This is what sam2's optional CUDA extension computes for its hole / sprinkle
    clean-up; here in plain torch so it also runs where that extension is not
    built. Labels start as pixel indices; each round every pixel takes the
    smallest label among its 3x3 neighbours and then its label's label (pointer
    jumping), so a component converges to its smallest index in a number of
    rounds that grows with the log of its size for compact shapes (SAM's
    256x256 masks: about 10).
    """
    n, h, w = region.shape
    if n == 0 or h * w == 0:
        return torch.zeros_like(region, dtype=torch.int32)
    # float32 labels are exact below 2**24, and max_pool2d needs floats.
    if h * w >= 2**24:
        raise ValueError(f"component_areas: {h}x{w} masks are too large")
    big = float(h * w)
    index = torch.arange(h * w, device=region.device, dtype=torch.float32).view(1, h, w)
    labels = torch.where(region, index, big)
    for _ in range(max_rounds):
        smallest = -F.max_pool2d(-labels[:, None], 3, stride=1, padding=1)[:, 0]
        smallest = torch.where(region, smallest, big)
        flat = smallest.view(n, -1)
        jumped = torch.gather(flat, 1, flat.clamp(max=big - 1).long()).view(n, h, w)
        new = torch.where(region, torch.minimum(smallest, jumped), big)
        if torch.equal(new, labels):
            break
        labels = new
    ids = torch.where(region, labels, 0).long().view(n, -1)
    counts = torch.zeros(n, h * w, device=region.device, dtype=torch.int32)
    counts.scatter_add_(1, ids, region.view(n, -1).int())
    return torch.where(region, torch.gather(counts, 1, ids).view(n, h, w), 0)


def fill_small_regions(
    logits: torch.Tensor, threshold: float, max_hole_area: int, max_sprinkle_area: int
) -> torch.Tensor:
    """SAM 2's mask clean-up on (N, H, W) logits: background components of at
    most ``max_hole_area`` px become foreground, then foreground components of
    at most ``max_sprinkle_area`` px become background (logits pushed 10 past
    ``threshold``), as ``sam2.utils.transforms.SAM2Transforms.postprocess_masks``
    does before upsampling."""
    if max_hole_area > 0:
        holes = component_areas(logits <= threshold)
        logits = torch.where((holes > 0) & (holes <= max_hole_area), threshold + 10.0, logits)
    if max_sprinkle_area > 0:
        islands = component_areas(logits > threshold)
        logits = torch.where((islands > 0) & (islands <= max_sprinkle_area), threshold - 10.0, logits)
    return logits


def exclusive_masks(masks: MaskArray, scores: np.ndarray, dense: bool | None = None) -> MaskArray:
    """Give every pixel claimed by several masks to the highest-scoring one.

    Args:
        masks: (N, H, W) bool, numpy or torch (answered in kind).
        scores: (N,) segmenter confidence.
        dense: decide every pixel (no data-dependent shapes, so no host sync:
            the default on CUDA) or only the contested ones (default elsewhere).
    Returns:
        (N, H, W) bool, pairwise disjoint.
    """
    m = _tensor(masks).bool()
    if len(m) <= 1:
        return _like(m.clone(), masks)
    # Stable ordering on ties: the earlier instance wins.
    order = np.lexsort((-np.arange(len(scores)), np.asarray(scores)))
    rank_np = np.empty(len(scores), dtype=np.int16)
    rank_np[order] = np.arange(len(scores))
    rank = torch.from_numpy(rank_np).to(m.device)
    ids = torch.arange(len(m), device=m.device)
    if m.is_cuda if dense is None else dense:
        owner = torch.where(m, rank[:, None, None], -1).argmax(0)
        return _like(m & (owner[None] == ids[:, None, None]), masks)
    # On the host only contested pixels need a decision; in practice few.
    contested = m.sum(0, dtype=torch.int16) > 1
    out = m.clone()
    claims = m[:, contested]  # (N, P)
    owner = torch.where(claims, rank[:, None], -1).argmax(0)
    out[:, contested] = claims & (owner[None] == ids[:, None])
    return _like(out, masks)


def mask_out(image: MaskArray, masks: MaskArray) -> MaskArray:
    """A copy of ``image`` (H, W, C) with every pixel under any of ``masks``
    (N, H, W) set to 0 (black); numpy or torch, answered like ``image``."""
    if isinstance(image, torch.Tensor):
        if len(masks) == 0:
            return image.clone()
        keep = ~_tensor(masks, image.device).any(0)
        return image * keep[..., None].to(image.dtype)
    out = image.copy()
    if len(masks):
        out[to_numpy(masks).any(0)] = 0
    return out


def box_masks(boxes: np.ndarray, size: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, H, W) bool masks filling each xyxy box (clipped to the image)."""
    h, w = size
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float64), device=device)
    ys = torch.arange(h, device=device, dtype=torch.float64)[None, :, None]
    xs = torch.arange(w, device=device, dtype=torch.float64)[None, None, :]
    return (
        (xs >= b[:, 0, None, None].floor()) & (xs < b[:, 2, None, None].ceil())
        & (ys >= b[:, 1, None, None].floor()) & (ys < b[:, 3, None, None].ceil())
    )


def fill_missing_masks(people: Instances, found: Instances | None, min_iou: float = 0.5) -> MaskArray:
    """``people.masks`` with every empty mask replaced: by the mask of the
    person in ``found`` whose box overlaps it best (IoU >= ``min_iou``), else by
    the person's box. Answered like ``people.masks``, on its device."""
    masks = _tensor(people.masks).bool()
    dev = masks.device
    empty = ~masks.flatten(1).any(1)
    stand_in = box_masks(people.boxes, people.image_size, dev)
    if found is not None and len(found) and len(people):
        # Boxes are host records; only the choice per person crosses over.
        iou = box_iou(people.boxes, found.boxes)
        best = iou.argmax(1)
        earlier = _tensor(found.masks, dev).bool()[torch.from_numpy(best).to(dev)]
        close = torch.from_numpy(iou.max(1) >= min_iou).to(dev) & earlier.flatten(1).any(1)
        stand_in = torch.where(close[:, None, None], earlier, stand_in)
    return _like(torch.where(empty[:, None, None], stand_in, masks), people.masks)


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


def mask_iou(a: MaskArray, b: MaskArray) -> np.ndarray:
    """(N, M) IoU between two stacks of (H, W) bool masks (numpy or torch)."""
    fa = to_numpy(a).reshape(len(a), -1).astype(np.float32)
    fb = to_numpy(b).reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)
