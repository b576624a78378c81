# BMP v2: PMPose-B (MaskPose-B with ProbPose presence / visibility / expected-OKS
# heads) and SAM-pose2seg (SAM 2.1 Hiera-B+ with its prompt encoder and mask
# decoder fine-tuned on pose prompts), prompted with the 3 most visible
# keypoints (MaxVis-3, visibility >= 0.5).
_base_ = ["./bmp_rtmdet_vitpose_sam2.py"]

pose = dict(
    _delete_=True,
    type="MMPoseTopDown",
    config="configs/pose/pmpose-b.py",
    checkpoint="pmpose-b",
    flip_test=True,
)

segmenter = dict(
    checkpoint="sam-pose2seg-hiera-b+",
    prompts=dict(_delete_=True, method="max_vis", num_points=3, visibility_thr=0.5),
)
