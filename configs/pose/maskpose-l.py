# MaskPose-L 1.1.0: MaskPose-B's heatmap head (23 keypoints, MaskBackground
# alpha 0.25, 256x192 input) on a ViT-L backbone (mmpretrain arch 'large':
# embed 1024, 24 layers, 16 heads; drop path 0.5).
# Matches MaskPose-l-1.1.0.pth (registry: maskpose-l).
_base_ = ["./maskpose-b.py"]

model = dict(backbone=dict(arch="large", drop_path_rate=0.5), head=dict(in_channels=1024))
