# BMP v2 (configs/bmp_pmpose_sampose2seg.py) with PMPose-S 1.0.0 as the pose model:
# the base config plus one override, the pose network and its checkpoint.
_base_ = ["./bmp_pmpose_sampose2seg.py"]
pose = dict(config="configs/pose/pmpose-s.py", checkpoint="pmpose-s")
