"""The batched loop does each expensive thing once and gives the same people as
the reference's per-person, per-iteration schedule (``loop.naive``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bmp import BMP
from bmp.masks import mask_iou
from tests.conftest import COCO_ANN, COCO_DIR
from tests.tiny_models import CSPNEXT_T_UDP, tiny_config


def ground_truth_loop_config(tiny_weights) -> dict:
    """Small architectures behind a ground-truth detector (the 5 people of
    000000197388.jpg in both iterations); tests/test_cuda.py runs it on the GPU."""
    cfg = tiny_config(tiny_weights)
    cfg["detector"] = dict(type="GroundTruthDetector", ann_file=str(COCO_ANN), min_area=32 * 32)
    cfg["pose"].update(config=CSPNEXT_T_UDP, checkpoint=str(tiny_weights / "cspnext_t_udp_random.pth"))
    # Random pose weights are never confident: let every keypoint prompt SAM
    # (6 points for everyone, so one decoder call per iteration) and count in OKS.
    cfg["segmenter"]["prompts"].update(score_thr=0.0, visibility_thr=0.0)
    cfg["loop"]["oks_kpt_thr"] = 0.0
    return cfg


@pytest.fixture(scope="module")
def loop(tiny_weights):
    bmp = BMP.from_config(ground_truth_loop_config(tiny_weights), device="cpu")
    assert bmp.pose.batched
    return bmp


class Counter:
    def __init__(self, obj, name):
        self.calls = 0
        self.inner = getattr(obj, name)
        setattr(obj, name, self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)


def test_batched_and_naive_schedules_give_the_same_people(loop):
    image = COCO_DIR / "000000197388.jpg"
    batched = loop.predict(image)
    loop.loop = replace(loop.loop, naive=True)
    try:
        naive = loop.predict(image)
    finally:
        loop.loop = replace(loop.loop, naive=False)
    # The ground-truth detector repeats its 5 people in iteration 2 with the same
    # poses: OKS-NMS ties, and the reference's rule keeps the newer copy.
    assert len(batched) == len(naive) == 5
    assert (batched.iteration == naive.iteration).all() and (batched.iteration == 2).all()
    assert np.abs(batched.keypoints - naive.keypoints).max() <= 0.5
    iou = np.diag(mask_iou(batched.masks, naive.masks))
    assert batched.masks.any((1, 2)).all()
    assert (iou >= 0.99).all()


def test_batched_loop_encodes_once_and_batches_people(loop):
    image = COCO_DIR / "000000197388.jpg"
    encode = Counter(loop.segmenter, "set_images")
    decode = Counter(loop.segmenter.predictor.model.sam_mask_decoder, "forward")
    forward = Counter(loop.pose.model, "extract_feat")
    try:
        people = loop.predict(image)
        assert len(loop.detector_inputs) == 2 and len(people) == 5
        assert encode.calls == 1  # one image embedding for both iterations
        assert decode.calls == 2  # each iteration's 5 people (6 points each) in one decoder call
        assert forward.calls == 2  # one pose batch (with its flipped half) per iteration
        loop.loop = replace(loop.loop, naive=True)
        encode.calls = decode.calls = forward.calls = 0
        loop.predict(image)
        assert encode.calls == 2  # re-encoded every iteration
        assert decode.calls == forward.calls == 10  # one per person in each iteration
    finally:
        loop.loop = replace(loop.loop, naive=False)
        loop.segmenter.set_images = encode.inner
        del loop.segmenter.predictor.model.sam_mask_decoder.forward
        loop.pose.model.extract_feat = forward.inner
