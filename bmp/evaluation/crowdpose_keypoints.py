"""The loop's poses in CrowdPose's 14-keypoint layout.

CrowdPose labels AI Challenger's 14 points: the 12 COCO limb points in COCO's
order, then the top of the head and the neck. The limb points are COCO's 5..16
unchanged. Head top and neck:

- exact where the pose model predicts them itself (the 21- and 23-keypoint
  MaskPose / PMPose layouts carry AI Challenger's neck and head top; the loop
  keeps them as ``extra_keypoints``, see :data:`bmp.keypoints.EXTRA_KEYPOINT_NAMES`);
- otherwise (COCO-17 models) an approximation: neck = the midpoint of the
  shoulders; head top = neck + :data:`HEAD_TOP_FACTOR` x (face - neck), the face
  being the mean of the nose and eyes that have a confidence > 0. A derived
  point's confidences (score, visibility, presence, or a GT ``v``) are the
  minimum of those of the points it is made of: it is no surer than its parts.
"""

from __future__ import annotations

import numpy as np

from ..keypoints import EXTRA_KEYPOINT_NAMES

CROWDPOSE_KEYPOINT_NAMES = (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck",
)
#: COCO-17 indices of CrowdPose's points 0..11 (same order).
LIMBS = tuple(range(5, 17))
NOSE_AND_EYES = (0, 1, 2)
SHOULDERS = (5, 6)
HEAD, NECK = 12, 13
#: Head top = neck + factor x (face - neck). Anthropometric, not fitted (COCO has no
#: head top to fit on): the eyes sit about halfway up the head, and the
#: shoulder midpoint about as far below the chin as the chin is below the eyes,
#: so the head top is half again the neck-to-face distance above the face.
HEAD_TOP_FACTOR = 1.5


def approximate_head_and_neck(
    xy: np.ndarray, conf: np.ndarray, factor: float = HEAD_TOP_FACTOR,
) -> tuple[np.ndarray, np.ndarray]:
    """Head top and neck of COCO-17 poses.

    Args:
        xy: (N, 17, 2) keypoints.
        conf: (N, 17, C) confidence channels (scores, visibility, ... or GT ``v``).
    Returns:
        ``(xy, conf)`` of shapes (N, 2, 2) and (N, 2, C), head top then neck. A
        person with no face point of confidence > 0 gets the head top at the neck
        with confidence 0.
    """
    shoulders = xy[:, SHOULDERS]
    neck = shoulders.mean(1)
    neck_conf = conf[:, SHOULDERS].min(1)
    face_conf = conf[:, NOSE_AND_EYES]
    seen = face_conf[..., 0] > 0  # (N, 3)
    count = seen.sum(1, keepdims=True)
    face = (xy[:, NOSE_AND_EYES] * seen[..., None]).sum(1) / np.maximum(count, 1)
    head = np.where(count > 0, neck + factor * (face - neck), neck)
    # The minimum over the face points used (unused ones count as +inf) and the shoulders.
    used = np.where(seen[..., None], face_conf, np.inf).min(1)
    head_conf = np.where(count > 0, np.minimum(used, neck_conf), 0.0)
    return np.stack([head, neck], 1), np.stack([head_conf, neck_conf], 1)


def to_crowdpose(
    xy: np.ndarray, conf: np.ndarray, extra_xy: np.ndarray | None = None,
    extra_conf: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """COCO-17 poses (plus the model's own neck and head top, if any) as CrowdPose's 14.

    Args:
        xy, conf: (N, 17, 2) keypoints and (N, 17, C) confidence channels.
        extra_xy, extra_conf: (N, 2, 2) and (N, 2, C): the model's
            :data:`~bmp.keypoints.EXTRA_KEYPOINT_NAMES` (neck, head top); a person
            whose extra points all have confidence 0 gets the approximation.
    Returns:
        (N, 14, 2) keypoints and (N, 14, C) confidences in CrowdPose's order.
    """
    head_neck_xy, head_neck_conf = approximate_head_and_neck(xy, conf)
    if extra_xy is not None and extra_conf is not None:
        # EXTRA_KEYPOINT_NAMES is (neck, head_top); CrowdPose wants head top first.
        order = [EXTRA_KEYPOINT_NAMES.index("head_top"), EXTRA_KEYPOINT_NAMES.index("neck")]
        own = (extra_conf[:, order, 0] > 0).any(1)[:, None, None]
        head_neck_xy = np.where(own, extra_xy[:, order], head_neck_xy)
        head_neck_conf = np.where(own, extra_conf[:, order], head_neck_conf)
    out_xy = np.concatenate([xy[:, LIMBS], head_neck_xy], 1)
    out_conf = np.concatenate([conf[:, LIMBS], head_neck_conf], 1)
    return out_xy, out_conf

