# MaskPose-B (BBoxMaskPose): ViTPose-B top-down heatmaps for 23 keypoints with
# the detector's mask dimming the crop background (MaskBackground, alpha 0.25).
# Matches the published checkpoint MaskPose-b-1.1.0.pth (registry: maskpose-b).
default_scope = "mmpose"
custom_imports = dict(imports=["bmp.models.mmpose_ext"], allow_failed_imports=False)

codec = dict(type="UDPHeatmap", input_size=(192, 256), heatmap_size=(48, 64), sigma=2)

model = dict(
    type="TopdownPoseEstimator",
    data_preprocessor=dict(
        type="PoseDataPreprocessor", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
    ),
    backbone=dict(
        type="mmpretrain.VisionTransformer", arch="base", img_size=(256, 192), patch_size=16,
        qkv_bias=True, drop_path_rate=0.3, with_cls_token=False, out_type="featmap",
        patch_cfg=dict(padding=2), init_cfg=None,
    ),
    head=dict(
        type="HeatmapHead", in_channels=768, out_channels=23, deconv_out_channels=(256, 256),
        deconv_kernel_sizes=(4, 4), loss=dict(type="KeypointMSELoss", use_target_weight=True),
        decoder=codec,
    ),
    test_cfg=dict(flip_test=True, flip_mode="heatmap", shift_heatmap=False),
)

test_pipeline = [
    dict(type="LoadImage"),
    dict(type="GetBBoxCenterScale", padding=1.25),
    dict(type="MaskBackground", alpha=0.25, continue_on_failure=True),
    dict(type="TopdownAffine", input_size=codec["input_size"], use_udp=True),
    dict(type="PackPoseInputs"),
]
_metainfo = dict(from_file="{{ fileDirname }}/coco_aic_mpii_23.py")
train_dataloader = dict(dataset=dict(type="CocoDataset", metainfo=_metainfo, pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(type="CocoDataset", metainfo=_metainfo, pipeline=test_pipeline))
