"""The Pose2Seg network and its loop segmenter, at random init."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mmengine.config import Config
from pycocotools.coco import COCO
from torchvision.models.resnet import Bottleneck

from bmp.images import load_image
from bmp.models import SEGMENTERS
from bmp.models.base import build_component
from bmp.models.pose2seg.network import Pose2SegNet, ResidualUnit
from bmp.models.pose2seg.segmenter import Pose2SegSegmenter
from bmp.structures import Instances
from bmp.weights import WeightsError
from tests.conftest import COCO_ANN, COCO_DIR, ROOT

CONFIG = ROOT / "configs" / "bmp_pose2seg.py"
SMALL = dict(backbone="resnet18", fpn_levels=(1,), fpn_channels=16, seg_channels=32)


def network_config(**overrides) -> dict:
    network = Config.fromfile(str(CONFIG)).segmenter.network.to_dict()
    network["templates"] = str(ROOT / network["templates"])
    return {**network, **overrides}


def gt_people(image_id: int) -> tuple[np.ndarray, Instances]:
    coco = COCO(str(COCO_ANN))
    info = coco.imgs[image_id]
    anns = coco.imgToAnns[image_id]
    boxes = np.array([a["bbox"] for a in anns], np.float32)
    boxes[:, 2:] += boxes[:, :2]
    kpts = np.array([a["keypoints"] for a in anns], np.float32).reshape(-1, 17, 3)
    vis = (kpts[..., 2] > 0).astype(np.float32)
    people = Instances((info["height"], info["width"]), boxes=boxes, keypoints=kpts[..., :2].copy(),
                       keypoint_scores=vis, visibility=vis.copy(), presence=vis.copy())
    return load_image(COCO_DIR / info["file_name"]), people


def test_default_network_is_the_papers_resnet50_fpn_and_segmodule():
    net = Pose2SegNet(**network_config()).eval()
    assert isinstance(net.backbone.body.layer4[0], Bottleneck)  # ResNet-50, all four stages
    assert net.backbone.fpn.layer_blocks[0].out_channels == 256
    stem = net.seg.stem[0]
    assert stem.kernel_size == (7, 7) and stem.stride == (2, 2) and stem.in_channels == 256 + 55
    assert len(net.seg.units) == 10 and all(isinstance(u, ResidualUnit) for u in net.seg.units)
    assert net.seg.predict.out_channels == 1 and net.templates.shape == (3, 17, 2)
    image, people = gt_people(785)
    with torch.no_grad():
        inputs, scale = net.preprocess(image)
        assert max(inputs.shape[-2:]) == 512 and inputs.shape[-1] % 32 == 0
        feats = net.extract_features(inputs)
        out = net(feats, scale, torch.as_tensor(people.keypoints),
                  torch.as_tensor(people.visibility > 0), torch.as_tensor(people.boxes))
    assert feats.shape[1:] == (256, inputs.shape[2] // 4, inputs.shape[3] // 4)
    assert out.logits.shape == (1, 1, 64, 64) and out.alignment.template.item() >= 0


def test_segmenter_from_config_segments_posed_people_only():
    cfg = Config.fromfile(str(CONFIG)).segmenter.to_dict()
    cfg.update(network=network_config(**SMALL), checkpoint=None)
    segmenter = build_component(SEGMENTERS, cfg, "segmenter", device="cpu", weights_dirs=[])
    assert isinstance(segmenter, Pose2SegSegmenter)
    image, people = gt_people(40083)  # three people, one without keypoints
    with pytest.raises(RuntimeError, match="set_image"):
        segmenter.segment(people)
    segmenter.set_image(image)
    out = segmenter.segment(people)
    posed = people.visibility.sum(1) > 0
    assert out.masks.shape == (3, *image.shape[:2]) and out.masks.dtype == bool
    assert not out.masks[~posed].any() and (out.mask_scores[~posed] == 0).all()
    assert ((out.mask_scores >= 0) & (out.mask_scores <= 1)).all()
    assert len(segmenter.segment(people[np.zeros(0, int)])) == 0


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    torch.save({"state_dict": Pose2SegNet(**network_config(**SMALL)).state_dict()}, tmp_path / "small.pth")
    with pytest.raises(WeightsError, match="does not fit"):
        Pose2SegSegmenter(network=network_config(**{**SMALL, "seg_channels": 64}),
                          checkpoint="small.pth", weights_dirs=[str(tmp_path)])
    with pytest.raises(ValueError, match="templates"):
        Pose2SegSegmenter(network=SMALL)
