"""loop.redetected_iou: a later iteration's detection that re-finds an earlier
person (nearly the same box) is dropped before pose; others go on as before."""

from __future__ import annotations

import numpy as np
import pytest

from bmp import BMP
from bmp.config import ConfigError, LoopConfig
from bmp.structures import Instances

SIZE = (120, 200)
#: Iteration 1 finds A; iteration 2 finds A again (IoU 0.9 with A's first box),
#: and B, a person partly behind A (IoU 0.2 with A).
FIRST = np.array([[20, 20, 80, 110]], np.float32)
SECOND = np.array([[22, 22, 80, 110], [60, 20, 120, 110]], np.float32)


class TwoPassDetector:
    """Box-only detector: its first call returns ``FIRST``, later ones ``SECOND``."""

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, image: np.ndarray) -> Instances:
        boxes = FIRST if self.calls == 0 else SECOND
        self.calls += 1
        return Instances(SIZE, boxes=boxes.copy(), det_scores=np.full(len(boxes), 0.9, np.float32))


class BoxPose:
    """A pose spread over each box (all keypoints confident); records who it posed."""

    def __init__(self) -> None:
        self.posed: list[np.ndarray] = []

    def estimate(self, image: np.ndarray, people: Instances) -> Instances:
        self.posed.append(people.boxes.copy())
        t = np.linspace(0.1, 0.9, 17, dtype=np.float32)[None, :, None]
        lo, hi = people.boxes[:, None, :2], people.boxes[:, None, 2:]
        kpts = lo + (hi - lo) * t
        ones = np.ones((len(people), 17), np.float32)
        return people.replace(keypoints=kpts, keypoint_scores=ones, visibility=ones, presence=ones)


class BoxSegmenter:
    def set_image(self, image: np.ndarray) -> None:
        pass

    def segment(self, people: Instances) -> Instances:
        masks = np.zeros((len(people), *SIZE), bool)
        for i, (x0, y0, x1, y1) in enumerate(people.boxes.astype(int)):
            masks[i, y0:y1, x0:x1] = True
        return people.replace(masks=masks, mask_scores=np.ones(len(people), np.float32))


def run(redetected_iou: float | None) -> tuple[Instances, BoxPose]:
    pose = BoxPose()
    # OKS-NMS off (threshold 1), so only the box test can remove a duplicate.
    loop = LoopConfig(num_iters=2, oks_nms_thr=1.0, redetected_iou=redetected_iou)
    bmp = BMP(TwoPassDetector(), pose, BoxSegmenter(), loop)
    return bmp.predict(np.zeros((*SIZE, 3), np.uint8)), pose


def test_a_redetected_person_is_dropped_before_pose():
    people, pose = run(0.8)
    assert [len(p) for p in pose.posed] == [1, 1]  # iteration 2 posed B only
    np.testing.assert_array_equal(pose.posed[1], SECOND[1:])
    assert people.iteration.tolist() == [1, 2]
    np.testing.assert_array_equal(people.boxes, np.concatenate([FIRST, SECOND[1:]]))


def test_without_the_option_every_detection_is_posed_as_in_the_reference():
    people, pose = run(None)
    assert [len(p) for p in pose.posed] == [1, 2]
    assert people.iteration.tolist() == [1, 2, 2]


def test_a_threshold_above_the_overlap_keeps_the_detection():
    _, pose = run(0.95)  # A's two boxes overlap at IoU 0.9
    assert [len(p) for p in pose.posed] == [1, 2]


def test_only_redetections_left_stops_the_loop():
    class Same(TwoPassDetector):
        def detect(self, image: np.ndarray) -> Instances:
            self.calls += 1
            return Instances(SIZE, boxes=FIRST.copy(), det_scores=np.full(1, 0.9, np.float32))

    bmp = BMP(Same(), BoxPose(), BoxSegmenter(), LoopConfig(num_iters=3, redetected_iou=0.8))
    records = bmp.predict_iterations(np.zeros((*SIZE, 3), np.uint8))
    assert [len(r.detections) for r in records] == [1, 0]


@pytest.mark.parametrize("value", [0.0, 1.5, -0.2])
def test_out_of_range_threshold_is_a_config_error(value):
    with pytest.raises(ConfigError, match="loop.redetected_iou"):
        LoopConfig.from_dict({"redetected_iou": value})


def test_lite_config_drops_redetections():
    from bmp.config import load_config
    from tests.conftest import ROOT

    loop = load_config(ROOT / "configs" / "bmp_lite.py").loop
    assert loop["redetected_iou"] == 0.8 and loop["oks_nms_thr"] == 0.7
