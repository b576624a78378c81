"""supervision interop: ``Instances.to_supervision`` / ``from_supervision``
round-trip every field supervision has a place for, and supervision users'
detections go through the loop's pose and mask steps."""

from __future__ import annotations

import numpy as np
import pytest

from bmp import BMP
from bmp.models.detectors import GroundTruthDetector
from bmp.structures import Instances
from tests.conftest import COCO_ANN, COCO_DIR, MODELS_DIR, ROOT, import_extra, offline_bmp_home

sv = import_extra("supervision")

IMAGE = COCO_DIR / "000000197388.jpg"  # five people


def tracked_people() -> Instances:
    """Three people of a 60x80 image with every field set, as bmp video leaves them."""
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 60, 80), bool)
    masks[0, 5:30, 5:20] = masks[1, 10:50, 30:45] = masks[2, 20:58, 50:78] = True
    boxes = np.array([[5, 5, 20, 30], [30, 10, 45, 50], [50, 20, 78, 58]], np.float32)
    return Instances(
        (60, 80), boxes=boxes, scores=np.array([0.9, 0.8, 0.7], np.float32),
        det_scores=np.array([0.95, 0.6, 0.5], np.float32),
        keypoints=rng.uniform(0, 60, (3, 17, 2)).astype(np.float32),
        keypoint_scores=rng.uniform(0, 1, (3, 17)).astype(np.float32),
        visibility=rng.uniform(0, 1, (3, 17)).astype(np.float32),
        masks=masks, mask_scores=np.array([0.5, 0.6, 0.7], np.float32),
        iteration=np.array([1, 1, 2], np.int32), track_id=np.array([4, 9, 11], np.int32),
    )


def test_round_trip_keeps_boxes_masks_scores_tracks_iterations_and_keypoints():
    people = tracked_people()
    detections, keypoints = people.to_supervision(kpt_thr=0.5)
    assert isinstance(detections, sv.Detections) and isinstance(keypoints, sv.KeyPoints)
    assert len(detections) == len(keypoints) == 3
    np.testing.assert_array_equal(detections.class_id, 0)
    assert list(detections.data["class_name"]) == ["person"] * 3
    np.testing.assert_array_equal(detections.tracker_id, people.track_id)
    np.testing.assert_array_equal(keypoints.visible, people.keypoint_scores >= 0.5)

    back = Instances.from_supervision(detections, keypoints=keypoints)
    assert back.image_size == people.image_size
    for name in ("boxes", "masks", "scores", "det_scores", "mask_scores", "iteration", "track_id",
                 "keypoints", "keypoint_scores", "visibility"):
        np.testing.assert_array_equal(getattr(back, name), getattr(people, name), err_msg=name)


def test_untracked_people_have_no_tracker_id_and_supervision_annotators_draw_them():
    people = tracked_people().replace(track_id=np.full(3, -1, np.int32))
    detections, keypoints = people.to_supervision()
    assert detections.tracker_id is None
    assert Instances.from_supervision(detections).track_id.tolist() == [-1, -1, -1]
    canvas = np.zeros((60, 80, 3), np.uint8)
    drawn = sv.MaskAnnotator().annotate(canvas.copy(), detections)
    drawn = sv.VertexAnnotator(radius=1).annotate(drawn, keypoints)
    assert drawn[people.masks.any(0)].any() and not drawn[~people.masks.any(0)].all()


def test_compact_masks_and_class_filter():
    people = tracked_people()
    detections, _ = people.to_supervision()
    compact = sv.CompactMask.from_dense(detections.mask, detections.xyxy, people.image_size)
    mixed = sv.Detections(
        xyxy=detections.xyxy, mask=compact, confidence=detections.confidence,
        class_id=np.array([0, 2, 0]),  # a car (COCO-80 class 2) among people
    )
    back = Instances.from_supervision(mixed, class_id=0)
    np.testing.assert_array_equal(back.boxes, people.boxes[[0, 2]])
    np.testing.assert_array_equal(back.masks, people.masks[[0, 2]])
    np.testing.assert_array_equal(back.det_scores, people.scores[[0, 2]])
    assert (back.iteration == 0).all()  # the caller's people: the loop's iteration 0


@pytest.mark.parametrize(
    ("detections", "kwargs", "message"),
    [
        (lambda: sv.Detections(xyxy=np.array([[0, 0, 5, 5]], np.float32)), {}, "needs image_size"),
        (lambda: sv.Detections(xyxy=np.array([[0, 0, 5, 5]], np.float32), mask=np.zeros((1, 9, 9), bool)),
         {"image_size": (10, 10)}, "masks are (9, 9), image_size is (10, 10)"),
        (lambda: sv.Detections(xyxy=np.array([[5, 0, 1, 5]], np.float32)), {"image_size": (10, 10)},
         "is not finite xyxy"),
        (lambda: sv.Detections(xyxy=np.array([[0, 0, 5, 5]], np.float32)),
         {"image_size": (10, 10), "class_id": 0}, "have no class_id"),
    ],
)
def test_malformed_detections_are_one_line_errors(detections, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Instances.from_supervision(detections(), **kwargs)


def test_wrong_keypoint_count_is_an_error():
    detections, _ = tracked_people().to_supervision()
    with pytest.raises(ValueError, match="COCO's 17 per person"):
        Instances.from_supervision(detections, keypoints=sv.KeyPoints(xy=np.zeros((3, 5, 2), np.float32)))


def test_supervision_detections_through_the_loops_pose_step(tmp_path_factory):
    """A supervision user's detections (here the image's ground-truth people)
    get poses from the loop's pose step, then go back to supervision."""
    from bmp.images import load_image

    gt = GroundTruthDetector(str(COCO_ANN), min_area=32 * 32)
    gt.select(IMAGE.name)
    image = load_image(IMAGE)
    truth = gt.detect(image)
    theirs = sv.Detections(xyxy=truth.boxes, mask=truth.masks, confidence=np.ones(len(truth), np.float32),
                           class_id=np.zeros(len(truth), int))
    people = Instances.from_supervision(theirs, class_id=0)
    with offline_bmp_home(tmp_path_factory):
        lite = BMP.from_config(str(ROOT / "configs" / "bmp_lite.py"), device="cpu", weights_dirs=[MODELS_DIR])
    posed = lite.estimate_pose(image, people.boxes, people.masks, people.det_scores)
    np.testing.assert_array_equal(posed.boxes, truth.boxes)
    assert (posed.keypoint_scores.max(1) > 0.3).all()  # a pose for every person
    # The keypoints the pose is sure of lie in (or near: the crop is padded) their person's box.
    _, keypoints = posed.to_supervision()
    sure = keypoints.visible
    pad = 0.25 * (truth.boxes[:, 2:] - truth.boxes[:, :2])[:, None]
    low, high = truth.boxes[:, None, :2] - pad, truth.boxes[:, None, 2:] + pad
    inside = (keypoints.xy >= low) & (keypoints.xy <= high)
    assert inside.all(-1)[sure].mean() > 0.9
