"""Prompt selection follows the reference implementation's rules
(``bboxmaskpose/sam2_utils.py``: ``_pose2seg`` gates the person and
``_select_keypoints`` chooses), ties and thresholds included."""

import numpy as np
import pytest

from bmp.prompts import (
    PromptConfig,
    max_spread_batch,
    max_spread_indices,
    max_vis_batch,
    max_vis_indices,
    row_percentile,
    select_prompts,
)


def grid_pose() -> np.ndarray:
    return np.stack([np.arange(17) * 10.0, np.zeros(17)], 1).astype(np.float32)


def spread(kpts, scores, n, vis=None, **kw):
    return max_spread_indices(kpts, scores, n, confidence=vis, **kw).tolist()


def test_max_spread_gate_counts_chosen_points_as_minus_one():
    """The 80th-percentile gate is over all candidates with the chosen ones at
    -1, so it loosens as points are picked: the 3rd point here is keypoint 6,
    which a gate over the remaining scores only would exclude (giving 5)."""
    kpts = np.zeros((17, 2), np.float32)
    kpts[5:11, 0] = [50, 90, 70, 30, 0, 10]
    scores = np.zeros(17, np.float32)
    scores[5:11] = [0.88, 0.81, 0.67, 0.96, 0.93, 0.75]
    vis = np.where(scores > 0, 0.9, 0.0).astype(np.float32)
    # Score order 8, 9, 5, 6, 10, 7. Step 2: available [-1 .93 .88 .81 .75 .67],
    # 80th percentile .88: 9 (30 px away) beats 5 (20 px). Step 3: available
    # [-1 -1 .88 .81 .75 .67], percentile .81: 6 (60 px) beats 5 (20 px). Over
    # the remaining [.88 .81 .75 .67] the percentile would be .838: only 5.
    assert spread(kpts, scores, 3, vis) == [8, 9, 6]
    assert np.percentile(np.float32([0.88, 0.81, 0.75, 0.67]), 80) > 0.81


def test_max_spread_face_point_is_chosen_by_visibility_not_score():
    kpts = grid_pose()
    scores = np.full(17, 0.9, np.float32)
    scores[0] = 1.0  # the nose is the most confident...
    vis = np.full(17, 0.9, np.float32)
    vis[2] = 0.95  # ...but the right eye is the most visible face point
    idx = spread(kpts, scores, 17, vis, percentile=0.0)
    assert 2 in idx and 0 not in idx and 1 not in idx and len(idx) == 15


def test_max_spread_keeps_all_face_points_when_the_best_is_not_visible_enough():
    scores = np.full(17, 0.9, np.float32)
    vis = np.full(17, 0.9, np.float32)
    vis[:3] = 0.2  # below visibility_thr: no collapse, and none is a candidate
    assert not {0, 1, 2} & set(spread(grid_pose(), scores, 17, vis))


def test_max_spread_candidates_need_visibility_only_once_the_person_is_prompted():
    """The gate is score > 0.3 and visibility > 0.3 (strict) on some keypoint;
    candidates are then visibility >= 0.3 whatever their score."""
    scores = np.zeros(17, np.float32)
    vis = np.zeros(17, np.float32)
    scores[5], vis[5] = 0.9, 0.9
    scores[12], vis[12] = 0.1, 0.3  # weak score, visibility exactly at the threshold
    assert sorted(spread(grid_pose(), scores, 6, vis)) == [5, 12]
    scores[5] = 0.3  # no keypoint passes the strict gate: nobody is prompted
    assert spread(grid_pose(), scores, 6, vis) == []


def test_max_spread_ties_go_to_the_higher_keypoint_index():
    scores = np.full(17, 0.5, np.float32)
    assert spread(np.zeros((17, 2), np.float32), scores, 2)[0] == 16
    kpts = grid_pose()
    kpts[[5, 6]] = kpts[[4, 4]] + [[0, 30], [0, -30]]  # 5 and 6 equally far from everything
    scores = np.full(17, 0.5, np.float32)
    scores[4] = 1.0
    vis = np.full(17, 0.9, np.float32)
    first_two = spread(kpts, scores, 2, vis, percentile=0.0)
    assert first_two[0] == 4


def test_max_vis_needs_a_keypoint_with_both_score_and_visibility_above_the_gate():
    vis = np.full(17, 0.9, np.float32)
    low = np.full(17, 0.4, np.float32)  # very visible, but no score above 0.5
    assert max_vis_indices(vis, 3, 0.5, scores=low, score_thr=0.5).tolist() == []
    low[7] = 0.6
    assert max_vis_indices(vis, 3, 0.5, scores=low, score_thr=0.5).tolist() == [16, 15, 14]


def test_max_vis_takes_the_most_visible_ties_to_the_higher_index():
    vis = np.zeros(17, np.float32)
    vis[[4, 2, 9]] = [0.7, 0.7, 0.5]  # 9 exactly at the threshold counts
    assert max_vis_indices(vis, 3, 0.5).tolist() == [4, 2, 9]
    assert len(max_vis_indices(np.zeros(17), 3, 0.5)) == 0


