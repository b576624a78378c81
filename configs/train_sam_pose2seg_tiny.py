# A CPU smoke run of the SAM-pose2seg trainer: SAM 2.1 Hiera-T on the four shared
# COCO images, few clicks, one short epoch, features cached in memory.
#
#   bmp train-pose2seg configs/train_sam_pose2seg_tiny.py --weights-dir DIR_WITH_sam2.1_hiera_tiny.pt
#
# The tests train from a randomly initialised Hiera-T saved like the official file
# (`--cfg-options model.checkpoint=/path/to/random.pt`).

_base_ = ["./train_sam_pose2seg.py"]

model = dict(config="configs/sam2.1/sam2.1_hiera_t.yaml", checkpoint="sam2.1-hiera-t")

_coco = "{{fileDirname}}/../../shared/data/coco"
data = dict(
    train=[dict(ann_file=_coco + "/annotations.json", img_dir=_coco, keypoints="gt")],
    val=[dict(ann_file=_coco + "/annotations.json", img_dir=_coco, keypoints="gt")],
    batch_size=2,
    max_objects=2,
    flip_prob=0.0,
    num_workers=0,
    feature_cache="memory",
)

sampler = dict(num_points=3)
optimizer = dict(lr=1e-4)
schedule = dict(epochs=1, warmup_steps=0, max_steps_per_epoch=2, amp=False, log_interval=1)
checkpoint = dict(export_name="SAM-pose2seg_hiera_t.pt")
work_dir = "work_dirs/sam_pose2seg_tiny"
device = "cpu"
