# BBox-Mask-Pose that runs offline on a CPU with the only real weights available
# here: Ultralytics YOLO11n-pose detects people on the masked image, and is run
# again top-down on crops of the original image for their poses. Masks come from
# the weight-free Pose2Instance partition over pose-seeded GrabCut masks (SAM 2
# weights cannot be downloaded here); switch `segmenter` to the SAM 2 block of
# bmp_rtmdet_vitpose_sam2.py when you have them.
#
#   bmp run ../shared/data/coco --config configs/bmp_lite.py \
#       --weights-dir ../shared/models --out outputs/lite --vis

detector = dict(
    type="UltralyticsDetector",
    checkpoint="yolo11n-pose",
    imgsz=640,
    score_thr=0.05,
    nms_iou=0.6,
    max_per_img=40,
)

# Iteration 1: the detector saw the original image, so its keypoints are kept
# (YOLO-pose at its full 640 input). Later iterations pose each new person
# top-down on the original image, with the people found earlier blacked out of
# the crop: YOLO-pose takes no mask, so this is its MaskPose-style conditioning
# (measured in README "Synthetic occlusion benchmark").
pose = dict(
    type="UltralyticsTopDown",
    checkpoint="yolo11n-pose",
    imgsz=320,
    padding=1.25,
    first_pass="detector",
    condition="others_dimmed",
    condition_alpha=1.0,
)

# Pose2Instance partitions the image by pose; YOLO gives no masks, so its person
# probability comes from the image itself: per-person GrabCut seeded by the
# skeletons (bmp/models/mask_refine.py). Masks follow colour and edges instead of
# a body template. Each person's own GrabCut mask is its prior
# (`per_person_prior`): where two people's GrabCut masks overlap the pose
# partition decides, elsewhere the person whose GrabCut took a pixel gets it.
# Shared COCO segm AP 0.440 (union of the masks as one prior: 0.428, uniform
# prior: 0.316), occlusion set 0.277 (0.274, 0.197), GT poses 0.502 (0.492,
# 0.383); GrabCut at 160 px a side (128: 0.440 / 0.273). See README
# "Pose-to-mask backends".
segmenter = dict(
    type="Pose2InstanceSegmenter",
    prior=dict(type="PoseGrabCutSegmenter", working_size=160),
    per_person_prior=True,
    kpt_thr=0.3,
)

loop = dict(
    num_iters=2,
    det_score_thr=0.3,
    det_nms_iou=0.3,
    # YOLO-pose's own keypoints (iteration 1) and its top-down ones (later)
    # differ more for one person than two MaskPose poses do: at 0.8 a person
    # found again in iteration 2 survives as a duplicate.
    oks_nms_thr=0.7,
    oks_kpt_thr=0.3,
    # Found again through the parts its mask missed, with nearly the same box:
    # dropped before pose instead of being posed for pose-NMS to drop (10
    # people: 1.4x the images per second). See README "Synthetic occlusion benchmark".
    redetected_iou=0.8,
    # Pose2Instance masks follow the skeleton, not the silhouette, so YOLO often
    # re-detects a found person from what the mask left visible, with a worse box.
    # Keep the first detection of a duplicate (shared COCO: bbox AP 0.745 vs 0.707).
    oks_nms_prefer="earlier",
    # YOLO-pose's detection score ranks its people better than the mean keypoint
    # score (shared COCO bbox AP 0.764 vs 0.745).
    person_score="detector",
    exclusive_masks=True,
)
