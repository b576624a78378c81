# The lite loop (YOLO11n-pose, offline) with Pose2Seg masks (CVPR 2019): the
# paper's network -- ResNet-50-FPN (P2), Affine-Align onto K=3 pose templates,
# 55 skeleton-feature channels, SegModule on a 64x64 window -- trained by
#
#   .venv/bin/python tools/pose2seg_templates.py --ann person_keypoints_train2017.json \
#       --out configs/pose2seg/templates_coco_train2017.json
#   .venv/bin/python tools/train_pose2seg_net.py --config configs/bmp_pose2seg.py \
#       --ann person_keypoints_train2017.json --images train2017 --work-dir work_dirs/pose2seg
#
# No trained Pose2Seg checkpoint is published; `checkpoint` is the training
# tool's output. The templates below come from the four shared COCO images (a
# stand-in: point `templates` at a train2017 file before training for real).
# Paths are relative to the repository root.

_base_ = ["bmp_lite.py"]

segmenter = dict(
    _delete_=True,
    type="Pose2SegSegmenter",
    network=dict(
        backbone="resnet50",
        fpn_levels=(1, 2, 3, 4),
        fpn_channels=256,
        seg_channels=256,
        num_units=10,
        align_size=64,
        margin=0.1,
        input_size=512,
        templates="configs/pose2seg/templates_coco_sample.json",
    ),
    checkpoint="work_dirs/pose2seg/pose2seg_latest.pth",
    kpt_thr=0.3,
    mask_thr=0.5,
)
