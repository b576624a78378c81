# BBox-Mask-Pose with the published defaults (BMP_NOTES; reference config bmp_D3):
# RTMDet-Ins-L detector -> ViT-B top-down pose -> SAM 2.1 Hiera-B+ prompted with
# MaxSpread-6 keypoints, 2 iterations, OKS pose-NMS at 0.8.
#
# Checkpoints are registry names (`bmp weights --urls` lists them); they are
# looked up in --weights-dir folders, then $BMP_HOME/checkpoints, then downloaded.

detector = dict(
    type="MMDetDetector",
    config="mmdet::rtmdet/rtmdet-ins_l_8xb32-300e_coco.py",
    checkpoint="rtmdet-ins-l-mask",
    score_thr=0.05,  # the model's own test-time filtering
    nms_iou=0.6,
    max_per_img=40,
    person_class=0,
)

pose = dict(
    type="MMPoseTopDown",
    config="mmpose::body_2d_keypoint/topdown_heatmap/coco/"
    "td-hm_ViTPose-base_8xb64-210e_coco-256x192.py",
    checkpoint="vitpose-b",
    flip_test=True,
)

segmenter = dict(
    type="SAM2Segmenter",
    config="configs/sam2.1/sam2.1_hiera_b+.yaml",
    checkpoint="sam2.1-hiera-b+",
    # The reference's bmp_D3 prompting: confidence_thr 0.3, visibility_thr 0.3,
    # 'distance+confidence' (MaxSpread-6), no box, no negatives.
    prompts=dict(method="max_spread", num_points=6, score_thr=0.3, visibility_thr=0.3,
                 confidence="visibility", percentile=80.0),
    mask_threshold=0.0,
    max_hole_area=10,
    max_sprinkle_area=50,
)

loop = dict(
    num_iters=2,
    det_score_thr=0.3,  # keep person detections with score > 0.3
    det_nms_iou=0.3,  # greedy box NMS within an iteration
    oks_nms_thr=0.8,  # pose NMS across iterations
    oks_kpt_thr=0.3,  # keypoints that count in OKS: the prompting confidence_thr, as in the reference
    exclusive_masks=True,
)
