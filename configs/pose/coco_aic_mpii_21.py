# Keypoint layout of MaskPose-b-1.0.0 (the reference's merged_COCO_AIC_MPII_21):
# the 17 COCO keypoints (COCO order and flip pairs), then thorax and neck from
# MPII, neck from AI Challenger and the top of the head, none of them swapped by
# a flip (bmp uses the first 17). mmpose dataset-info format.
_names = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
    "thorax_mpii", "neck_mpii", "neck_aic", "top_head",
]


def _swap(name):
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return ""


dataset_info = dict(
    dataset_name="coco_aic_mpii_21",
    paper_info=dict(author="", title="COCO + AIC + MPII merged keypoints (21)", year="2024"),
    keypoint_info={
        i: dict(name=n, id=i, color=[51, 153, 255], type="lower" if 11 <= i < 17 else "upper",
                swap=_swap(n))
        for i, n in enumerate(_names)
    },
    skeleton_info={
        i: dict(link=(a, b), id=i, color=[0, 255, 0])
        for i, (a, b) in enumerate([
            ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("right_ankle", "right_knee"),
            ("right_knee", "right_hip"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
            ("right_shoulder", "right_hip"), ("left_shoulder", "thorax_mpii"),
            ("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"),
            ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"), ("left_eye", "right_eye"),
            ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"),
            ("right_eye", "right_ear"), ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
            ("right_shoulder", "thorax_mpii"), ("thorax_mpii", "neck_mpii"),
            ("thorax_mpii", "neck_aic"), ("left_ear", "top_head"), ("right_ear", "top_head"),
        ])
    },
    joint_weights=[1.0] * 7 + [1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5] + [1.0] * 4,
    # Thorax and necks as the shoulders, the top of the head as the ears.
    sigmas=[0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
            0.107, 0.107, 0.087, 0.087, 0.089, 0.089, 0.079, 0.079, 0.079, 0.035],
)
