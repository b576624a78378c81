import numpy as np
import pytest

from bmp.prompts import (
    PromptConfig,
    max_spread_indices,
    max_vis_indices,
    select_prompts,
)


def grid_pose() -> np.ndarray:
    return np.stack([np.arange(17) * 10.0, np.zeros(17)], 1)


def test_max_spread_starts_at_most_confident_and_spreads():
    kpts = grid_pose()
    scores = np.full(17, 0.9)
    scores[8] = 1.0
    idx = max_spread_indices(kpts, scores, 3, score_thr=0.3, percentile=0.0)
    assert idx[0] == 8
    # Eyes collapse into the nose (equal scores: lowest index), so the ends are 0 and 16.
    assert set(idx[1:].tolist()) == {0, 16}


def test_max_spread_collapses_face_to_most_confident():
    kpts = grid_pose()
    scores = np.full(17, 0.9)
    scores[1] = 0.95  # left eye is the best face point
    idx = max_spread_indices(kpts, scores, 17, score_thr=0.3, percentile=0.0)
    assert 1 in idx and 0 not in idx and 2 not in idx
    assert len(idx) == 15


def test_max_spread_drops_low_scores_and_returns_fewer_than_n():
    scores = np.zeros(17)
    scores[[5, 9]] = 0.8
    idx = max_spread_indices(grid_pose(), scores, 6, score_thr=0.3)
    assert sorted(idx.tolist()) == [5, 9]
    assert len(max_spread_indices(grid_pose(), np.zeros(17), 6)) == 0


def test_max_spread_percentile_gate_prefers_confident_candidates():
    scores = np.full(17, 0.31)
    scores[8] = 1.0
    scores[[7, 9, 10]] = 0.99  # near 8; the far ends 0 and 16 are barely confident
    idx = max_spread_indices(grid_pose(), scores, 2, score_thr=0.3, percentile=80.0)
    assert idx.tolist() == [8, 10]  # the farthest candidate that passes the gate
    ungated = max_spread_indices(grid_pose(), scores, 2, score_thr=0.3, percentile=0.0)
    assert ungated.tolist() == [8, 0]


def test_max_spread_ties_resolve_to_lower_index():
    idx = max_spread_indices(np.zeros((17, 2)), np.full(17, 0.5), 2, percentile=0.0)
    assert idx[0] == 0


def test_max_vis_top_n_above_threshold():
    vis = np.linspace(0, 1, 17)
    assert max_vis_indices(vis, 3, 0.5).tolist() == [16, 15, 14]
    assert len(max_vis_indices(np.zeros(17), 3, 0.5)) == 0
    vis = np.zeros(17)
    vis[[4, 2]] = 0.7
    assert max_vis_indices(vis, 3, 0.5).tolist() == [2, 4]  # tie: lower index first


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


def reference_max_spread(kpts, scores, num_points, score_thr, percentile):
    """The one-person greedy loop, written directly from BMP_NOTES."""
    kpts = np.asarray(kpts, np.float64)
    scores = np.asarray(scores, np.float64).copy()
    best = int(np.argmax(scores[:3]))
    scores[[i for i in range(3) if i != best]] = -np.inf
    candidates = np.flatnonzero(scores >= score_thr)
    if len(candidates) == 0:
        return []
    chosen = [int(candidates[np.argmax(scores[candidates])])]
    remaining = [int(c) for c in candidates if c != chosen[0]]
    while remaining and len(chosen) < num_points:
        rem = np.asarray(remaining)
        gated = rem[scores[rem] >= np.percentile(scores[rem], percentile)]
        dist = np.linalg.norm(kpts[gated][:, None] - kpts[chosen][None], axis=-1).min(1)
        chosen.append(int(gated[np.argmax(dist)]))
        remaining.remove(chosen[-1])
    return chosen


def reference_negatives(center, other_kpts, other_scores, num, thr):
    pts = np.asarray(other_kpts, np.float32).reshape(-1, 2)
    pts = pts[np.asarray(other_scores).reshape(-1) >= thr]
    order = np.argsort(np.linalg.norm(pts - np.asarray(center, np.float32), axis=1), kind="stable")
    return pts[order[:num]]


@pytest.mark.parametrize("seed", range(4))
def test_batched_selection_equals_the_per_person_rules(seed):
    """All people in one vectorised pass choose exactly what the per-person
    greedy rules choose: same indices, same order, same ties (coarse grids and
    repeated scores make ties and percentile boundaries common)."""
    rng = np.random.default_rng(seed)
    n = 40
    kpts = rng.integers(0, 6, (n, 17, 2)).astype(np.float32) * 10
    scores = rng.choice([0.0, 0.2, 0.3, 0.5, 0.5, 0.7, 0.9, 1.0], (n, 17))
    vis = rng.random((n, 17))
    boxes = np.concatenate([kpts.min(1), kpts.max(1)], 1)
    earlier = (kpts[:5] + 3, scores[:5])
    for percentile in (0.0, 50.0, 80.0, 100.0):
        cfg = PromptConfig("max_spread", 6, score_thr=0.3, percentile=percentile, negatives="others",
                           num_negative=2)
        points, labels = select_prompts(kpts, scores, vis, cfg, boxes=boxes, others=earlier)
        all_kpts, all_scores = np.concatenate([kpts, earlier[0]]), np.concatenate([scores, earlier[1]])
        for i in range(n):
            want = reference_max_spread(kpts[i], scores[i], 6, 0.3, percentile)
            assert (labels[i, :6] == 1).sum() == len(want)
            np.testing.assert_array_equal(points[i, : len(want)], kpts[i, want])
            rest = np.arange(len(all_kpts)) != i
            neg = reference_negatives((boxes[i, :2] + boxes[i, 2:]) / 2, all_kpts[rest], all_scores[rest],
                                      2, 0.3)
            assert (labels[i, 6:] == 0).sum() == len(neg)
            np.testing.assert_array_equal(points[i, 6 : 6 + len(neg)], neg)
