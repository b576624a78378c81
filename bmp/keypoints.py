"""The COCO body keypoint layout used throughout bmp."""

from __future__ import annotations

KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)

#: Limbs as 0-based keypoint index pairs (COCO's skeleton).
SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
    (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)

#: Shoulders and hips, in polygon order.
TORSO = (5, 6, 12, 11)

#: Points beyond COCO-17 that the loop keeps when the pose model predicts them
#: (``Instances.extra_keypoints``), for CrowdPose's 14-point evaluation.
EXTRA_KEYPOINT_NAMES = ("neck", "head_top")
#: A model's keypoint names that give each extra point, first match wins. AI
#: Challenger's versions first: CrowdPose labels AI Challenger's 14 points.
EXTRA_KEYPOINT_SOURCES = {
    "neck": ("neck_aic", "neck", "neck_mpii"),
    "head_top": ("head_top_aic", "top_head", "head_top", "head_top_mpii"),
}
