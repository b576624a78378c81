# BMP v1 (reference config bmp_D3): RTMDet-Ins-L fine-tuned by BMP, MaskPose-B
# (ViT-B pose conditioned on the detector mask, alpha 0.25), SAM 2.1 Hiera-B+
# with MaxSpread-6 prompts, 2 iterations.
_base_ = ["./bmp_rtmdet_vitpose_sam2.py"]

pose = dict(
    _delete_=True,
    type="MMPoseTopDown",
    config="configs/pose/maskpose-b.py",
    checkpoint="maskpose-b",
    flip_test=True,
)
