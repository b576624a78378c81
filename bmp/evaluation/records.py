"""Per-image evaluation records: what every loop iteration and stage produced, as JSON.

A loop-mode record stores, per iteration, the detector's new detections and the
people found so far (COCO result dicts). Each person carries ``det_index``, the
detection it grew from in its own iteration, so the *pose* stage (pose-refined
people with the detector's masks) is derived without storing masks twice.

Stages (rows of the evaluation):

- ``detector``: detections of iterations 1..k, scored by the detector, with the
  detector's masks and keypoints where it has them;
- ``pose``: the people after pose estimation and OKS-NMS, scored by their pose,
  with the detector's masks;
- ``segmenter``: the loop's output after iteration k: pose-prompted, exclusive masks.

A ``--gt-kpts`` record holds the stages ``segmenter`` (one mask per GT pose)
and ``exclusive`` (those masks made pairwise disjoint).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..coco import PERSON_CATEGORY_ID, instances_to_coco
from ..masks import encode_rle
from ..structures import Instances

if TYPE_CHECKING:  # the loop pulls in torch; records are also read without it
    from ..loop import IterationRecord

LOOP_STAGES = ("detector", "pose", "segmenter")
GT_KPTS_STAGES = ("segmenter", "exclusive")
#: The row key of the single ``--gt-kpts`` row (rows of loop mode are iterations 1..N).
GT_KPTS_ROW = "gt"

Result = dict[str, Any]


def loop_record(history: Sequence[IterationRecord], image_id: int) -> dict[str, Any]:
    """The JSON payload of one image from :meth:`bmp.BMP.predict_iterations`."""
    iterations = []
    for record in history:
        people = instances_to_coco(record.people, image_id)
        for person, ref in zip(people, detection_refs(record.people, history), strict=True):
            person["det_index"] = ref
        iterations.append({"detections": detections_to_coco(record.detections, image_id),
                           "people": people})
    return {"iterations": iterations}


def detections_to_coco(detections: Instances, image_id: int) -> list[Result]:
    """Step-1 output as COCO results: boxes with detector scores; masks and
    keypoints only when the detector predicted them (zeros are not predictions)."""
    with_masks = bool(detections.masks.any())
    with_kpts = bool((detections.keypoint_scores > 0).any())
    xywh = detections.boxes_xywh()
    out = []
    for i in range(len(detections)):
        result: Result = {
            "image_id": int(image_id),
            "category_id": PERSON_CATEGORY_ID,
            "bbox": [round(float(v), 2) for v in xywh[i]],
            "score": round(float(detections.det_scores[i]), 5),
            "iteration": int(detections.iteration[i]),
        }
        if with_masks:
            result["segmentation"] = encode_rle(detections.masks[i])
        if with_kpts:
            kpts = np.concatenate([detections.keypoints[i], detections.keypoint_scores[i][:, None]], 1)
            result["keypoints"] = [round(float(v), 3) for v in kpts.reshape(-1)]
        out.append(result)
    return out


def detection_refs(people: Instances, history: Sequence[IterationRecord]) -> list[int]:
    """For every person, the index of its detection in its iteration's detections.

    Pose estimation keeps the detector's boxes, so the match is exact; the best
    box IoU is the fallback for a pose model that refines boxes.
    """
    refs = []
    for box, iteration in zip(people.boxes, people.iteration, strict=True):
        if not 1 <= iteration <= len(history):  # seeded before the loop (video): no detection
            refs.append(-1)
            continue
        boxes = history[int(iteration) - 1].detections.boxes
        if len(boxes) == 0:
            refs.append(-1)
            continue
        same = np.flatnonzero((boxes == box).all(1))
        refs.append(int(same[0]) if len(same) else int(np.argmax(_box_iou(box, boxes))))
    return refs


def _box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    areas = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=1)
    area = np.prod(np.clip(box[2:] - box[:2], 0, None))
    return inter / np.maximum(area + areas - inter, 1e-9)


def stage_results(record: dict[str, Any], row: int | str, stage: str) -> list[Result]:
    """The COCO results of one image for one evaluation row and stage.

    Args:
        record: a loop-mode or ``--gt-kpts`` record.
        row: loop iteration k (people found up to k), or :data:`GT_KPTS_ROW`.
        stage: one of :data:`LOOP_STAGES` or :data:`GT_KPTS_STAGES`.
    """
    if row == GT_KPTS_ROW:
        return list(record["gt_kpts"][stage])
    iterations = record["iterations"][: int(row)]
    if not iterations:
        return []
    if stage == "detector":
        return [d for it in iterations for d in it["detections"]]
    # The loop stops early once an iteration detects nobody: the people found so
    # far are then also the answer after every later iteration.
    people = iterations[-1]["people"]
    if stage == "segmenter":
        return [_strip(p) for p in people]
    if stage == "pose":
        return [_with_detector_mask(p, record["iterations"]) for p in people]
    raise ValueError(f"unknown stage {stage!r}")


def _strip(person: Result) -> Result:
    return {k: v for k, v in person.items() if k != "det_index"}


def _with_detector_mask(person: Result, iterations: list[dict[str, Any]]) -> Result:
    out = {k: v for k, v in person.items() if k not in ("det_index", "segmentation")}
    ref = person.get("det_index", -1)
    if ref >= 0:
        detection = iterations[person["iteration"] - 1]["detections"][ref]
        if "segmentation" in detection:
            out["segmentation"] = detection["segmentation"]
    return out
