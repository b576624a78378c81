"""CrowdPose's keypoint protocol: xtcocotools' ``keypoints_crowd`` evaluation.

As the official CrowdPose toolkit and mmpose's ``CocoMetric(iou_type='keypoints_crowd')``
score it: 14 keypoints with CrowdPose's sigmas, OKS scaled by 0.53 x the GT box
area (``use_area=False``), at most 20 people per image, and AP on the easy /
medium / hard images by the images' ``crowdIndex`` (< 0.2, < 0.8, else).
Nothing is re-implemented: the numbers are xtcocotools', which reads the crowd
index from the annotation file itself, so the ground truth of the evaluated
images is written to a temporary file for it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from .crowdpose_keypoints import CROWDPOSE_KEYPOINT_NAMES, to_crowdpose

IOU_TYPE = "keypoints_crowd"
#: CrowdPose's per-keypoint OKS sigmas (mmpose's ``configs/_base_/datasets/crowdpose.py``).
SIGMAS = (0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089, 0.079, 0.079)
#: ``COCOeval.stats`` of ``keypoints_crowd``, in summarize() order.
STAT_NAMES = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_easy", "AP_medium", "AP_hard")
#: Names files use for CrowdPose's point 12 (the official files say head, mmpose top_head).
_HEAD_NAMES = ("head", "top_head", "head_top")
#: Per-keypoint confidence fields of a bmp result, mapped along with the keypoint scores.
_CHANNELS = ("visibility", "presence")


def is_crowdpose_layout(names: Sequence[str] | None, num_keypoints: int) -> bool:
    """Whether a category's keypoints are CrowdPose's 14 (by name, or by count
    when the category names none)."""
    if not names:
        return num_keypoints == len(CROWDPOSE_KEYPOINT_NAMES)
    names = [str(n).lower() for n in names]
    return (len(names) == len(CROWDPOSE_KEYPOINT_NAMES)
            and names[:12] == list(CROWDPOSE_KEYPOINT_NAMES[:12])
            and names[12] in _HEAD_NAMES and names[13] == "neck")


def missing_crowd_index(images: Sequence[dict[str, Any]]) -> str | None:
    """Why the easy / medium / hard split cannot be made, or None."""
    without = [i for i in images if not isinstance(i.get("crowdIndex"), int | float)]
    if not without:
        return None
    return (f"{len(without)} of {len(images)} images have no numeric crowdIndex (e.g. image id "
            f"{without[0].get('id')}): CrowdPose keypoint AP skipped")


def to_crowdpose_result(result: dict[str, Any]) -> dict[str, Any]:
    """A bmp result with its keypoints (and per-keypoint visibility / presence)
    in CrowdPose's 14-point layout; results without keypoints are unchanged."""
    if result.get("keypoints") is None:
        return result
    kpts = np.asarray(result["keypoints"], np.float64).reshape(1, -1, 3)
    channels = [c for c in _CHANNELS if c in result]
    conf = np.concatenate([kpts[..., 2:]] + [np.asarray(result[c], np.float64).reshape(1, -1, 1)
                                             for c in channels], -1)
    extra = result.get("extra_keypoints")
    extra_xy = extra_conf = None
    if extra is not None:
        extra_arr = np.asarray(extra, np.float64).reshape(1, -1, 3)
        extra_xy = extra_arr[..., :2]
        # The model's own points have one score: it stands for every confidence channel.
        extra_conf = np.repeat(extra_arr[..., 2:], conf.shape[-1], -1)
    xy, conf = to_crowdpose(kpts[..., :2], conf, extra_xy, extra_conf)
    out = {k: v for k, v in result.items() if k != "extra_keypoints"}
    out["keypoints"] = [round(float(v), 3) for v in np.concatenate([xy, conf[..., :1]], -1).reshape(-1)]
    for j, name in enumerate(channels, start=1):
        out[name] = [round(float(v), 4) for v in conf[0, :, j]]
    return out


def crowdpose_metrics(gt_dataset: dict[str, Any], results: Sequence[dict[str, Any]],
                      img_ids: Sequence[int]) -> dict[str, float]:
    """xtcocotools' ``keypoints_crowd`` stats of ``results`` (14-point keypoints)
    on the images ``img_ids`` of ``gt_dataset`` (a COCO-format dict), keyed by
    :data:`STAT_NAMES`; every value -1 when no result has keypoints."""
    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    usable = [copy.deepcopy(r) for r in results if r.get("keypoints") is not None]
    if not usable:
        return dict.fromkeys(STAT_NAMES, -1.0)
    ids = set(img_ids)
    subset = {
        **gt_dataset,
        "images": [i for i in gt_dataset["images"] if i["id"] in ids],
        "annotations": [a for a in gt_dataset["annotations"] if a["image_id"] in ids],
    }
    with tempfile.TemporaryDirectory(prefix="bmp_crowdpose_") as tmp:
        path = os.path.join(tmp, "gt.json")
        with open(path, "w") as f:
            # pycocotools' mask evaluation leaves RLE counts as bytes in the GT dicts.
            json.dump(subset, f, default=lambda v: v.decode() if isinstance(v, bytes) else str(v))
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(path)
            ev = COCOeval(gt, gt.loadRes(usable), IOU_TYPE, np.array(SIGMAS), use_area=False)
            ev.params.useSegm = None
            ev.evaluate()
            ev.accumulate()
            ev.summarize()  # reads the crowd index from `path`: inside the with
    return {n: float(v) for n, v in zip(STAT_NAMES, ev.stats, strict=True)}
