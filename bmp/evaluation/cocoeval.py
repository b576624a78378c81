"""Thin, exact wrappers around pycocotools' COCOeval (no re-implemented AP)."""

from __future__ import annotations

import contextlib
import copy
import io
import os
from collections.abc import Iterable, Sequence
from typing import Any

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

#: Names of ``COCOeval.stats`` entries, per iou type, in summarize() order.
STAT_NAMES: dict[str, tuple[str, ...]] = {
    "bbox": ("AP", "AP50", "AP75", "APs", "APm", "APl",
             "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"),
    "segm": ("AP", "AP50", "AP75", "APs", "APm", "APl",
             "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"),
    "keypoints": ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"),
}


def load_gt(ann: COCO | str | os.PathLike) -> COCO:
    """A COCO ground-truth object, loaded quietly from a path if needed."""
    if isinstance(ann, COCO):
        return ann
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(os.fspath(ann))


def coco_metrics(
    gt: COCO | str | os.PathLike,
    results: Sequence[dict[str, Any]],
    iou_types: Iterable[str] = ("bbox", "segm", "keypoints"),
    img_ids: Sequence[int] | None = None,
    verbose: bool = False,
) -> dict[str, dict[str, float]]:
    """``COCOeval.stats`` for each iou type, keyed by :data:`STAT_NAMES`.

    Args:
        gt: ground truth (COCO object or annotation file).
        results: COCO result dicts (``image_id``, ``category_id``, ``score`` and
            ``bbox`` / ``segmentation`` / ``keypoints``).
        img_ids: evaluate only these images (default: all images in ``gt``).
        verbose: let ``summarize()`` print its table.
    Returns:
        ``{"bbox": {"AP": ..., ...}, ...}``; an iou type with no results has
        every value -1, as COCOeval reports missing data.
    """
    gt = load_gt(gt)
    out: dict[str, dict[str, float]] = {}
    for iou_type in iou_types:
        names = STAT_NAMES[iou_type]
        # loadRes fills in fields (area, bbox from segmentation) in place: copy.
        usable = [copy.deepcopy(r) for r in results if _has_field(r, iou_type)]
        if not usable:
            out[iou_type] = dict.fromkeys(names, -1.0)
            continue
        sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
        with sink:
            dt = gt.loadRes(usable)
            ev = COCOeval(gt, dt, iou_type)
            if img_ids is not None:
                ev.params.imgIds = list(img_ids)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        out[iou_type] = {n: float(v) for n, v in zip(names, ev.stats, strict=True)}
    return out


def _has_field(result: dict[str, Any], iou_type: str) -> bool:
    key = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}[iou_type]
    return result.get(key) is not None
