"""Evaluating loop results with the standard COCO tools.

- :mod:`.cocoeval`: the exact COCOeval wrapper (:func:`coco_metrics`);
- :mod:`.dataset`: COCO / OCHuman / CIHP / CrowdPose-style annotations, checked;
- :mod:`.records`: per-image, per-iteration, per-stage predictions as JSON;
- :mod:`.evaluate`: COCOeval over every iteration, stage and occlusion subset;
- :mod:`.inference`, :mod:`.gt_poses`, :mod:`.distributed`: producing the records,
  resumably, optionally sharded with torch.distributed;
- :mod:`.report`, :mod:`.cli`: the Markdown table, the plot and ``bmp eval``.
"""

from .cocoeval import STAT_NAMES, coco_metrics
from .dataset import DatasetError, EvalDataset
from .evaluate import evaluate_records

__all__ = ["STAT_NAMES", "DatasetError", "EvalDataset", "coco_metrics", "evaluate_records"]
