# BMP v1 (reference config bmp_D3): RTMDet-Ins-L fine-tuned by BMP, MaskPose-B
# 1.0.0 (ViT-B pose for 21 keypoints, conditioned on the detector mask with
# alpha 0.2, the checkpoint bmp_D3 runs), SAM 2.1 Hiera-B+ with MaxSpread-6
# prompts, 2 iterations. MaskPose-B 1.1.0 (23 keypoints, alpha 0.25) stays
# available: config "configs/pose/maskpose-b.py", checkpoint "maskpose-b".
_base_ = ["./bmp_rtmdet_vitpose_sam2.py"]

pose = dict(
    _delete_=True,
    type="MMPoseTopDown",
    config="configs/pose/maskpose-b-1.0.0.py",
    checkpoint="maskpose-b-1.0.0",
    flip_test=True,
    mask_alpha=0.2,  # the pose config's MaskBackground alpha, stated where the loop is configured
)
