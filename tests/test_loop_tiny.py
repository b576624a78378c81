"""The loop with small real architectures (RTMDet-Ins-tiny, RTMPose-t, SAM 2.1
Hiera-T) at random init, loaded from checkpoint files through bmp.weights."""

from __future__ import annotations

import numpy as np
import pytest

from bmp import BMP
from bmp.config import ConfigError
from bmp.masks import mask_out
from tests.conftest import COCO_ANN
from tests.tiny_models import tiny_config


def check_shapes(people, size):
    n = len(people)
    h, w = size
    assert people.boxes.shape == (n, 4) and people.boxes.dtype == np.float32
    assert people.keypoints.shape == (n, 17, 2) and people.keypoints.dtype == np.float32
    assert people.keypoint_scores.shape == (n, 17)
    assert people.visibility.shape == (n, 17) and people.presence.shape == (n, 17)
    assert people.masks.shape == (n, h, w) and people.masks.dtype == bool
    assert people.scores.shape == people.mask_scores.shape == people.iteration.shape == (n,)
    assert people.iteration.dtype == np.int32
    if n:
        assert people.masks.sum(0).max() <= 1  # exclusive
        assert set(np.unique(people.iteration)) <= {1, 2}
        assert np.all(np.diff(people.iteration) >= 0)


@pytest.fixture(scope="module")
def gt_loop(tiny_weights):
    cfg = tiny_config(tiny_weights)
    cfg["detector"] = dict(type="GroundTruthDetector", ann_file=str(COCO_ANN), min_area=32 * 32)
    return BMP.from_config(cfg, device="cpu")


def test_random_detector_finds_nobody_and_shapes_hold(tiny_weights, coco_images):
    bmp = BMP.from_config(tiny_config(tiny_weights), device="cpu")
    people = bmp.predict(coco_images[0])
    assert len(people) == 0
    check_shapes(people, (425, 640))
    assert len(bmp.detector_inputs) == 1  # nothing found: no second iteration


def test_confident_detector_gives_many_people(tiny_weights, coco_images):
    bmp = BMP.from_config(
        tiny_config(tiny_weights, detector="rtmdet_tiny_confident.pth"), device="cpu"
    )
    people = bmp.predict(coco_images[2])
    assert len(people) >= 2
    check_shapes(people, (429, 640))


def test_one_person(gt_loop, coco_images):
    people = gt_loop.predict(coco_images[0])  # 000000000785.jpg holds one person
    assert len(people) == 1
    check_shapes(people, (425, 640))


def test_second_iteration_duplicates_are_removed_by_pose_nms(gt_loop, coco_images):
    # The ground-truth detector ignores the masked input, so iteration 2 proposes
    # exactly the people of iteration 1 again, with identical poses.
    # Each identical pair ties on OKS and on confident keypoints; the reference's
    # rule then drops the pair's reference pose, the earlier (first-listed) copy.
    people = gt_loop.predict(coco_images[3])
    assert len(gt_loop.detector_inputs) == 2
    assert len(people) == 5
    assert (people.iteration == 2).all()
    check_shapes(people, (392, 640))


def test_detector_input_is_black_exactly_under_accumulated_masks(gt_loop, coco_images):
    people = gt_loop.predict(coco_images[2])
    original, masked = gt_loop.detector_inputs
    union = people.masks.any(0)
    assert union.any(), "the segmenter produced no mask to test with"
    assert (masked == mask_out(original, people.masks)).all()
    assert (masked[union] == 0).all()
    assert (masked[~union] == original[~union]).all()


def test_num_iters_override_and_array_input(gt_loop, coco_images):
    from bmp.images import load_image

    gt_loop.detector.select(coco_images[3].name)
    people = gt_loop.predict(load_image(coco_images[3])[..., ::-1], num_iters=1, color_order="bgr")
    assert len(gt_loop.detector_inputs) == 1 and len(people) == 5


def test_unknown_config_keys_are_clear_errors(tiny_weights):
    cfg = tiny_config(tiny_weights)
    cfg["segmenter"]["prompt"] = {}
    with pytest.raises(ConfigError, match="unknown key.*prompt"):
        BMP.from_config(cfg, device="cpu")
    cfg = tiny_config(tiny_weights, oks_thr=0.5)
    with pytest.raises(ConfigError, match="loop: unknown key"):
        BMP.from_config(cfg, device="cpu")
    cfg = tiny_config(tiny_weights)
    cfg["detector"]["type"] = "NoSuchDetector"
    with pytest.raises(ConfigError, match="unknown type"):
        BMP.from_config(cfg, device="cpu")


def test_results_load_with_pycocotools(gt_loop, coco_images):
    from pycocotools.coco import COCO

    from bmp.coco import instances_to_coco

    gt = COCO(str(COCO_ANN))
    results = instances_to_coco(gt_loop.predict(coco_images[1]), 40083)
    loaded = gt.loadRes(results)
    assert len(loaded.anns) == len(results) >= 2
    assert all(a["area"] > 0 for a in loaded.anns.values())
