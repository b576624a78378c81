# PMPose-H (BBoxMaskPose v2): PMPose-B's heads on a ViT-H backbone (mmpretrain
# arch 'huge': embed 1280, 32 layers, 16 heads; drop path 0.55); 23 keypoints,
# MaskBackground alpha 0.25, 256x192 input.
# Matches PMPose-h-1.0.0.pth (registry: pmpose-h).
_base_ = ["./pmpose-b.py"]

model = dict(backbone=dict(arch="huge", drop_path_rate=0.55), head=dict(in_channels=1280))
