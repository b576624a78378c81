# Keypoint layout of MaskPose / PMPose: the 17 COCO keypoints, then 6 from MPII
# and AI Challenger (bmp uses the first 17). mmpose dataset-info format.
_names = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
    "thorax_mpii", "pelvis_mpii", "neck_mpii", "head_top_mpii", "neck_aic", "head_top_aic",
]


def _swap(name):
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return ""


dataset_info = dict(
    dataset_name="coco_aic_mpii_23",
    paper_info=dict(author="", title="COCO + AIC + MPII merged keypoints", year="2024"),
    keypoint_info={
        i: dict(name=n, id=i, color=[51, 153, 255], type="upper" if i < 11 else "lower", swap=_swap(n))
        for i, n in enumerate(_names)
    },
    skeleton_info={
        i: dict(link=(a, b), id=i, color=[0, 255, 0])
        for i, (a, b) in enumerate([
            ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("right_ankle", "right_knee"),
            ("right_knee", "right_hip"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
            ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"),
            ("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"),
            ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"), ("left_eye", "right_eye"),
            ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"),
            ("right_eye", "right_ear"), ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
        ])
    },
    joint_weights=[1.0] * 7 + [1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5] + [1.0] * 6,
    sigmas=[0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
            0.107, 0.107, 0.087, 0.087, 0.089, 0.089, 0.079, 0.107, 0.079, 0.079, 0.079, 0.079],
)
