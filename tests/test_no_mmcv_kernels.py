"""Nothing on the loop's inference path needs an mmcv compiled kernel.

tools/install.sh builds mmcv's ops for the CPU only, so on a GPU an mmcv kernel
would fail ("not implemented for cuda"). mmdet's heads call ``mmcv.ops.batched_nms``
in their post-processing; :func:`bmp.models.detectors.torchvision_nms` routes
those calls to torchvision for the duration of ``MMDetDetector.detect``. Here
every compiled mmcv kernel (and mmcv's NMS entry points) is replaced by a function
that raises, and the loop must still give exactly the people it gives without
the replacement.
"""

from __future__ import annotations

import contextlib
import importlib

import numpy as np
import pytest
import torch

from bmp import BMP
from bmp.models import detectors
from bmp.models.detectors import MMDetDetector, _batched_nms, _nms
from tests.conftest import COCO_DIR
from tests.tiny_models import RTMDET_TINY, tiny_config


class KernelCalled(AssertionError):
    """An mmcv compiled op (or NMS entry point) was reached."""


def _raiser(name: str):
    def kernel(*args, **kwargs):
        raise KernelCalled(f"{name} was called on the inference path")

    return kernel


@pytest.fixture()
def no_mmcv_kernels(monkeypatch) -> list[str]:
    """Every public callable of ``mmcv._ext`` (what each op's ``ext_module``
    calls, at call time) and the Python entry points of mmcv's NMS and
    RoIAlign now raise. Returns the names replaced."""
    import mmcv.ops

    ext = importlib.import_module("mmcv._ext")
    replaced = []
    for name in dir(ext):
        if not name.startswith("_") and callable(getattr(ext, name)):
            monkeypatch.setattr(ext, name, _raiser(f"mmcv._ext.{name}"))
            replaced.append(f"mmcv._ext.{name}")
    # ``mmcv.ops.nms`` the submodule (its ``batched_nms`` looks ``nms`` up there).
    nms_module = importlib.import_module("mmcv.ops.nms")
    for name in ("nms", "batched_nms", "soft_nms", "nms_match"):
        monkeypatch.setattr(nms_module, name, _raiser(f"mmcv.ops.nms.{name}"))
    for name in ("nms", "batched_nms", "soft_nms", "roi_align", "RoIAlign", "point_sample"):
        monkeypatch.setattr(mmcv.ops, name, _raiser(f"mmcv.ops.{name}"))
    assert "mmcv._ext.nms" in replaced and "mmcv._ext.roi_align_forward" in replaced
    return replaced


def _random_boxes(seed: int, n: int = 2000) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 500
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 80 + 1], 1)
    # Few distinct scores: ties everywhere, the case where NMS order matters.
    scores = torch.randint(0, 5, (n,), generator=g).float() / 5
    return boxes, scores, torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("nms_cfg", [
    dict(type="nms", iou_threshold=0.6),
    dict(type="nms", iou_threshold=0.5, class_agnostic=True),
    dict(type="nms", iou_threshold=0.6, split_thr=100),  # mmcv's class-by-class path
    dict(type="nms", iou_threshold=0.7, max_num=50, score_threshold=0.3),
    None,  # mmcv: sort only
])
def test_torchvision_batched_nms_equals_mmcv(nms_cfg):
    from mmcv.ops import batched_nms

    for seed in range(3):
        boxes, scores, idxs = _random_boxes(seed)
        want, got = batched_nms(boxes, scores, idxs, nms_cfg), _batched_nms(boxes, scores, idxs, nms_cfg)
        assert got[0].shape[1] == 5
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)


def test_torchvision_nms_equals_mmcv():
    from mmcv.ops import nms

    boxes, scores, _ = _random_boxes(7)
    for kwargs in (dict(iou_threshold=0.6), dict(iou_threshold=0.3, score_threshold=0.2, max_num=40)):
        want, got = nms(boxes, scores, **kwargs), _nms(boxes, scores, **kwargs)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_routing_is_scoped_to_the_call():
    import mmdet.models.dense_heads.base_dense_head as base_head
    import mmdet.models.dense_heads.rtmdet_ins_head as ins_head
    from mmcv.ops import batched_nms

    with detectors.torchvision_nms():
        assert ins_head.batched_nms is _batched_nms and base_head.batched_nms is _batched_nms
    assert ins_head.batched_nms is batched_nms and base_head.batched_nms is batched_nms


