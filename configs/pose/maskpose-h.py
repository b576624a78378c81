# MaskPose-H 1.1.0: MaskPose-B's heatmap head (23 keypoints, MaskBackground
# alpha 0.25, 256x192 input) on a ViT-H backbone (mmpretrain arch 'huge':
# embed 1280, 32 layers, 16 heads; drop path 0.55).
# Matches MaskPose-h-1.1.0.pth (registry: maskpose-h).
_base_ = ["./maskpose-b.py"]

model = dict(backbone=dict(arch="huge", drop_path_rate=0.55), head=dict(in_channels=1280))
