# The lite loop (YOLO11n-pose, offline, CPU) with Pose2Instance masks: every pixel
# goes to the nearest body drawn from the pose, gated by a person-probability
# map. YOLO gives no masks, so the map is uniform here and the masks are a pure
# skeleton partition; with a mask detector (RTMDet-Ins) or a nested SAM 2
# segmenter as `prior` the masks follow the silhouettes instead. This is lite's
# template-only baseline: bmp_lite.py takes the prior from the image itself
# (`prior="grabcut"`).
#
#   bmp run ../shared/data/coco --config configs/bmp_lite_pose2instance.py \
#       --weights-dir ../shared/models --out outputs/lite_p2i --vis

_base_ = ["bmp_lite.py"]

segmenter = dict(
    _delete_=True,
    type="Pose2InstanceSegmenter",
    prior="auto",  # the people's masks when the detector gives any, else uniform
    kpt_thr=0.3,
    temperature=1 / 3,
    radius=1.0,
    prior_floor=0.05,
    compete_with_earlier=True,
)
