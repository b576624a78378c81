"""Pose2Seg (Zhang et al., CVPR 2019): detection-free, pose-based instance
segmentation. Affine-Align onto K-means pose templates (:mod:`.affine_align`,
:mod:`.templates`), skeleton features (:mod:`.skeleton_features`), the network
(:mod:`.network`), the loop segmenter (:mod:`.segmenter`) and its training
(:mod:`.training`)."""

from .segmenter import Pose2SegSegmenter

__all__ = ["Pose2SegSegmenter"]
