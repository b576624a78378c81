# ViTPose-B multi-dataset (ViTPose-b-multi_mmpose20.pth, registry:
# vitpose-b-multi): the reference's own ViTPose-B trained in MMPose 1.x
# ("MMPose 2.0") on COCO + AI Challenger + MPII merged into one 21-keypoint head
# (coco_aic_mpii_21.py: COCO's 17 first, then thorax, two necks and head top).
# The model card on the Hugging Face repository lists it as a ViT-B with the
# classic deconvolution decoder, 192x256 input, 48x64 heatmaps, 21 keypoints;
# it is the network MaskPose-b-1.0.0 was fine-tuned from, so it is MaskPose-B
# 1.0.0 without mask conditioning (no MaskBackground). The loop keeps the first
# 17 heatmaps, COCO's.
_base_ = ["./maskpose-b-1.0.0.py"]

test_pipeline = [
    dict(type="LoadImage"),
    dict(type="GetBBoxCenterScale", padding=1.25),
    dict(type="TopdownAffine", input_size=(192, 256), use_udp=True),
    dict(type="PackPoseInputs"),
]
train_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
