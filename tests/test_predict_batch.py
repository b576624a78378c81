"""``BMP.predict_batch``: B images through the loop together give the people
that per-image ``predict`` gives, with one model call per stage and iteration."""

from __future__ import annotations

import numpy as np
import pytest

from bmp import BMP
from bmp.images import load_image
from bmp.structures import Instances
from tests.conftest import COCO_ANN, COCO_DIR, MODELS_DIR, ROOT
from tests.tiny_models import CSPNEXT_T_UDP, tiny_config


def assert_same_people(batched: Instances, single: Instances) -> None:
    """The same people in the same order: counts, iterations and masks equal,
    coordinates equal up to float noise of a different batch size."""
    assert len(batched) == len(single)
    assert batched.image_size == single.image_size
    np.testing.assert_array_equal(batched.iteration, single.iteration)
    np.testing.assert_allclose(batched.boxes, single.boxes, atol=1e-3)
    np.testing.assert_allclose(batched.keypoints, single.keypoints, atol=1e-3)
    np.testing.assert_allclose(batched.keypoint_scores, single.keypoint_scores, atol=1e-4)
    np.testing.assert_allclose(batched.scores, single.scores, atol=1e-4)
    np.testing.assert_allclose(batched.mask_scores, single.mask_scores, atol=1e-4)
    np.testing.assert_array_equal(batched.prompts, single.prompts)
    differ = (batched.masks != single.masks).sum((1, 2))
    assert (differ <= 0.001 * single.masks.sum((1, 2)) + 2).all(), differ


class Calls:
    """Counts the calls of ``obj.name`` (and still makes them)."""

    def __init__(self, obj, name):
        self.obj, self.name, self.calls = obj, name, 0
        self.inner = getattr(obj, name)
        setattr(obj, name, self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)

    def restore(self) -> None:
        if self.name in vars(self.obj):  # an instance attribute: the spy
            delattr(self.obj, self.name)
        else:
            setattr(self.obj, self.name, self.inner)


@pytest.fixture(scope="module")
def tiny_loop(tiny_weights):
    """The full architecture (mmdet detector, batched UDP pose, SAM 2.1) with
    random weights; a confident detector, so that every image has people."""
    cfg = tiny_config(tiny_weights, detector="rtmdet_tiny_confident.pth")
    cfg["detector"]["max_per_img"] = 4  # a few people per image keep the test fast
    cfg["pose"].update(config=CSPNEXT_T_UDP, checkpoint=str(tiny_weights / "cspnext_t_udp_random.pth"))
    cfg["segmenter"]["prompts"].update(score_thr=0.0, visibility_thr=0.0)
    cfg["loop"].update(oks_kpt_thr=0.0, num_iters=2)
    return BMP.from_config(cfg, device="cpu")


@pytest.fixture(scope="module")
def lite():
    return BMP.from_config(ROOT / "configs" / "bmp_lite.py", device="cpu", weights_dirs=[MODELS_DIR])


def images_of_different_sizes(coco_images) -> list[np.ndarray]:
    images = [load_image(p) for p in coco_images[:3]]
    assert len({i.shape for i in images}) > 1
    return images


def test_lite_batch_equals_per_image_predict(lite, coco_images):
    images = [load_image(p) for p in coco_images[:4]]
    images.append(images[0].copy())  # two of one shape share the detector's call
    images.append(np.zeros((240, 320, 3), np.uint8))  # nobody: stops after iteration 1
    histories = lite.predict_iterations_batch(images)
    assert [len(h) for h in histories] == [2, 2, 2, 2, 2, 1]
    for image, history in zip(images, histories, strict=True):
        assert_same_people(history[-1].people, lite.predict(image))
    assert sum(len(h[-1].people) for h in histories) >= 8
    for people, history in zip(lite.predict_batch(images), histories, strict=True):
        assert_same_people(people, history[-1].people)


def test_tiny_architectures_batch_equals_per_image(tiny_loop, coco_images):
    images = images_of_different_sizes(coco_images)[:2]
    histories = tiny_loop.predict_iterations_batch(images)
    for history, image in zip(histories, images, strict=True):
        reference = tiny_loop.predict_iterations(image)
        assert [r.iteration for r in history] == [r.iteration for r in reference]
        for got, want in zip(history, reference, strict=True):
            np.testing.assert_array_equal(got.detect_input, want.detect_input)
            assert len(got.detections) == len(want.detections)
            assert_same_people(got.people, want.people)
    assert all(len(h[-1].people) for h in histories)
    # The final people of predict_batch are the last records' people.
    for people, history in zip(tiny_loop.predict_batch(images), histories, strict=True):
        assert_same_people(people, history[-1].people)


