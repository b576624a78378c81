# BMP v1 as published: RTMDet-Ins-L fine-tuned by BMP, MaskPose-B 1.0.0 (ViT-B
# pose for 21 keypoints, conditioned on the detector mask with alpha 0.2), SAM
# 2.1 Hiera-B+ with MaxSpread-6 prompts, 2 iterations: the reference's bmp_D3
# as released with v1 (MaskPose-b-1.0.0.pth, ViTb-multi_mask.py).
#
# The reference's bmp_D3.yaml has changed since (2.0.0, 49a070a): it is marked
# deprecated, "kept only for reproduction of BMPv1 experiments", and runs
# PMPose-b-1.0.0 at alpha 0.25, loaded from a local path that is not in its
# repository, with the MaskPose-B line commented out. That setting is
# configs/bmp_d3_pmpose.py; detector, prompts and loop are the same in both.
#
# MaskPose-B 1.1.0 (23 keypoints, alpha 0.25) stays available: config
# "configs/pose/maskpose-b.py", checkpoint "maskpose-b".
_base_ = ["./bmp_rtmdet_vitpose_sam2.py"]

pose = dict(
    _delete_=True,
    type="MMPoseTopDown",
    config="configs/pose/maskpose-b-1.0.0.py",
    checkpoint="maskpose-b-1.0.0",
    flip_test=True,
    mask_alpha=0.2,  # the pose config's MaskBackground alpha, stated where the loop is configured
)
