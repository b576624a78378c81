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
    # MaxVis-3 gated on score > 0.5 and visibility > 0.5 (the reference's bmp_v2
    # confidence_thr / visibility_thr), ranked by visibility.
    prompts=dict(_delete_=True, method="max_vis", num_points=3, score_thr=0.5, visibility_thr=0.5,
                 confidence="visibility"),
)

# The reference's v2 loop counts pose-NMS keypoints above its prompting
# confidence_thr (0.5), although its config comment calls that value unused.
loop = dict(oks_kpt_thr=0.5)
