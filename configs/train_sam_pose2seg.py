# SAM-pose2seg: fine-tune SAM 2.1 Hiera-B+ on pose-keypoint prompts (BMP_NOTES, "SAM-pose2seg").
# Image encoder frozen; prompt encoder + mask decoder trained on COCO (+ CIHP) person
# masks, points only, PoseMaskRefine with 8 clicks per person, ~15 epochs.
#
#   bmp train-pose2seg configs/train_sam_pose2seg.py --weights-dir ~/weights
#   bmp train-pose2seg configs/train_sam_pose2seg.py --resume            # continue
#   bmp train-pose2seg configs/train_sam_pose2seg.py --cfg-options schedule.epochs=20
#
# The result loads in the loop as the `sam-pose2seg-hiera-b+` segmenter: pass the
# work dir as --weights-dir (it holds SAM-pose2seg_hiera_b+.pt) or name any
# epoch_NNN.pt as the segmenter checkpoint, with prompts MaxVis-3.

model = dict(
    config="configs/sam2.1/sam2.1_hiera_b+.yaml",  # sam2's own model config
    checkpoint="sam2.1-hiera-b+",  # registry name or file ({'model': state_dict})
    # Everything else (image encoder, memory modules) stays frozen.
    trainable=("sam_prompt_encoder", "sam_mask_decoder"),
)

data = dict(
    # COCO-format datasets (polygon or RLE masks). keypoints: 'gt', or a COCO keypoint
    # results json of detected poses (e.g. ProbPose / `bmp run` results; per-keypoint
    # 'visibility' used when present), matched to GT people by box IoU >= match_iou.
    train=[
        dict(
            ann_file="data/coco/annotations/person_keypoints_train2017.json",
            img_dir="data/coco/train2017",
            keypoints="gt",
            match_iou=0.5,
        ),
        # CIHP converted to COCO format, with detected keypoints:
        # dict(ann_file="data/cihp/annotations/train.json", img_dir="data/cihp/images",
        #      keypoints="data/cihp/probpose_train_results.json"),
    ],
    val=[
        dict(
            ann_file="data/coco/annotations/person_keypoints_val2017.json",
            img_dir="data/coco/val2017",
            keypoints="gt",
        ),
    ],
    batch_size=4,  # images per step
    max_objects=8,  # people per image per step (random subset each epoch)
    min_mask_area=64.0,  # skip tiny people (pixels of the original image)
    flip_prob=0.5,  # the only augmentation: keeps cached features valid
    num_workers=4,
    feature_cache=None,  # None, 'memory', or a folder (~88 MB per image side at 1024)
)

sampler = dict(
    type="PoseMaskRefine",  # 'MaskRefine' (SAM default) | 'PoseMaskRefine' | 'Pose1MaskRefine'
    num_points=8,  # clicks per person: the 1st + 7 corrections, each fed the previous logits
    visibility_thr=0.5,  # keypoints with visibility >= this can be clicked
    prob_mask_rule=0.1,  # PoseMaskRefine: chance a correction uses MaskRefine's rule
    prob_from_gt=0.1,  # MaskRefine rule: chance a correction is drawn from the GT mask
    multimask_max_points=1,  # 3 output masks while <= this many clicks (SAM 2's default)
)

loss = dict(  # SAM 2's weights
    mask=20.0,  # sigmoid focal loss
    dice=1.0,
    iou=1.0,  # predicted vs actual IoU
    object=1.0,  # object-score BCE
    focal_alpha=0.25,
    focal_gamma=2.0,
    iou_l1=True,
    supervise_all_iou=True,
)

optimizer = dict(  # AdamW
    lr=5e-6,  # SAM 2.1's fine-tuning base_lr
    weight_decay=0.1,  # not on biases / norms
    betas=(0.9, 0.999),
    grad_clip=0.1,  # max gradient L2 norm, as SAM 2
)

schedule = dict(
    epochs=15,
    warmup_steps=250,
    min_lr_ratio=0.1,  # cosine to lr / 10, as SAM 2
    max_steps_per_epoch=None,
    amp=True,  # CUDA only
    amp_dtype="bfloat16",
    log_interval=20,
)

checkpoint = dict(
    interval=1,  # work_dir/epoch_NNN.pt every epoch
    keep_last=0,  # 0: keep all
    export_name="SAM-pose2seg_hiera_b+.pt",  # final weights, the registry's file name
)

val = dict(
    interval=1,
    # Inference prompts of SAM-pose2seg in the loop: MaxVis-3.
    prompts=dict(method="max_vis", num_points=3, score_thr=0.5, visibility_thr=0.5),
    mask_threshold=0.0,
    max_hole_area=10,
    max_sprinkle_area=50,
)

work_dir = "work_dirs/sam_pose2seg_hiera_b+"
device = None  # auto: CUDA when available
weights_dirs = []
seed = 0