def test_confidence_channel_is_configurable():
    """Table 6 of SAM-pose2seg: rank by visibility, presence, expected OKS or score."""
    from bmp.prompts import confidence_channel
    from bmp.structures import Instances

    n = 2
    rng = np.random.default_rng(0)
    people = Instances((100, 100), boxes=np.zeros((n, 4), np.float32),
                       keypoints=rng.random((n, 17, 2)).astype(np.float32),
                       keypoint_scores=rng.random((n, 17)).astype(np.float32),
                       visibility=rng.random((n, 17)).astype(np.float32),
                       presence=rng.random((n, 17)).astype(np.float32),
                       kpt_oks=rng.random((n, 17)).astype(np.float32))
    for name, field in [("visibility", "visibility"), ("presence", "presence"), ("kpt_oks", "kpt_oks"),
                        ("score", "keypoint_scores")]:
        cfg = PromptConfig("max_vis", 3, score_thr=0.0, visibility_thr=0.0, confidence=name)
        assert confidence_channel(people, cfg) is getattr(people, field)
        points, _ = select_prompts(people.keypoints, people.keypoint_scores,
                                   confidence_channel(people, cfg), cfg)
        top = np.argsort(getattr(people, field), axis=1, kind="stable")[:, ::-1][:, :3]
        np.testing.assert_array_equal(points, np.take_along_axis(people.keypoints, top[..., None], 1))
    with pytest.raises(ValueError, match="confidence"):
        PromptConfig(confidence="heat")


def test_row_percentile_is_numpy_percentile_in_float32():
    rng = np.random.default_rng(0)
    values = rng.choice(np.float32([-1, 0.31, 0.5, 0.5, 0.7, 0.9, 1.0]), (2000, 17)).astype(np.float32)
    values += rng.random((2000, 17)).astype(np.float32) * (rng.random((2000, 1)) < 0.5)
    where = rng.random((2000, 17)) < 0.7
    got = row_percentile(values, where, 80.0)
    for i in range(len(values)):
        if where[i].any():
            want = np.percentile(values[i][where[i]], 80)
            assert got[i] == want and got.dtype == want.dtype, i


def test_select_prompts_pads_with_padding_label():
    kpts = np.stack([grid_pose(), grid_pose()])
    scores = np.zeros((2, 17))
    scores[0, [5, 9, 11]] = 0.9
    points, labels = select_prompts(kpts, scores, scores, PromptConfig("max_spread", 6))
    assert points.shape == (2, 6, 2) and labels.shape == (2, 6)
    assert (labels[0] == 1).sum() == 3 and (labels[0, 3:] == -1).all()
    assert (labels[1] == -1).all()


def test_gt_mode_drops_invisible_keypoints():
    v = np.zeros((1, 17))
    v[0, [6, 12]] = 2
    v[0, 13] = 1
    points, labels = select_prompts(grid_pose()[None], v, v, PromptConfig("gt", 6))
    chosen = points[0][labels[0] == 1][:, 0] / 10
    assert sorted(chosen.tolist()) == [6, 12, 13]


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="max_spread"):
        PromptConfig("nearest")


def test_negatives_from_other_people_are_their_closest_confident_keypoints():
    from bmp.prompts import closest_other_keypoints

    others = np.stack([grid_pose() + [0, 50], grid_pose() + [0, 5]])
    scores = np.ones((2, 17))
    scores[1, 3] = 0.0  # not confident: never a negative
    neg = closest_other_keypoints(np.array([30.0, 0.0]), others, scores, 2)
    assert neg.tolist() == [[20.0, 5.0], [40.0, 5.0]]  # equal distance: lower index first


def test_select_prompts_appends_negatives_after_positives():
    kpts = np.stack([grid_pose(), grid_pose() + [0, 30]])
    scores = np.full((2, 17), 0.9)
    boxes = np.array([[0, 0, 160, 10], [0, 25, 160, 40]], np.float32)
    cfg = PromptConfig("max_spread", 2, negatives="others", num_negative=1)
    points, labels = select_prompts(kpts, scores, scores, cfg, boxes=boxes)
    assert points.shape == (2, 3, 2) and labels[:, :2].tolist() == [[1, 1], [1, 1]]
    assert labels[:, 2].tolist() == [0, 0]
    assert points[0, 2, 1] == 30  # person 0's negative lies on person 1
    vis = np.full((2, 17), 0.9)
    vis[0, 7] = 0.1
    cfg = PromptConfig("max_vis", 2, negatives="least_visible", num_negative=1)
    points, labels = select_prompts(kpts, scores, vis, cfg)
    assert labels[0].tolist() == [1, 1, 0] and points[0, 2].tolist() == [70, 0]
    assert labels[1].tolist() == [1, 1, -1]  # nobody below the visibility threshold


