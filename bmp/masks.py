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

from .structures import Instances, MaskArray, copy_masks, mask_region, to_numpy, to_tensor


def _like(result: torch.Tensor, reference: MaskArray) -> MaskArray:
    return result if isinstance(reference, torch.Tensor) else to_numpy(result)


def on_host(x: torch.Tensor) -> bool:
    """Whether ``x`` lives in host memory, where host libraries (OpenCV) and
    data-dependent shapes are cheap; elsewhere the device paths run."""
    return x.device.type == "cpu"


def component_areas(region: torch.Tensor, on_device: bool | None = None) -> torch.Tensor:
    """For each pixel of ``region`` (N, H, W) bool, the area of its
    8-connected component (0 outside the region), on the region's device.

    This is what sam2's optional CUDA extension computes for its hole / sprinkle
    clean-up. On the host OpenCV labels each mask; on a GPU (``on_device``,
    default: when the region is not on the CPU) a plain-torch labelling runs for
    all masks at once: every pixel points to a smaller pixel of its component,
    each round hooks trees onto their smallest neighbouring label and halves
    the paths (pointer jumping), until nothing changes -- a handful of rounds
    for SAM's 256x256 masks, even for noise with one sprawling component.
    """
    n, h, w = region.shape
    if n == 0 or h * w == 0:
        return torch.zeros_like(region, dtype=torch.int32)
    if on_device is None:
        on_device = not on_host(region)
    if not on_device:
        areas = [_opencv_areas(m) for m in region.numpy()]
        return torch.from_numpy(np.stack(areas))
    labels = _label_components(region.reshape(n, h * w), h, w)
    inside = region.reshape(n, -1)
    ids = torch.where(inside, labels, 0)
    counts = torch.zeros(n, h * w, device=region.device, dtype=torch.int32)
    counts.scatter_add_(1, ids, inside.int())
    return torch.where(inside, torch.gather(counts, 1, ids), 0).view(n, h, w)


def _opencv_areas(region: np.ndarray) -> np.ndarray:
    _, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    return np.where(region, stats[labels, cv2.CC_STAT_AREA], 0).astype(np.int32)


def _label_components(inside: torch.Tensor, h: int, w: int, max_rounds: int = 1000) -> torch.Tensor:
    """(N, H*W) long: each region pixel's component root (its smallest pixel
    index); undefined outside the region."""
    n = len(inside)
    outside = h * w  # a parent slot of its own, so gathers never leave the array
    index = torch.arange(h * w, device=inside.device).expand(n, -1)
    parent = torch.cat([torch.where(inside, index, outside),
                        torch.full((n, 1), outside, device=inside.device)], 1)
    for _ in range(max_rounds):
        before = parent.clone()
        # Float pooling is exact: labels stay below 2**24 for SAM-sized masks.
        own = parent[:, :-1].view(n, 1, h, w).float()
        smallest = (-F.max_pool2d(-own, 3, stride=1, padding=1)).view(n, -1).long()
        smallest = torch.where(inside, smallest, outside)
        parent.scatter_reduce_(1, parent[:, :-1], smallest, reduce="amin")  # hook the trees
        parent[:, :-1] = torch.minimum(parent[:, :-1], smallest)
        for _ in range(2):  # pointer jumping
            parent[:, :-1] = torch.gather(parent, 1, parent[:, :-1])
        if torch.equal(parent, before):
            break
    return parent[:, :-1]


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


