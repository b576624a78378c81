"""Click sampling of SAM-pose2seg training on hand-made masks and poses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bmp.finetune.samplers import (
    MaskRefine,
    Pose,
    Pose1MaskRefine,
    PoseMaskRefine,
    available_keypoints,
    build_sampler,
    error_click,
)

SIZE = 64


def box_mask(x0: int, y0: int, x1: int, y1: int) -> torch.Tensor:
    """(SIZE, SIZE) bool, True on rows y0:y1 and columns x0:x1."""
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def pose_at(points: dict[int, tuple[float, float, float]]) -> Pose:
    """A 17-keypoint pose with only ``{index: (x, y, visibility)}`` available."""
    kpts = np.zeros((17, 2), np.float32)
    vis = np.zeros(17, np.float32)
    for k, (x, y, v) in points.items():
        kpts[k] = (x, y)
        vis[k] = v
    return Pose(kpts, vis)


def inside(mask: torch.Tensor, xy: tuple[float, float]) -> bool:
    return bool(mask[int(xy[1]), int(xy[0])])


GT = box_mask(10, 10, 40, 50)  # the person
PRED = box_mask(20, 10, 50, 50)  # shifted right: FN on x 10..19, FP on x 40..49
FALSE_NEG = GT & ~PRED
FALSE_POS = PRED & ~GT


@pytest.mark.parametrize("sampler", [PoseMaskRefine(), Pose1MaskRefine()])
def test_first_click_is_the_most_visible_keypoint(sampler):
    pose = pose_at({5: (15, 20, 0.7), 11: (30, 40, 0.95), 13: (25, 45, 0.6)})
    click = sampler.first_click(GT, pose, np.random.default_rng(0))
    assert click.keypoint == 11 and click.label == 1
    assert click.xy == (30.0, 40.0)


def test_first_click_ties_go_to_the_higher_keypoint_index():
    # MaxVis's order, the reference's (one selector serves the loop and training).
    pose = pose_at({9: (15, 20, 0.8), 4: (30, 40, 0.8)})
    assert PoseMaskRefine().first_click(GT, pose, np.random.default_rng(0)).keypoint == 9


@pytest.mark.parametrize(
    "pose",
    [
        Pose.empty(),  # no keypoints at all
        pose_at({5: (15, 20, 0.3), 6: (20, 20, 0.49)}),  # all below the visibility threshold
        pose_at({5: (-3, 20, 1.0), 6: (20, SIZE + 5, 1.0), 7: (np.nan, 3, 1.0)}),  # outside / NaN
    ],
)
def test_first_click_falls_back_to_the_gt_mask_without_available_keypoints(pose):
    for seed in range(20):
        click = PoseMaskRefine(visibility_thr=0.5).first_click(GT, pose, np.random.default_rng(seed))
        assert click.keypoint is None and click.label == 1
        assert inside(GT, click.xy)


def test_mask_refine_first_click_is_uniform_in_the_gt_mask():
    clicks = [MaskRefine().first_click(GT, Pose.empty(), np.random.default_rng(s)) for s in range(200)]
    assert all(c.label == 1 and inside(GT, c.xy) for c in clicks)
    xs = np.array([c.xy[0] for c in clicks])
    assert xs.min() < 15 and xs.max() > 35  # spread over the whole box, not one spot


def test_correction_clicks_lie_in_the_error_region_with_the_matching_label():
    labels = []
    for seed in range(300):
        click = error_click(GT, PRED, np.random.default_rng(seed))
        region = FALSE_NEG if click.label == 1 else FALSE_POS
        assert inside(region, click.xy)
        labels.append(click.label)
    # Both error sides have 400 px: about half the clicks each.
    assert 0.35 < np.mean(labels) < 0.65


def test_mask_refine_corrections_come_from_errors_or_sometimes_the_gt():
    sampler = MaskRefine(prob_from_gt=0.0)
    for seed in range(50):
        click = sampler.next_click(GT, PRED, Pose.empty(), set(), np.random.default_rng(seed))
        assert inside(FALSE_NEG | FALSE_POS, click.xy)
    always_gt = MaskRefine(prob_from_gt=1.0)
    for seed in range(50):
        click = always_gt.next_click(GT, PRED, Pose.empty(), set(), np.random.default_rng(seed))
        assert click.label == 1 and inside(GT, click.xy)


def test_perfect_prediction_gets_a_negative_background_click():
    click = error_click(GT, GT.clone(), np.random.default_rng(0))
    assert click.label == 0 and not inside(GT, click.xy)


def test_pose_correction_takes_the_most_visible_unused_keypoint_in_the_false_negatives():
    pose = pose_at({
        0: (12, 15, 1.0),  # in the false negatives, but already clicked
        5: (14, 30, 0.6),  # false negative
        7: (17, 40, 0.8),  # false negative, more visible -> chosen
        9: (30, 30, 1.0),  # correctly predicted: no error there
        11: (45, 30, 1.0),  # false positive region: never a keypoint click
    })
    sampler = PoseMaskRefine(prob_mask_rule=0.0)
    click = sampler.next_click(GT, PRED, pose, {0}, np.random.default_rng(0))
    assert (click.keypoint, click.label, click.xy) == (7, 1, (17.0, 40.0))
    click = sampler.next_click(GT, PRED, pose, {0, 7}, np.random.default_rng(0))
    assert click.keypoint == 5


def test_pose_correction_falls_back_to_the_error_region_when_no_keypoint_is_there():
    pose = pose_at({9: (30, 30, 1.0), 11: (45, 30, 1.0), 3: (15, 20, 0.2)})  # 3: not visible enough
    sampler = PoseMaskRefine(prob_mask_rule=0.0)
    for seed in range(50):
        click = sampler.next_click(GT, PRED, pose, set(), np.random.default_rng(seed))
        assert click.keypoint is None
        assert inside(FALSE_NEG if click.label == 1 else FALSE_POS, click.xy)


def test_pose_correction_mask_rule_probability_skips_keypoints():
    pose = pose_at({7: (17, 40, 1.0)})
    mask_rule = PoseMaskRefine(prob_mask_rule=1.0, prob_from_gt=0.0)
    clicks = [mask_rule.next_click(GT, PRED, pose, set(), np.random.default_rng(s)) for s in range(30)]
    assert all(c.keypoint is None and inside(FALSE_NEG | FALSE_POS, c.xy) for c in clicks)
    mixed = PoseMaskRefine(prob_mask_rule=0.5, prob_from_gt=0.0)
    picks = [mixed.next_click(GT, PRED, pose, set(), np.random.default_rng(s)).keypoint for s in range(200)]
    assert 0.3 < np.mean([p == 7 for p in picks]) < 0.85


def test_pose1_corrections_ignore_the_pose():
    pose = pose_at({7: (17, 40, 1.0)})
    sampler = Pose1MaskRefine(prob_from_gt=0.0)
    clicks = [sampler.next_click(GT, PRED, pose, set(), np.random.default_rng(s)) for s in range(30)]
    assert all(c.keypoint is None for c in clicks)
    assert sampler.first_click(GT, pose, np.random.default_rng(0)).keypoint == 7


def test_available_keypoints_order_and_filters():
    pose = pose_at({1: (5, 5, 0.6), 2: (6, 6, 0.9), 3: (70, 5, 1.0), 4: (7, 7, 0.4)})
    assert available_keypoints(pose, (SIZE, SIZE), 0.5).tolist() == [2, 1]
    assert available_keypoints(pose, (SIZE, SIZE), 0.0).tolist() == [2, 1, 4]


def test_sampler_is_reproducible_from_its_generator():
    a = [MaskRefine().next_click(GT, PRED, Pose.empty(), set(), np.random.default_rng(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


def test_build_sampler_by_name_and_errors():
    assert isinstance(build_sampler("PoseMaskRefine"), PoseMaskRefine)
    assert type(build_sampler("MaskRefine", prob_from_gt=0.2)) is MaskRefine
    with pytest.raises(ValueError, match="MaskRefine"):
        build_sampler("BoxRefine")
    with pytest.raises(ValueError, match="prob_mask_rule"):
        build_sampler("PoseMaskRefine", prob_mask_rule=1.5)
