"""Conditioning a pose model that takes no mask (YOLO-pose) on the people found earlier."""

from __future__ import annotations

import numpy as np
import pytest

from bmp.structures import Instances
from tests.conftest import MODELS_DIR


@pytest.fixture(scope="module")
def yolo_pose():
    from bmp.models.pose import UltralyticsTopDown

    return UltralyticsTopDown(checkpoint="yolo11n-pose", weights_dirs=[str(MODELS_DIR)],
                              condition="others_dimmed", condition_alpha=0.75)


def _crops(model, image, people, others):
    seen = []
    real = model.model.predict

    def capture(crops, **kwargs):
        seen.extend(c.copy() for c in crops)
        return real(crops, **kwargs)

    model.model.predict = capture
    try:
        model.estimate(image, people, others)
    finally:
        model.model.predict = real
    return seen


def test_crop_changes_only_where_earlier_people_are_and_not_on_the_own_mask(yolo_pose, coco_images):
    from bmp.images import load_image

    image = load_image(coco_images[0])
    h, w = image.shape[:2]
    box = np.array([[100, 50, 300, 350]], np.float32)
    own = np.zeros((1, h, w), bool)
    own[0, 200:260, 150:200] = True  # the person's own detector mask
    people = Instances((h, w), boxes=box, masks=own)
    found = np.zeros((1, h, w), bool)
    found[0, 150:300, 120:260] = True  # an earlier person overlapping the crop
    others = Instances((h, w), boxes=np.array([[120, 150, 260, 300]], np.float32), masks=found)

    plain = _crops(yolo_pose, image, people, None)[0].astype(int)
    dimmed = _crops(yolo_pose, image, people, others)[0].astype(int)
    # Crop origin: the box padded by 1.25 around its centre, clipped.
    x0, y0 = int(np.floor(200 - 125)), int(np.floor(200 - 187.5))
    region = (found[0] & ~own[0])[y0:y0 + plain.shape[0], x0:x0 + plain.shape[1]]
    changed = (plain != dimmed).any(-1)
    assert changed.any() and not (changed & ~region).any()
    np.testing.assert_array_equal(dimmed[region], np.floor(plain[region] * 0.25 + 0.5))
    assert _crops(yolo_pose, image, people, others[np.zeros(0, int)])[0].tolist() == plain.tolist()


def test_condition_values_are_checked():
    from bmp.models.pose import UltralyticsTopDown

    with pytest.raises(ValueError, match="condition"):
        UltralyticsTopDown(checkpoint="yolo11n-pose", weights_dirs=[str(MODELS_DIR)], condition="blur")


def test_an_earlier_person_the_box_re_detects_is_not_dimmed(yolo_pose, coco_images):
    from bmp.images import load_image

    image = load_image(coco_images[0])
    h, w = image.shape[:2]
    box = np.array([[100, 50, 300, 350]], np.float32)
    people = Instances((h, w), boxes=box)
    found = np.zeros((1, h, w), bool)
    found[0, 60:340, 110:290] = True
    same = Instances((h, w), boxes=np.array([[105, 55, 295, 345]], np.float32), masks=found)
    plain = _crops(yolo_pose, image, people, None)[0]
    assert _crops(yolo_pose, image, people, same)[0].tolist() == plain.tolist()


def test_first_pass_detector_keeps_the_detectors_keypoints_until_someone_is_found(coco_images):
    from bmp.images import load_image
    from bmp.models.pose import UltralyticsTopDown

    pose = UltralyticsTopDown(checkpoint="yolo11n-pose", weights_dirs=[str(MODELS_DIR)],
                              first_pass="detector")
    image = load_image(coco_images[0])
    h, w = image.shape[:2]
    kpts = np.full((1, 17, 2), 7.0, np.float32)
    people = Instances((h, w), boxes=np.array([[100, 50, 300, 350]], np.float32), keypoints=kpts,
                       keypoint_scores=np.full((1, 17), 0.9, np.float32))
    assert pose.estimate(image, people).keypoints.tolist() == kpts.tolist()
    earlier = Instances((h, w), boxes=np.array([[400, 0, 500, 100]], np.float32))
    assert pose.estimate(image, people, earlier).keypoints.tolist() != kpts.tolist()  # top-down now
