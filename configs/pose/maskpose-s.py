# MaskPose-S 1.1.0: MaskPose-B's heatmap head (23 keypoints, MaskBackground
# alpha 0.25, 256x192 input) on a ViT-S backbone (embed 384, 12 layers, 12 heads
# as in the reference's MaskPose-s-1.1.0.py, MLP 4x, drop path 0.1).
# Matches MaskPose-s-1.1.0.pth (registry: maskpose-s).
_base_ = ["./maskpose-b.py"]

model = dict(
    backbone=dict(
        # a dict where the base names an arch: _delete_ replaces the string
        arch=dict(_delete_=True, embed_dims=384, num_layers=12, num_heads=12, feedforward_channels=384 * 4),
        drop_path_rate=0.1,
    ),
    head=dict(in_channels=384),
)