@pytest.fixture(scope="module")
def confident_rtmdet(tiny_weights) -> MMDetDetector:
    # Every anchor a confident person: hundreds of tied, overlapping boxes for NMS.
    return MMDetDetector(RTMDET_TINY, str(tiny_weights / "rtmdet_tiny_confident.pth"), max_per_img=100)


def test_rtmdet_ins_detections_identical_to_mmcv_nms(confident_rtmdet, coco_images, monkeypatch):
    from bmp.images import load_image

    image = load_image(coco_images[2])
    routed = confident_rtmdet.detect(image).to_host()
    monkeypatch.setattr(detectors, "torchvision_nms", contextlib.nullcontext)  # mmcv's own NMS
    plain = confident_rtmdet.detect(image).to_host()
    assert len(routed) == len(plain) > 10
    np.testing.assert_array_equal(routed.boxes, plain.boxes)
    np.testing.assert_array_equal(routed.det_scores, plain.det_scores)
    np.testing.assert_array_equal(routed.masks, plain.masks)


def test_detector_runs_without_mmcv_kernels(confident_rtmdet, coco_images, no_mmcv_kernels, monkeypatch):
    from bmp.images import load_image

    image = load_image(coco_images[2])
    assert len(confident_rtmdet.detect(image)) > 10
    # The replacement bites: without the routing, mmdet reaches mmcv's NMS.
    monkeypatch.setattr(detectors, "torchvision_nms", contextlib.nullcontext)
    with pytest.raises(KernelCalled):
        confident_rtmdet.detect(image)


def _same_people(a, b) -> None:
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.iteration, b.iteration)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    np.testing.assert_array_equal(a.keypoint_scores, b.keypoint_scores)
    np.testing.assert_array_equal(a.masks, b.masks)


def test_tiny_loop_same_people_without_mmcv_kernels(tiny_weights, coco_images, monkeypatch, request):
    """RTMDet-Ins-tiny (confident) -> RTMPose-t -> SAM 2.1 Hiera-T, two iterations."""
    cfg = tiny_config(tiny_weights, detector="rtmdet_tiny_confident.pth")
    cfg["segmenter"]["prompts"]["score_thr"] = 0.0  # random pose weights are never confident
    cfg["detector"]["max_per_img"] = 6  # NMS still sees every anchor; pose and SAM only a few
    bmp = BMP.from_config(cfg, device="cpu")
    image = coco_images[2]
    want = bmp.predict(image)
    request.getfixturevalue("no_mmcv_kernels")
    got = bmp.predict(image)
    assert len(got) >= 2 and len(bmp.detector_inputs) == 2  # the detector ran twice
    _same_people(got, want)


def test_full_architectures_same_people_without_mmcv_kernels(coco_images, request):
    """RTMDet-Ins-L, ViTPose-B, SAM 2.1 Hiera-B+ (the published config) at random
    init, with the detector's classifier made confident so people are found."""
    from bmp.config import load_config
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "configs" / "bmp_rtmdet_vitpose_sam2.py")
    for section in ("detector", "pose", "segmenter"):
        cfg[section]["checkpoint"] = None  # random init, as `bmp bench --random-init`
    cfg.detector.max_per_img = 3  # ViT-B pose on CPU: a few people
    cfg.pose.flip_test = False
    cfg.segmenter.prompts.update(score_thr=0.0, visibility_thr=0.0)
    cfg.loop.oks_kpt_thr = 0.0
    torch.manual_seed(0)
    bmp = BMP.from_config(cfg, device="cpu")
    with torch.no_grad():
        for conv in bmp.detector.model.bbox_head.rtm_cls:
            conv.weight.zero_()
            conv.bias.fill_(-10.0)
            conv.bias[0] = 4.0  # class 0 = person, everywhere
    image = COCO_DIR / "000000040083.jpg"
    want = bmp.predict(image, num_iters=1)
    request.getfixturevalue("no_mmcv_kernels")
    got = bmp.predict(image, num_iters=1)
    assert len(got) >= 1
    _same_people(got, want)
