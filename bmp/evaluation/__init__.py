"""Evaluating loop results with the standard COCO tools."""

from .cocoeval import STAT_NAMES, coco_metrics

__all__ = ["STAT_NAMES", "coco_metrics"]
