"""Model adapters behind the loop's three narrow interfaces.

Each backend converts to :class:`bmp.structures.Instances` at its edge; nothing
downstream knows which backend ran. Importing this package registers every
adapter; heavy libraries (mmdet, mmpose, sam2, ultralytics) are imported only
when an adapter is built.
"""

from . import detectors, pose, pose2instance, pose2seg, segmenters  # noqa: F401  (registration)
from .base import DETECTORS, POSE_ESTIMATORS, SEGMENTERS, Detector, PoseEstimator, Segmenter

__all__ = [
    "DETECTORS",
    "POSE_ESTIMATORS",
    "SEGMENTERS",
    "Detector",
    "PoseEstimator",
    "Segmenter",
]
