# MaskPose-B 1.0.0 (BBoxMaskPose v1, the checkpoint the reference's bmp_D3
# runs): MaskPose-B's ViT-B with 21 heatmaps (coco_aic_mpii_21.py, the first 17
# are COCO's) and the detector's mask dimming the background with alpha 0.2.
# Matches the published checkpoint MaskPose-b-1.0.0.pth (registry: maskpose-b-1.0.0).
# The reference's val pipeline has MaskBackground(continue_on_failure=False),
# which raises for a person whose mask gives no polygon; bmp leaves that crop
# undimmed instead (continue_on_failure=True), so one bad mask cannot stop the loop.
_base_ = ["./maskpose-b.py"]

model = dict(head=dict(out_channels=21))

test_pipeline = [
    dict(type="LoadImage"),
    dict(type="GetBBoxCenterScale", padding=1.25),
    dict(type="MaskBackground", alpha=0.2, continue_on_failure=True),
    dict(type="TopdownAffine", input_size=(192, 256), use_udp=True),
    dict(type="PackPoseInputs"),
]
_metainfo = dict(from_file="{{ fileDirname }}/coco_aic_mpii_21.py")
train_dataloader = dict(dataset=dict(metainfo=_metainfo, pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(metainfo=_metainfo, pipeline=test_pipeline))