def test_one_model_call_per_stage_and_iteration(tiny_loop, coco_images):
    images = images_of_different_sizes(coco_images)
    detect = Calls(tiny_loop.detector.model, "predict")
    encode = Calls(tiny_loop.segmenter.predictor.model.image_encoder, "forward")
    pose = Calls(tiny_loop.pose.model, "extract_feat")
    decode = Calls(tiny_loop.segmenter.predictor.model.sam_mask_decoder, "forward")
    try:
        people = tiny_loop.predict_batch(images)
    finally:
        for spy in (detect, encode, pose, decode):
            spy.restore()
    iterations = max(int(p.iteration.max()) for p in people)
    assert iterations == 2
    assert detect.calls == 2  # RTMDet pads every image to 640x640: one call per iteration
    assert encode.calls == 1  # all images encoded together, once
    assert pose.calls == 2  # every crop of every image (and its flip) per iteration
    # Random pose weights make every keypoint a prompt: 6 points for everyone,
    # and at most 12 people (4 per image) fit one decoder call.
    assert decode.calls == 2


def test_ground_truth_detector_gets_each_images_name(tiny_weights, coco_images):
    cfg = tiny_config(tiny_weights)
    cfg["detector"] = dict(type="GroundTruthDetector", ann_file=str(COCO_ANN), min_area=32 * 32)
    cfg["segmenter"] = dict(type="SkeletonSegmenter", score_thr=0.0)  # cheap: the boxes are the point
    cfg["loop"]["num_iters"] = 1
    loop = BMP.from_config(cfg, device="cpu")
    paths = [COCO_DIR / "000000197388.jpg", *[p for p in coco_images if p.name != "000000197388.jpg"][:1]]
    by_path = loop.predict_batch(paths)
    by_array = loop.predict_batch([load_image(p) for p in paths], names=[str(p) for p in paths])
    for a, b, path in zip(by_path, by_array, paths, strict=True):
        assert_same_people(a, b)
        assert_same_people(a, loop.predict(path))


def test_pose_and_sam_take_many_images_like_one_at_a_time(tiny_loop, coco_images):
    from bmp.models.detectors import GroundTruthDetector

    gt = GroundTruthDetector(str(COCO_ANN), min_area=32 * 32)
    images, people = [], []
    for path in coco_images[:2]:
        gt.select(path.name)
        images.append(load_image(path))
        people.append(gt.detect(images[-1]))
    assert all(len(p) for p in people)
    both = tiny_loop.pose.estimate_batch(images, people)
    alone = [tiny_loop.pose.estimate(i, p) for i, p in zip(images, people, strict=True)]
    for got, want in zip(both, alone, strict=True):
        np.testing.assert_allclose(got.keypoints, want.keypoints, atol=1e-3)
        np.testing.assert_allclose(got.keypoint_scores, want.keypoint_scores, atol=1e-4)
    seg = tiny_loop.segmenter
    seg.set_images(images)
    together = [p.to_host() for p in seg.segment_batch(alone, [None, None])]
    for image, posed, got in zip(images, alone, together, strict=True):
        seg.set_image(image)
        assert_same_people(got, seg.segment(posed).to_host())


def test_per_image_models_serve_the_batch(tiny_weights, coco_images):
    """Models with only the per-image methods (here the skeleton segmenter and
    YOLO detector keypoints) run the batched loop too."""
    cfg = dict(
        detector=dict(type="UltralyticsDetector", checkpoint="yolo11n-pose"),
        pose=dict(type="DetectorKeypoints"),
        segmenter=dict(type="SkeletonSegmenter"),
        loop=dict(num_iters=2),
    )
    loop = BMP.from_config(cfg, device="cpu", weights_dirs=[MODELS_DIR])
    images = [load_image(p) for p in coco_images[:3]]
    for people, image in zip(loop.predict_batch(images), images, strict=True):
        assert_same_people(people, loop.predict(image))
