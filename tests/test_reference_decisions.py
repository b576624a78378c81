"""The loop's steps decide as the reference implementation does, on small
hand-built cases: detection filtering (``bboxmaskpose/api.py``), per-iteration
exclusivity (``sam2_utils._apply_exclusive_masks``) and SAM decoding with each
person's own points (``sam2_utils._process_image_single``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bmp.box_nms import box_nms
from bmp.masks import exclusive_masks


def test_box_nms_uses_whole_pixel_areas():
    """Continuous IoU 0.29 (kept at 0.3); mmpose's +1 widths make it 0.33 (dropped)."""
    boxes = np.array([[0, 0, 10, 10], [5.5, 0, 15.5, 10]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    continuous = 45 / (200 - 45)
    assert continuous < 0.3
    assert box_nms(boxes, scores, 0.3).tolist() == [0]
    assert box_nms(boxes, scores, 0.34).tolist() == [0, 1]


def test_box_nms_keeps_best_first_and_equal_scores_in_input_order():
    boxes = np.array([[0, 0, 10, 10], [100, 0, 110, 10], [200, 0, 210, 10]], np.float32)
    assert box_nms(boxes, np.array([0.5, 0.9, 0.5], np.float32), 0.3).tolist() == [1, 0, 2]
    assert box_nms(np.zeros((0, 4)), np.zeros(0), 0.3).tolist() == []


def _masks(*rects, size=(20, 20)):
    out = np.zeros((len(rects), *size), bool)
    for m, (y0, y1, x0, x1) in zip(out, rects, strict=True):
        m[y0:y1, x0:x1] = True
    return out


def test_per_iteration_rule_new_masks_lose_to_old_and_new_old_ones_never_lose():
    old, strong, weak = (0, 10, 0, 10), (5, 15, 5, 15), (0, 20, 8, 12)
    masks = _masks(old, strong, weak)
    scores = np.array([0.9, 0.95, 0.5])
    iteration = np.array([1, 2, 2])
    out = exclusive_masks(masks, scores, iteration, fixed=iteration == 1)
    np.testing.assert_array_equal(out[0], masks[0])  # the earlier mask keeps every pixel
    np.testing.assert_array_equal(out[1], masks[1])  # the best new mask loses nothing
    np.testing.assert_array_equal(out[2], masks[2] & ~masks[0] & ~masks[1])  # the weak one loses to both
    # Left over: pixels the strong new mask won from the old one, still claimed by both.
    both = out[0] & out[1]
    assert both.sum() == 25
    final = exclusive_masks(out, scores, iteration)
    assert not (final.sum(0) > 1).any()
    np.testing.assert_array_equal(final[0], out[0] & ~both)  # only those pixels move
    np.testing.assert_array_equal(final[1], out[1])


def test_ties_go_to_the_newer_mask_then_to_the_earlier_listed_one():
    masks = _masks((0, 10, 0, 10), (0, 10, 0, 10), (0, 10, 0, 10))
    out = exclusive_masks(masks, np.array([0.7, 0.7, 0.7]), np.array([1, 2, 2]))
    np.testing.assert_array_equal(out[1], masks[1])
    assert not out[0].any() and not out[2].any()
    out = exclusive_masks(masks, np.array([0.7, 0.7, 0.7]), np.array([2, 2, 1]))
    np.testing.assert_array_equal(out[0], masks[0])  # same iteration: the earlier-listed one


def test_loop_applies_the_per_iteration_rule_then_the_output_pass():
    from bmp.config import LoopConfig
    from bmp.loop import BMP, StageTimes
    from bmp.structures import Instances

    masks = _masks((0, 10, 0, 10), (5, 15, 5, 15))
    people = Instances((20, 20), boxes=np.zeros((2, 4), np.float32), masks=masks,
                       mask_scores=np.array([0.6, 0.9], np.float32), iteration=np.array([1, 2], np.int32))
    loop = BMP.__new__(BMP)
    loop.loop, loop.times = LoopConfig(), StageTimes()
    step = loop.make_exclusive(people, fixed=people.iteration != 2)
    np.testing.assert_array_equal(step.masks, masks)  # the newer, better mask wins and the old keeps
    out = loop.make_exclusive(step)
    np.testing.assert_array_equal(out.masks[0], masks[0] & ~masks[1])


@pytest.fixture(scope="module")
def sam_tiny(tiny_weights, coco_images):
    from bmp.images import load_image
    from bmp.models.segmenters import SAM2Segmenter
    from tests.tiny_models import SAM21_T

    seg = SAM2Segmenter(config=SAM21_T, checkpoint=str(tiny_weights / "sam21_hiera_t_random.pt"),
                        prompts=dict(method="max_spread", num_points=6, percentile=0.0))
    image = load_image(coco_images[0])
    seg.set_image(image)
    return seg, image


def test_batched_decode_equals_per_person_predict_for_every_point_count(sam_tiny):
    """A 2-point, a 6-point and a 0-point person decoded in one segment() call
    give the masks that per-person ``SAM2ImagePredictor.predict`` calls give
    with exactly their points (Hiera-T, random weights)."""
    from bmp.structures import Instances

    seg, image = sam_tiny
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    kpts = np.stack([rng.uniform([40, 40], [w - 40, h - 40], (17, 2)) for _ in range(3)]).astype(np.float32)
    scores = np.zeros((3, 17), np.float32)
    scores[0, [5, 11]] = 0.9  # 2 points
    scores[1, 5:] = 0.9  # 6 points
    people = Instances((h, w), boxes=np.tile([0, 0, w, h], (3, 1)).astype(np.float32), keypoints=kpts,
                       keypoint_scores=scores, visibility=scores.copy())
    out = seg.segment(people)
    labels = out.prompt_labels
    assert (labels == 1).sum(1).tolist() == [2, 6, 0]
    for i in range(3):
        pts = out.prompts[i][labels[i] == 1]
        masks, iou, _ = seg.predictor.predict(point_coords=pts, point_labels=np.ones(len(pts)),
                                              multimask_output=False)
        got = out.masks[i].cpu().numpy() if isinstance(out.masks, torch.Tensor) else out.masks[i]
        np.testing.assert_array_equal(got, masks[0].astype(bool))
        assert abs(out.mask_scores[i] - iou[0]) < 1e-5
    # Padding the 2-point person to 6 with not-a-point tokens changes SAM's answer.
    pts = out.prompts[0][:6]
    lab = np.where(labels[0][:6] == 1, 1, -1)
    _, _, padded = seg.predictor.predict(point_coords=pts, point_labels=lab, multimask_output=False)
    _, _, own = seg.predictor.predict(point_coords=pts[lab == 1], point_labels=np.ones(2),
                                      multimask_output=False)
    assert not np.allclose(padded, own)


def test_published_configs_carry_the_reference_thresholds():
    """bmp_D3: confidence_thr = visibility_thr = 0.3, MaxSpread-6, OKS-NMS 0.8
    counting keypoints above 0.3; bmp_v2: MaxVis-3 at 0.5/0.5 and pose-NMS
    keypoints above the prompting confidence_thr 0.5; both: detections > 0.3,
    box NMS 0.3, 2 iterations, exclusive masks, no box or negative prompts."""
    from bmp.config import load_config
    from bmp.prompts import PromptConfig

    def values(name):
        cfg = load_config(f"configs/{name}")
        return PromptConfig(**cfg.segmenter.prompts), cfg.loop

    for name in ("bmp_rtmdet_vitpose_sam2.py", "bmp_maskpose_sam2.py", "bmp_d3_pmpose.py"):
        prompts, loop = values(name)
        assert (prompts.method, prompts.num_points, prompts.score_thr, prompts.visibility_thr) == (
            "max_spread", 6, 0.3, 0.3)
        assert (prompts.percentile, prompts.confidence, prompts.negatives, prompts.use_box) == (
            80.0, "visibility", None, False)
        assert (loop.oks_nms_thr, loop.oks_kpt_thr) == (0.8, 0.3)
    prompts, loop = values("bmp_pmpose_sampose2seg.py")
    assert (prompts.method, prompts.num_points, prompts.score_thr, prompts.visibility_thr) == (
        "max_vis", 3, 0.5, 0.5)
    assert (loop.oks_nms_thr, loop.oks_kpt_thr) == (0.8, 0.5)
    for name in ("bmp_rtmdet_vitpose_sam2.py", "bmp_maskpose_sam2.py", "bmp_d3_pmpose.py",
                 "bmp_pmpose_sampose2seg.py"):
        _, loop = values(name)
        assert (loop.num_iters, loop.det_score_thr, loop.det_nms_iou) == (2, 0.3, 0.3)
        assert loop.exclusive_masks is True
        assert loop.get("oks_nms_prefer", "confident") == "confident"
        assert loop.get("redetected_iou") is None  # every detection is posed


def test_d3_pmpose_config_is_v1_with_pmpose_b_at_alpha_025():
    """configs/bmp_d3_pmpose.py is the reference's bmp_D3.yaml as it is today:
    BMP v1 (configs/bmp_maskpose_sam2.py: MaskPose-B 1.0.0 at alpha 0.2) with
    PMPose-b-1.0.0 at alpha 0.25 as the pose model, nothing else changed."""
    from mmengine.config import Config

    from bmp.config import load_config
    from bmp.weights import CHECKPOINTS

    v1, d3 = load_config("configs/bmp_maskpose_sam2.py"), load_config("configs/bmp_d3_pmpose.py")
    assert (v1.pose.checkpoint, v1.pose.mask_alpha) == ("maskpose-b-1.0.0", 0.2)
    assert (d3.pose.config, d3.pose.checkpoint, d3.pose.mask_alpha) == (
        "configs/pose/pmpose-b.py", "pmpose-b", 0.25)
    assert CHECKPOINTS["pmpose-b"].filename == "PMPose-b-1.0.0.pth"
    for part in ("detector", "segmenter", "loop"):
        assert d3[part] == v1[part], part
    pipeline = Config.fromfile(d3.pose.config).test_dataloader.dataset.pipeline
    background = next(t for t in pipeline if t["type"] == "MaskBackground")
    assert background["alpha"] == d3.pose.mask_alpha
