# The reference's bmp_D3.yaml as it is today (2.0.0, 49a070a), which the
# reference marks deprecated: BMP v1's loop (configs/bmp_maskpose_sam2.py) with
# PMPose-B 1.0.0 at alpha 0.25 in place of MaskPose-B 1.0.0 at alpha 0.2. The
# reference loads PMPose-b-1.0.0.pth from a local path outside its repository;
# here it is the published checkpoint of that name (registry: pmpose-b).
#
# MaxSpread-6 still gates on visibility > 0.3: PMPose's visibility head fills
# that channel, where MaskPose (no side heads) reports its keypoint scores, so
# prompts, and numbers, differ from BMP v1 as published.
_base_ = ["./bmp_maskpose_sam2.py"]

pose = dict(
    _delete_=True,
    type="MMPoseTopDown",
    config="configs/pose/pmpose-b.py",
    checkpoint="pmpose-b",
    flip_test=True,
    mask_alpha=0.25,  # PMPose-b-1.0.0's MaskBackground alpha, as in the pose config
)