def reference_selection(kpts, scores, vis, method, num, conf_thr, vis_thr, percentile=80.0):
    """The reference's per-person selection, restated here as plain loops
    (``_pose2seg`` + ``_select_keypoints``; ``np.argsort`` of these small
    arrays is stable, so reversing it puts the higher index first on ties)."""
    kpts, scores, vis = (np.asarray(a, np.float32) for a in (kpts, scores, vis))
    if not ((scores > conf_thr) & (vis > vis_thr)).any():
        return []
    idx = np.arange(len(scores))
    if method == "max_spread":
        face = int(np.argmax(vis[:3]))
        if vis[face] >= vis_thr:
            idx = np.concatenate([[face], np.arange(3, len(scores))])
    idx = idx[vis[idx] >= vis_thr]
    if len(idx) == 0:
        return []
    if method == "max_vis":
        return idx[np.argsort(vis[idx], kind="stable")[::-1]][:num].tolist()
    idx = idx[np.argsort(scores[idx], kind="stable")[::-1]]
    pts, avail = kpts[idx], scores[idx].copy()
    dist = np.linalg.norm(pts[:, None] - pts[None], axis=2)
    chosen = [0]
    avail[0] = -1
    for _ in range(len(idx) - 1):
        d = dist[:, chosen].min(1)
        d[avail < np.percentile(avail, percentile)] = -1
        nxt = int(np.argmax(d))
        chosen.append(nxt)
        avail[nxt] = -1
    return idx[chosen][:num].tolist()


def reference_negatives(center, other_kpts, other_scores, num, thr):
    pts = np.asarray(other_kpts, np.float32).reshape(-1, 2)
    pts = pts[np.asarray(other_scores).reshape(-1) >= thr]
    order = np.argsort(np.linalg.norm(pts - np.asarray(center, np.float32), axis=1), kind="stable")
    return pts[order[:num]]


@pytest.mark.parametrize("seed", range(6))
def test_batched_selection_equals_the_per_person_reference_rules(seed):
    """All people in one vectorised pass choose exactly what the per-person
    reference rules choose: same indices, same order, same ties (coarse grids
    and repeated scores make ties and percentile boundaries common)."""
    rng = np.random.default_rng(seed)
    n = 60
    kpts = rng.integers(0, 6, (n, 17, 2)).astype(np.float32) * 10
    if seed % 2:
        kpts += rng.random((n, 17, 2)).astype(np.float32)  # no ties in distance
    levels = np.float32([0.0, 0.2, 0.3, 0.5, 0.5, 0.7, 0.9, 1.0])
    scores = rng.choice(levels, (n, 17))
    vis = rng.choice(levels, (n, 17)) if seed < 3 else rng.random((n, 17)).astype(np.float32)
    for method, num, thr in [("max_spread", 6, 0.3), ("max_vis", 3, 0.5), ("max_spread", 17, 0.5)]:
        for percentile in ((0.0, 50.0, 80.0, 100.0) if method == "max_spread" else (80.0,)):
            if method == "max_spread":
                got = max_spread_batch(kpts, scores, num, confidence=vis, score_thr=thr, visibility_thr=thr,
                                       percentile=percentile)
            else:
                got = max_vis_batch(vis, num, thr, scores, thr)
            for i in range(n):
                want = reference_selection(kpts[i], scores[i], vis[i], method, num, thr, thr, percentile)
                assert got[i][got[i] >= 0].tolist() == want, (method, percentile, i)


def test_negatives_are_appended_after_the_positives_of_every_person():
    rng = np.random.default_rng(1)
    n = 30
    kpts = rng.integers(0, 6, (n, 17, 2)).astype(np.float32) * 10
    scores = rng.choice(np.float32([0.0, 0.3, 0.5, 0.9]), (n, 17))
    boxes = np.concatenate([kpts.min(1), kpts.max(1)], 1)
    earlier = (kpts[:5] + 3, scores[:5])
    cfg = PromptConfig("max_spread", 6, negatives="others", num_negative=2)
    points, labels = select_prompts(kpts, scores, scores, cfg, boxes=boxes, others=earlier)
    all_kpts, all_scores = np.concatenate([kpts, earlier[0]]), np.concatenate([scores, earlier[1]])
    for i in range(n):
        want = reference_selection(kpts[i], scores[i], scores[i], "max_spread", 6, 0.3, 0.3)
        assert (labels[i, :6] == 1).sum() == len(want)
        np.testing.assert_array_equal(points[i, : len(want)], kpts[i, want])
        rest = np.arange(len(all_kpts)) != i
        neg = reference_negatives((boxes[i, :2] + boxes[i, 2:]) / 2, all_kpts[rest], all_scores[rest], 2, 0.3)
        assert (labels[i, 6:] == 0).sum() == len(neg)
        np.testing.assert_array_equal(points[i, 6 : 6 + len(neg)], neg)
