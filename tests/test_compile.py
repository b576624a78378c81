"""``loop.compile``: the models' heavy parts go through torch.compile in place
and the loop gives the same people."""

from __future__ import annotations

import numpy as np
import pytest

from bmp import BMP
from bmp.config import ConfigError
from bmp.masks import mask_iou
from tests.tiny_models import CSPNEXT_T_UDP, tiny_config


def config(tiny_weights, **loop):
    cfg = tiny_config(tiny_weights, detector="rtmdet_tiny_confident.pth", **loop)
    cfg["pose"].update(config=CSPNEXT_T_UDP, checkpoint=str(tiny_weights / "cspnext_t_udp_random.pth"))
    cfg["segmenter"]["prompts"]["score_thr"] = 0.0  # random pose weights are never confident
    return cfg


def test_compiled_loop_gives_the_same_people(tiny_weights, coco_images):
    plain = BMP.from_config(config(tiny_weights), device="cpu")
    # 'eager' captures graphs with dynamo and runs them unchanged: it checks that
    # every compiled part traces without a C++ toolchain.
    compiled = BMP.from_config(config(tiny_weights, compile="eager"), device="cpu")
    parts = [compiled.detector.model.backbone, compiled.pose.model.backbone, compiled.pose.model.head,
             compiled.segmenter.predictor.model.image_encoder]
    assert all(p._compiled_call_impl is not None for p in parts)
    assert plain.pose.model.backbone._compiled_call_impl is None
    assert compiled.pose.pad_batch and not plain.pose.pad_batch  # few static batch sizes
    # Several people, found again in iteration 2: two batch sizes, padded.
    a, b = plain.predict(coco_images[2]), compiled.predict(coco_images[2])
    assert len(a) == len(b) >= 2 and (a.iteration == b.iteration).all()
    assert len(plain.detector_inputs) == 2
    assert np.abs(a.keypoints - b.keypoints).max() < 1e-2
    both = a.masks.any((1, 2)) | b.masks.any((1, 2))
    assert (np.diag(mask_iou(a.masks, b.masks))[both] >= 0.99).all()


def test_unknown_compile_backend_is_a_config_error(tiny_weights):
    with pytest.raises(ConfigError, match="loop.compile"):
        BMP.from_config(config(tiny_weights, compile="tensorrt"), device="cpu")


def test_compile_survives_numpy_scalars_under_inference_mode():
    """mmpretrain's ViT (ViTPose) keeps ``DropPath.drop_prob`` as a numpy
    float; compiled as is, dynamo's guards fail under inference_mode. The loop
    compiles through ``compile_in_place``, which makes them Python numbers."""
    import torch
    from mmcv.cnn.bricks.drop import DropPath

    from bmp.models.base import compile_in_place

    net = torch.nn.Sequential(torch.nn.Linear(4, 4), DropPath(np.float64(0.1))).eval()
    compile_in_place(net, "eager", dynamic=True)
    with torch.inference_mode():
        for batch in (2, 3):
            assert net(torch.randn(batch, 4)).shape == (batch, 4)
    assert type(net[1].drop_prob) is float