def exclusive_masks(
    masks: MaskArray,
    scores: np.ndarray,
    iteration: np.ndarray | None = None,
    fixed: np.ndarray | None = None,
    dense: bool | None = None,
) -> MaskArray:
    """Give every pixel claimed by several masks to the best one.

    "Best" is the reference's rule (``_apply_exclusive_masks`` over the new and
    the old masks of an iteration, new first): the highest score; on equal
    scores the later ``iteration`` (the newer mask), then the lower index.
    Masks marked ``fixed`` never lose pixels: they decide which other masks
    lose theirs but keep everything they claim (the reference does not revisit
    earlier iterations' masks when it resolves a new one). With nothing fixed
    the result is pairwise disjoint.

    Args:
        masks: (N, H, W) bool, numpy or torch (answered in kind).
        scores: (N,) segmenter confidence.
        iteration: (N,) the iteration each mask was found in (default: all equal).
        fixed: (N,) bool, masks that keep all their pixels.
        dense: decide every pixel (no data-dependent shapes, so no host sync:
            the default on a GPU) or only the contested ones (default on the host).
    Returns:
        (N, H, W) bool.
    """
    m = to_tensor(masks).bool()
    n = len(m)
    if n <= 1:
        return _like(m.clone(), masks)
    it = np.zeros(n) if iteration is None else np.asarray(iteration)
    order = np.lexsort((-np.arange(n), it, np.asarray(scores)))  # last key is the primary one
    rank_np = np.empty(n, dtype=np.int16)
    rank_np[order] = np.arange(n)
    rank = torch.from_numpy(rank_np).to(m.device)
    ids = torch.arange(n, device=m.device)
    keeps_all = torch.as_tensor(np.zeros(n, bool) if fixed is None else np.asarray(fixed, bool))
    keeps_all = keeps_all.to(m.device)[:, None]
    if dense is None:
        dense = not on_host(m)
    if dense:
        owner = torch.where(m, rank[:, None, None], -1).argmax(0)
        won = (owner[None] == ids[:, None, None]) | keeps_all[..., None]
        return _like(m & won, masks)
    # On the host only contested pixels need a decision; in practice few. The
    # count and the copy touch each mask's own region only (copy_masks), not
    # N full images.
    host = to_numpy(m)
    count = np.zeros(host.shape[1:], dtype=np.uint8)
    for mask in host:
        region = mask_region(mask)
        if region is not None:
            count[region] += mask[region]
    contested = torch.from_numpy(count > 1)
    out = torch.from_numpy(copy_masks([host], [np.arange(n)]))
    claims = m[:, contested]  # (N, P)
    owner = torch.where(claims, rank[:, None], -1).argmax(0)
    out[:, contested] = claims & ((owner[None] == ids[:, None]) | keeps_all)
    return _like(out, masks)


def mask_out(image: MaskArray, masks: MaskArray) -> MaskArray:
    """A copy of ``image`` (H, W, C) with every pixel under any of ``masks``
    (N, H, W) set to 0 (black); numpy or torch, answered like ``image``."""
    if isinstance(image, torch.Tensor):
        if len(masks) == 0:
            return image.clone()
        keep = ~to_tensor(masks, image.device).any(0)
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
    masks = to_tensor(people.masks).bool()
    dev = masks.device
    empty = ~masks.flatten(1).any(1)
    stand_in = box_masks(people.boxes, people.image_size, dev)
    if found is not None and len(found) and len(people):
        # Boxes are host records; only the choice per person crosses over.
        iou = box_iou(people.boxes, found.boxes)
        best = iou.argmax(1)
        earlier = to_tensor(found.masks, dev).bool()[torch.from_numpy(best).to(dev)]
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


def segmentation_to_rle(segmentation: list | dict, height: int, width: int) -> dict:
    """A COCO annotation's ``segmentation`` (polygons, uncompressed RLE or
    compressed RLE) as one compressed RLE, polygons merged, as pycocotools'
    ``COCO.annToRLE`` reads it."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def decode_rle(rle: dict) -> np.ndarray:
    """The (H, W) bool mask of a COCO RLE whose ``counts`` is str or bytes
    (the inverse of :func:`encode_rle`)."""
    counts = rle["counts"]
    return mask_utils.decode({"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str)
                              else counts}).astype(bool)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The (H, W) bool ``mask`` resized to ``size`` = (h, w) by nearest neighbour
    (interpolating would invent soft edges a bool mask cannot hold)."""
    return cv2.resize(mask.astype(np.uint8, copy=False), (size[1], size[0]),
                      interpolation=cv2.INTER_NEAREST).astype(bool)


def mask_iou(a: MaskArray, b: MaskArray) -> np.ndarray:
    """(N, M) IoU between two stacks of (H, W) bool masks (numpy or torch)."""
    fa = to_numpy(a).reshape(len(a), -1).astype(np.float32)
    fb = to_numpy(b).reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)
