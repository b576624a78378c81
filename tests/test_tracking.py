"""The tracker on synthetic people: matching, motion, gaps, births, deaths, replay."""

from __future__ import annotations

import numpy as np
import pytest

from bmp.config import ConfigError
from bmp.structures import Instances
from bmp.video.tracking import Tracker, TrackerConfig, hungarian

SIZE = (240, 320)  # (H, W)
# A standing person's keypoints relative to the box's top-left, for a 40 x 100 box.
BODY = np.array([
    [20, 8], [17, 6], [23, 6], [14, 8], [26, 8], [10, 25], [30, 25], [6, 45], [34, 45],
    [5, 60], [35, 60], [13, 60], [27, 60], [13, 80], [27, 80], [13, 98], [27, 98],
], np.float32)


def people_at(corners: list[tuple[float, float]], scores: list[float] | None = None) -> Instances:
    """People with 40 x 100 boxes whose top-left corners are ``corners``,
    confident poses and box-shaped masks."""
    n = len(corners)
    boxes = np.array([[x, y, x + 40, y + 100] for x, y in corners], np.float32).reshape(n, 4)
    masks = np.zeros((n, *SIZE), bool)
    for i, (x, y) in enumerate(corners):
        x0, y0 = int(max(x, 0)), int(max(y, 0))
        masks[i, y0:int(y + 100), x0:int(x + 40)] = True
    return Instances(
        SIZE, boxes=boxes,
        scores=np.array(scores if scores is not None else [0.9] * n, np.float32),
        keypoints=(BODY[None] + boxes[:, None, :2]).astype(np.float32),
        keypoint_scores=np.full((n, 17), 0.9, np.float32), masks=masks,
    )


def test_hungarian_takes_the_best_one_to_one_pairs_above_the_threshold():
    sim = np.array([[0.9, 0.8], [0.85, 0.1], [0.05, 0.1]])
    # Greedy would give row 0 col 0 and leave row 1 unmatched; the optimum pairs both.
    assert sorted(hungarian(sim, 0.2)) == [(0, 1), (1, 0)]
    assert hungarian(np.zeros((0, 3)), 0.2) == []
    assert hungarian(np.array([[0.1]]), 0.2) == []


def test_people_walking_past_each_other_keep_their_ids():
    tracker = Tracker()
    for t in range(9):  # 12 px/frame towards each other: they overlap, then cross at t = 6.7
        a, b = (40 + 12 * t, 60), (200 - 12 * t, 70)
        out = tracker.update(people_at([a, b] if t % 2 else [b, a]))  # the loop's order varies
        by_x = dict(zip(out.boxes[:, 0].round().tolist(), out.track_id.tolist(), strict=True))
        if t == 0:
            walker_a, walker_b = by_x[40.0], by_x[200.0]
        assert by_x[float(a[0])] == walker_a and by_x[float(b[0])] == walker_b, f"frame {t}: {by_x}"
    assert {walker_a, walker_b} == {1, 2}
    assert tracker.next_id == 3


def test_fast_mover_is_followed_through_its_velocity():
    tracker = Tracker()
    xs = [0, 10, 40, 70, 100, 130, 160]  # speeds up to 30 px/frame on a 40 px wide person
    ids = []
    for t, x in enumerate(xs):
        if t >= 3:  # without the motion prediction this step would be below match_thr
            still = tracker._cue_similarity(list(tracker.tracks.values()), people_at([(x, 50)]),
                                            people_at([(x, 50)]).masks[:, ::4, ::4], np.zeros((1, 2)), None)
            assert still[0, 0] < tracker.config.match_thr
        ids.append(int(tracker.update(people_at([(x, 50)])).track_id[0]))
    assert ids == [1] * len(xs)
    assert tracker.tracks[1].velocity[0] == pytest.approx(30, abs=2)


def test_lost_track_is_reidentified_after_a_short_gap_and_dies_after_max_age():
    tracker = Tracker(TrackerConfig(max_age=3))
    assert tracker.update(people_at([(100, 50)])).track_id.tolist() == [1]
    for _ in range(3):  # occluded for three frames: kept for re-identification
        tracker.update(people_at([]))
    assert 1 in tracker.tracks
    assert tracker.update(people_at([(104, 52)])).track_id.tolist() == [1]

    for _ in range(4):  # four frames unseen > max_age: the track dies
        tracker.update(people_at([]))
    assert tracker.tracks == {}
    assert tracker.update(people_at([(104, 52)])).track_id.tolist() == [2]  # ids are never reused


def test_weak_people_stay_untracked_and_a_new_person_gets_a_new_id():
    tracker = Tracker(TrackerConfig(birth_score=0.5))
    out = tracker.update(people_at([(20, 20), (200, 100)], scores=[0.9, 0.2]))
    assert out.track_id.tolist() == [1, -1]
    out = tracker.update(people_at([(22, 20), (200, 100), (120, 10)], scores=[0.9, 0.2, 0.8]))
    assert out.track_id.tolist() == [1, -1, 2]


def test_people_without_masks_or_poses_are_matched_by_their_boxes():
    tracker = Tracker()
    bare = people_at([(50, 50)])
    bare = bare.replace(masks=np.zeros_like(bare.masks), keypoint_scores=np.zeros_like(bare.keypoint_scores))
    assert tracker.update(bare).track_id.tolist() == [1]
    moved = bare.replace(boxes=bare.boxes + 5)
    assert tracker.update(moved).track_id.tolist() == [1]


def test_replaying_committed_ids_rebuilds_the_same_state():
    frames = [people_at([(10 + 8 * t, 40), (150, 30 + 5 * t)]) for t in range(4)]
    live = Tracker()
    logged = [live.update(f).track_id for f in frames]
    replay = Tracker()
    for f, ids in zip(frames, logged, strict=True):
        replay.commit(f, ids)
    assert replay.step == live.step and replay.next_id == live.next_id
    assert replay.tracks.keys() == live.tracks.keys()
    for tid, track in live.tracks.items():
        np.testing.assert_array_equal(replay.tracks[tid].velocity, track.velocity)
        np.testing.assert_array_equal(replay.tracks[tid].mask, track.mask)
    nxt = people_at([(42, 40), (150, 50)])
    np.testing.assert_array_equal(live.assign(nxt), replay.assign(nxt))


def test_predicted_tracks_move_with_their_velocity():
    tracker = Tracker()
    for t in range(3):
        tracker.update(people_at([(20 + 10 * t, 40)]))
    prior = tracker.predicted()
    np.testing.assert_allclose(prior.boxes[0], [50, 40, 90, 140], atol=1e-3)  # 40 + 10 px/frame
    assert prior.track_id.tolist() == [1]
    tracker.update(people_at([]))
    assert tracker.predicted(max_gap=1) is None and len(tracker.predicted(max_gap=2)) == 1


def test_tracker_config_rejects_unknown_keys_and_bad_weights():
    with pytest.raises(ConfigError, match="unknown key"):
        TrackerConfig.from_dict({"iou_thr": 0.5})
    with pytest.raises(ConfigError, match="weights"):
        TrackerConfig.from_dict({"mask_weight": -1})
