"""The BMP v2 config end to end with the real architectures at random init
(RTMDet-Ins-L, PMPose-B, SAM 2.1 Hiera-B+), saved under their official file
names and found through --weights-dir, as a user with downloaded weights would."""

from __future__ import annotations

import numpy as np
import torch

from bmp import BMP
from bmp.weights import CHECKPOINTS
from tests.conftest import COCO_DIR, ROOT
from tests.test_pose_models import PMPOSE, build_random
from tests.tiny_models import build_rtmdet_tiny


def test_pmpose_sampose2seg_config_runs_end_to_end(tmp_path):
    from sam2.build_sam import build_sam2

    rtmdet = build_rtmdet_tiny(cls_bias=4.0, config="mmdet::rtmdet/rtmdet-ins_l_8xb32-300e_coco.py")
    torch.save({"state_dict": rtmdet.state_dict()}, tmp_path / CHECKPOINTS["rtmdet-ins-l-mask"].filename)
    del rtmdet
    torch.save({"state_dict": build_random(PMPOSE).state_dict()},
               tmp_path / CHECKPOINTS["pmpose-b"].filename)
    sam = build_sam2("configs/sam2.1/sam2.1_hiera_b+.yaml", ckpt_path=None, device="cpu")
    torch.save({"model": sam.state_dict()}, tmp_path / CHECKPOINTS["sam-pose2seg-hiera-b+"].filename)
    del sam

    from bmp.config import load_config

    cfg = load_config(ROOT / "configs" / "bmp_pmpose_sampose2seg.py")
    cfg.detector.max_per_img = 3  # ViT-B pose on CPU: keep the test to a few people
    bmp = BMP.from_config(cfg, device="cpu", weights_dirs=[tmp_path])
    people = bmp.predict(COCO_DIR / "000000040083.jpg")
    n = len(people)
    assert n >= 1
    assert people.keypoints.shape == (n, 17, 2) and people.masks.shape == (n, 333, 500)
    assert people.visibility.min() >= 0 and people.visibility.max() <= 1
    assert people.masks.sum(0).max() <= 1
    # MaxVis-3: at most three positive prompts per person, no negatives.
    assert ((people.prompt_labels == 1).sum(1) <= 3).all() and not (people.prompt_labels == 0).any()
    assert np.isfinite(people.kpt_oks).all()
    print(bmp.times.summary())
