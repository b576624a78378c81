"""Per-image AP and per-person matches, read from COCOeval's own per-image evaluation.

One ``COCOeval.evaluate()`` per iteration and iou type scores every image at
once; its ``evalImgs`` hold, per image, COCO's greedy matching (detections by
descending score, each taking the best still-free ground-truth person above the
threshold). From them:

- an image's AP is COCOeval's ``accumulate`` restricted to that image (101-point
  interpolated precision, averaged over IoU 0.50:0.95);
- a person is *matched* when COCO matched it at the 0.5 threshold (OKS for
  keypoints, box IoU for boxes). A person matched to a crowd region is neither
  a hit nor a false positive (COCO ignores it).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

#: Iou types scored per image (CrowdPose's keypoints have their own protocol: left out).
PER_IMAGE_IOU_TYPES = ("bbox", "segm", "keypoints")
_FIELD = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}

#: What :attr:`ImageMatches.people` holds per person.
MATCHED, FALSE_POSITIVE, IGNORED = "matched", "fp", "ignored"


@dataclass
class ImageMatches:
    """One image at one iteration for one iou type.

    ``ap`` is None where the image has no ground-truth person to find.
    ``people``: per result (in the order given), :data:`MATCHED`,
    :data:`FALSE_POSITIVE` or :data:`IGNORED`. ``missed``: the (x, y, w, h)
    boxes of ground-truth persons nobody matched, of ``num_gt`` that count
    (crowd regions, and for keypoints persons without keypoints, do not).
    """

    ap: float | None
    num_gt: int = 0
    people: list[str] = field(default_factory=list)
    missed: list[list[float]] = field(default_factory=list)


def match_images(
    gt: COCO, results: Mapping[int, Sequence[dict[str, Any]]], iou_type: str
) -> dict[int, ImageMatches]:
    """Per image id of ``results``: AP and matches of its results (COCO result dicts
    with the ground truth's category id) against ``gt``."""
    img_ids = sorted(results)
    flat = [copy.deepcopy(r) for i in img_ids for r in results[i]]  # loadRes edits them in place
    owner = [(i, n) for i in img_ids for n in range(len(results[i]))]
    out = {i: ImageMatches(ap=None, people=[FALSE_POSITIVE] * len(results[i])) for i in img_ids}
    if any(r.get(_FIELD[iou_type]) is None for r in flat):
        raise ValueError(f"some results have no {_FIELD[iou_type]!r}: cannot score {iou_type} per image")
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(flat) if flat else _no_results(gt), iou_type)
        ev.params.imgIds = img_ids
        ev.evaluate()
    dt_to_person = {n + 1: owner[n] for n in range(len(flat))}  # loadRes numbers results 1..N
    # evalImgs is ordered [category][area range][image]: the first images are area range "all".
    for index, image_id in enumerate(ev.params.imgIds):
        entry = ev.evalImgs[index]
        if entry is None:  # neither ground truth nor results
            continue
        _read_entry(entry, out[image_id], gt, ev.params.recThrs)
        for d, dt_id in enumerate(entry["dtIds"]):
            _, person = dt_to_person[dt_id]
            if entry["dtIgnore"][0, d]:
                out[image_id].people[person] = IGNORED
            elif entry["dtMatches"][0, d] > 0:
                out[image_id].people[person] = MATCHED
    return out


def _read_entry(entry: dict[str, Any], target: ImageMatches, gt: COCO, rec_thrs: np.ndarray) -> None:
    gt_ignore = np.asarray(entry["gtIgnore"], bool)
    target.num_gt = int((~gt_ignore).sum())
    if target.num_gt:
        target.ap = _image_ap(entry, target.num_gt, rec_thrs)
    for g, gt_id in enumerate(entry["gtIds"]):
        if not gt_ignore[g] and entry["gtMatches"][0, g] == 0:
            target.missed.append([round(float(v), 1) for v in gt.anns[gt_id]["bbox"]])


def _image_ap(entry: dict[str, Any], num_gt: int, rec_thrs: np.ndarray) -> float:
    """COCOeval.accumulate's AP for one image: mean over IoU thresholds of the
    101-point interpolated precision."""
    matches = np.asarray(entry["dtMatches"])
    ignore = np.asarray(entry["dtIgnore"], bool)
    if matches.shape[1] == 0:
        return 0.0
    order = np.argsort(-np.asarray(entry["dtScores"]), kind="mergesort")
    per_threshold = []
    for t in range(matches.shape[0]):
        keep = ~ignore[t, order]
        hits = (matches[t, order] > 0)[keep]
        tp = np.cumsum(hits).astype(np.float64)
        fp = np.cumsum(~hits).astype(np.float64)
        if len(tp) == 0:
            per_threshold.append(0.0)
            continue
        recall = tp / num_gt
        precision = tp / np.maximum(tp + fp, np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]  # interpolated: max to the right
        inds = np.searchsorted(recall, rec_thrs, side="left")
        q = np.where(inds < len(precision), precision[np.minimum(inds, len(precision) - 1)], 0.0)
        per_threshold.append(float(q.mean()))
    return float(np.mean(per_threshold))


def _no_results(gt: COCO) -> COCO:
    """An empty result set (``loadRes`` refuses an empty list)."""
    empty = COCO()
    empty.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"],
                     "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        empty.createIndex()
    return empty
