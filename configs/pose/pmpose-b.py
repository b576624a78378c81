# PMPose-B (BBoxMaskPose v2): MaskPose-B with ProbPose side heads that predict,
# per keypoint, presence, visibility, expected OKS and error; heatmaps are
# sparsemax-normalised. Matches PMPose-b-1.0.0.pth (registry: pmpose-b).
_base_ = ["./maskpose-b.py"]

model = dict(
    head=dict(
        _delete_=True,
        type="ProbPoseHead", in_channels=768, out_channels=23, deconv_out_channels=(256, 256),
        deconv_kernel_sizes=(4, 4), side_pool_sizes=((4, 3), (2, 2), (2, 2)), normalize=1.0,
        score_source="oks", loss=dict(type="KeypointMSELoss", use_target_weight=True),
        decoder={{_base_.codec}},
    ),
)
