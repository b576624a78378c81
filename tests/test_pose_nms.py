import numpy as np

from bmp.pose_nms import oks_matrix, pose_nms
from bmp.structures import Instances


def people(kpts, scores, boxes, iteration=None):
    n = len(kpts)
    return Instances(
        (400, 400), boxes=np.asarray(boxes, np.float32), keypoints=np.asarray(kpts, np.float32),
        keypoint_scores=np.asarray(scores, np.float32),
        scores=np.asarray(scores, np.float32).mean(1),
        iteration=np.asarray(iteration if iteration is not None else [1] * n, np.int32),
    )


def pose(offset: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 100, (17, 2)) + offset


def test_identical_pose_has_oks_one_and_far_pose_zero():
    kpts = np.stack([pose(0), pose(0), pose(250)])
    oks = oks_matrix(kpts, np.ones((3, 17)), np.full(3, 100.0 * 100.0))
    assert np.allclose(np.diag(oks), 1.0)
    assert oks[0, 1] == 1.0 and oks[0, 2] < 1e-6


def test_oks_counts_only_confident_keypoints_of_the_reference():
    a, b = pose(0), pose(0)
    b[5:] += 80  # the two poses agree only on the first five keypoints
    scores = np.zeros((2, 17))
    scores[:, :5] = 0.9
    oks = oks_matrix(np.stack([a, b]), scores, np.full(2, 1e4), score_thr=0.3)
    assert oks[0, 1] == 1.0
    assert oks_matrix(np.stack([a, b]), np.zeros((2, 17)), np.full(2, 1e4))[0, 1] == 0.0


def test_duplicate_from_later_iteration_is_removed_and_distinct_people_kept():
    box = [[0, 0, 100, 100]] * 3
    inst = people([pose(0), pose(200), pose(0.5)], np.full((3, 17), 0.9), box, [1, 1, 2])
    keep = pose_nms(inst, oks_thr=0.8)
    assert keep.tolist() == [0, 1]


def test_member_with_fewer_confident_keypoints_is_dropped():
    scores = np.full((2, 17), 0.9)
    scores[0, :6] = 0.1  # the first has 11 confident keypoints, the second 17
    inst = people([pose(0), pose(0)], scores, [[0, 0, 100, 100]] * 2)
    assert pose_nms(inst, 0.8).tolist() == [1]


def test_empty_input():
    assert len(pose_nms(Instances((10, 10)))) == 0


def test_prefer_earlier_keeps_the_first_iterations_duplicate():
    scores = np.full((2, 17), 0.9)
    scores[0, :2] = 0.1  # iteration 1's copy has fewer confident keypoints
    inst = people([pose(0), pose(0)], scores, [[0, 0, 100, 100]] * 2, [1, 2])
    assert pose_nms(inst, 0.8).tolist() == [1]
    assert pose_nms(inst, 0.8, prefer="earlier").tolist() == [0]
