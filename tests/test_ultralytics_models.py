"""Any official Ultralytics pose or segment checkpoint can stand in the lite
loop by registry name; only yolo11n(-pose) exist here, so the others are
random-weight models of the real architectures saved under their official names."""

from __future__ import annotations

import numpy as np
import pytest

from bmp.weights import CHECKPOINTS, WeightsError


@pytest.fixture(scope="module")
def random_yolos(tmp_path_factory):
    import torch
    from ultralytics import YOLO

    folder = tmp_path_factory.mktemp("yolo_random")
    for name in ("yolov8n-pose", "yolo11n-seg", "yolo11s-pose"):
        # Seeded: Ultralytics saves in fp16, and some random draws overflow there.
        torch.manual_seed(0)
        model = YOLO(f"{name}.yaml")
        head = model.model.model[-1]
        for branch in head.cv3:  # class logits: make "person" likely everywhere
            branch[-1].bias.data.fill_(-10.0)
            branch[-1].bias.data[0] = 2.0
        model.save(str(folder / CHECKPOINTS[name].filename))
    return folder


def test_registry_names_the_pose_and_segment_families():
    for family in ("yolo11", "yolov8"):
        for size in "nsmlx":
            for task in ("pose", "seg"):
                entry = CHECKPOINTS[f"{family}{size}-{task}"]
                assert entry.url.endswith(f"/{family}{size}-{task}.pt")


@pytest.mark.parametrize("name", ["yolov8n-pose", "yolo11s-pose", "yolo11n-seg"])
def test_checkpoint_by_name_runs_as_detector(random_yolos, coco_images, name):
    from bmp.images import load_image
    from bmp.models.detectors import UltralyticsDetector

    with pytest.raises(WeightsError, match="--trust-checkpoint"):
        UltralyticsDetector(checkpoint=name, weights_dirs=[str(random_yolos)])
    det = UltralyticsDetector(checkpoint=name, weights_dirs=[str(random_yolos)], trust_checkpoint=True,
                              score_thr=0.0, max_per_img=5)
    image = load_image(coco_images[0])
    people = det.detect(image)
    assert len(people) == 5
    assert people.masks.shape == (5, *image.shape[:2])
    if name.endswith("-seg"):
        assert people.masks.any()  # a segment model's masks reach the loop
    else:
        assert people.keypoints.shape == (5, 17, 2)


def test_seg_detector_masks_condition_pose_and_prior_in_the_lite_loop(random_yolos, coco_images):
    """A -seg detector in the lite loop: its masks are the Pose2Instance prior
    and protect each person's own pixels from the others-dimming of its crop."""
    from bmp.loop import BMP
    from tests.conftest import MODELS_DIR

    cfg = {
        "detector": dict(type="UltralyticsDetector", checkpoint="yolo11n-seg", trust_checkpoint=True,
                         score_thr=0.0, max_per_img=4),
        "pose": dict(type="UltralyticsTopDown", checkpoint="yolo11n-pose", condition="others_dimmed"),
        "segmenter": dict(type="Pose2InstanceSegmenter", prior="auto", kpt_thr=0.0),
        "loop": dict(num_iters=2, det_score_thr=0.0, oks_nms_prefer="earlier"),
    }
    bmp = BMP.from_config(cfg, device="cpu", weights_dirs=[str(random_yolos), str(MODELS_DIR)])
    people = bmp.predict(coco_images[0])
    assert len(people) >= 1
    assert people.masks.shape[1:] == bmp.detector_inputs[0].shape[:2]
    assert not np.any(people.masks.sum(0) > 1)
