"""RTMDet's letterbox and normalisation as tensor ops on the model's device give
what mmdet's own CPU pipeline gives."""

from __future__ import annotations

import numpy as np
import torch

from bmp.images import load_image
from bmp.masks import box_iou, mask_iou
from bmp.models.detectors import MMDetDetector
from tests.conftest import COCO_DIR
from tests.tiny_models import RTMDET_TINY


def test_device_letterbox_matches_mmdet_pipeline(tmp_path):
    from mmdet.apis import init_detector
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from bmp.models.base import resolve_model_config

    cfg = Config.fromfile(resolve_model_config(RTMDET_TINY))
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("mmdet"):
        model = init_detector(cfg, checkpoint=None, device="cpu")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "rtmdet_raw.pth")
    # Untrained weights favour one class everywhere (44 with this seed): compare that one.
    common = dict(score_thr=1e-4, max_per_img=100, person_class=44)
    on_device = MMDetDetector(RTMDET_TINY, str(tmp_path / "rtmdet_raw.pth"), **common)
    reference = MMDetDetector(RTMDET_TINY, str(tmp_path / "rtmdet_raw.pth"), device_preprocess=False,
                              **common)
    assert on_device._letterbox == ((640, 640), (640, 640), 114.0)
    for name in ("000000197388.jpg", "000000040083.jpg"):  # landscape, two aspect ratios
        image = load_image(COCO_DIR / name)
        a, b = on_device.detect(image).to_host(), reference.detect(image).to_host()
        assert len(a) == len(b) > 10
        assert np.abs(np.sort(a.det_scores) - np.sort(b.det_scores)).max() < 1e-4
        # Untrained boxes are sub-pixel and near-tied in score, so NMS may swap
        # a rare one: nearly all must have an identical partner.
        iou = box_iou(a.boxes, b.boxes)
        matched = iou.max(1) > 0.99
        assert matched.mean() >= 0.95
        best = iou.argmax(1)[matched]
        assert np.median(np.diag(mask_iou(a.masks[matched], b.masks[best]))) > 0.98
