"""COCOeval over every evaluation row, stage and subset of a set of records.

Only :func:`~bmp.evaluation.cocoeval.coco_metrics` computes numbers; this module
decides which results go into each call. Results are concatenated in image-id
order, so the numbers do not depend on which process produced which image
(COCOeval breaks score ties by result order).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .cocoeval import coco_metrics
from .crowdpose import IOU_TYPE as CROWDPOSE_KEYPOINTS
from .crowdpose import crowdpose_metrics, to_crowdpose_result
from .dataset import EvalDataset
from .records import Result, stage_results

_FIELD = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints", CROWDPOSE_KEYPOINTS: "keypoints"}


def collect_results(
    records: Mapping[int, dict[str, Any]], img_ids: Sequence[int], row: int | str, stage: str,
    category_id: int, convert: Callable[[Result], Result] | None = None,
) -> list[Result]:
    """One row/stage's results of ``img_ids``, in that order, with the dataset's
    person category id, each passed through ``convert`` if given."""
    convert = convert or (lambda r: r)
    return [
        convert({**r, "category_id": category_id})
        for image_id in img_ids for r in stage_results(records[image_id], row, stage)
    ]


def result_converter(dataset: EvalDataset) -> Callable[[Result], Result] | None:
    """What turns the loop's results into the dataset's keypoint layout
    (CrowdPose's 14 points), or None where they are already in it."""
    return to_crowdpose_result if dataset.crowdpose else None


def evaluate_records(
    dataset: EvalDataset,
    records: Mapping[int, dict[str, Any]],
    rows: Sequence[int | str],
    stages: Sequence[str],
) -> dict[str, Any]:
    """COCOeval stats for every subset x row x stage x iou type.

    Args:
        dataset: ground truth and subsets.
        records: image id -> record, for the images that were processed; only
            these images are evaluated.
        rows: loop iterations (1..N) or the ``--gt-kpts`` row.
        stages: the stages to evaluate in every row.
    Returns:
        ``{"subsets": {name: {"description", "images", "instances"[, "skipped"]}},
        "metrics": {subset: {row: {stage: {"num_results": n, iou_type: stats | None}}}}}``.
        An iou type is None where the stage does not predict that field (e.g.
        detector masks of a box-only detector).
    """
    done = set(records)
    predicted = {
        (stage, iou_type): any(
            _FIELD[iou_type] in r for rec in records.values() for row in rows
            for r in stage_results(rec, row, stage)
        )
        for stage in stages for iou_type in dataset.iou_types
    }
    cache: dict[tuple[str, str, str], dict[str, float]] = {}
    convert = result_converter(dataset)
    subsets: dict[str, dict[str, Any]] = {}
    metrics: dict[str, Any] = {}
    for subset in dataset.subsets():
        ids = sorted(subset.img_ids & done)
        # The persons of the evaluated images only: COCOeval scores nothing else.
        evaluated = set(ids)
        instances = sum(1 for a in subset.gt.dataset["annotations"]
                        if a["image_id"] in evaluated and not a["iscrowd"])
        subsets[subset.name] = {"description": subset.description, "images": len(ids),
                                "instances": instances}
        if not ids or instances == 0:
            subsets[subset.name]["skipped"] = "no ground-truth persons among the evaluated images"
            continue
        table: dict[str, Any] = {}
        for row in rows:
            for stage in stages:
                results = collect_results(records, ids, row, stage, dataset.person_id, convert)
                cell: dict[str, Any] = {"num_results": len(results)}
                for iou_type in dataset.iou_types:
                    if not predicted[stage, iou_type]:
                        cell[iou_type] = None
                        continue
                    # Pose and segmenter stages share boxes and keypoints: evaluate once.
                    key = (subset.name, iou_type, _digest(results, iou_type))
                    if key not in cache:
                        cache[key] = _metrics(subset.gt, results, iou_type, ids)
                    cell[iou_type] = cache[key]
                table.setdefault(str(row), {})[stage] = cell
        metrics[subset.name] = table
    return {"subsets": subsets, "metrics": metrics}


def _metrics(gt: Any, results: Sequence[Result], iou_type: str, ids: Sequence[int]) -> dict[str, float]:
    if iou_type == CROWDPOSE_KEYPOINTS:
        return crowdpose_metrics(gt.dataset, results, ids)
    return coco_metrics(gt, results, [iou_type], img_ids=ids)[iou_type]


def _digest(results: Sequence[Result], iou_type: str) -> str:
    """What COCOeval reads of these results for ``iou_type`` (loadRes derives the
    area of a result from its box, so the box always counts)."""
    field = _FIELD[iou_type]
    text = json.dumps([(r["image_id"], r["score"], r.get("bbox"), r.get(field)) for r in results])
    return hashlib.sha1(text.encode()).hexdigest()
