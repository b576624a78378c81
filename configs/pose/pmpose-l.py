# PMPose-L (BBoxMaskPose v2): PMPose-B's heads on a ViT-L backbone (mmpretrain
# arch 'large': embed 1024, 24 layers, 16 heads; drop path 0.5); 23 keypoints,
# MaskBackground alpha 0.25, 256x192 input.
# Matches PMPose-l-1.0.0.pth (registry: pmpose-l).
_base_ = ["./pmpose-b.py"]

model = dict(backbone=dict(arch="large", drop_path_rate=0.5), head=dict(in_channels=1024))
