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
    scores = np.full((3, 17), 0.9)
    scores[2, :2] = 0.1  # the re-detection has fewer confident keypoints
    inst = people([pose(0), pose(200), pose(0.5)], scores, box, [1, 1, 2])
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


# The reference's rules (bboxmaskpose/demo_utils.py pose_nms / compute_oks) --------


def test_equal_confident_counts_drop_the_reference_of_the_best_pair():
    """On equal counts the reference drops i of the highest-OKS pair (i, j);
    oks[i, j] uses i's box area, so the smaller box's pose is the reference
    with the higher OKS and is the one dropped."""
    a = pose(0)
    b = a + 3.0
    scores = np.full((2, 17), 0.9)
    inst = people([a, b], scores, [[0, 0, 200, 200], [0, 0, 100, 100]])
    oks = oks_matrix(inst.keypoints, inst.keypoint_scores, inst.areas)
    assert oks[0, 1] > oks[1, 0] > 0.8  # the bigger box is the more tolerant reference
    assert pose_nms(inst, 0.8).tolist() == [1]
    # Swapping the boxes swaps who is dropped: index order alone does not decide.
    inst = people([a, b], scores, [[0, 0, 100, 100], [0, 0, 200, 200]])
    assert pose_nms(inst, 0.8).tolist() == [0]


def test_exact_oks_tie_drops_the_first_in_row_major_order():
    scores = np.full((2, 17), 0.9)
    inst = people([pose(0), pose(0)], scores, [[0, 0, 100, 100]] * 2)
    assert pose_nms(inst, 0.8).tolist() == [1]  # argmax hits (0, 1) first: i = 0 is dropped


def test_pose_without_confident_keypoint_is_removed_when_it_lies_in_anothers_enlarged_box():
    """COCO's unlabelled-reference test: OKS 1 when all of the other pose's
    keypoints lie inside the reference box enlarged by its size on each side."""
    scores = np.full((2, 17), 0.9)
    scores[0] = 0.1  # pose 0 has no confident keypoint; its box [0, 100]^2 enlarges to [-100, 200]^2
    inst = people([pose(0), pose(50, seed=5)], scores, [[0, 0, 100, 100], [50, 50, 150, 150]])
    oks = oks_matrix(inst.keypoints, inst.keypoint_scores, inst.areas, boxes=inst.boxes)
    assert oks[0, 1] == 1.0
    assert oks_matrix(inst.keypoints, inst.keypoint_scores, inst.areas)[0, 1] == 0.0  # without boxes
    assert pose_nms(inst, 0.8).tolist() == [1]
    far = people([pose(0), pose(400, seed=5)], scores, [[0, 0, 100, 100], [400, 400, 500, 500]])
    assert pose_nms(far, 0.8).tolist() == [0, 1]


def chain(shifts, confident):
    """Poses of one body shifted along x (OKS falls with the shift: 0.98 at
    2 px, 0.87 at 5 px, < 0.8 at 7 px for a 100 x 100 box), with the given
    numbers of confident keypoints."""
    base = pose(0)
    scores = np.full((len(shifts), 17), 0.9)
    for row, count in zip(scores, confident, strict=True):
        row[count:] = 0.1  # the legs, whose large sigmas make OKS tolerant
    kpts = [base + [s, 0] for s in shifts]
    return people(kpts, scores, [[0, 0, 100, 100]] * len(shifts))


def test_removed_poses_still_suppress_others():
    """A at 0, B at -2 px, C at +5 px: B drops A (more keypoints); A keeps its
    row of the OKS matrix and, with more keypoints than C, then drops C,
    although B and C alone would both survive."""
    inst = chain([0, -2, 5], [15, 17, 13])
    oks = oks_matrix(inst.keypoints, inst.keypoint_scores, inst.areas)
    assert min(oks[0, 1], oks[1, 0]) > max(oks[0, 2], oks[2, 0]) > 0.8 > max(oks[1, 2], oks[2, 1])
    assert pose_nms(inst, 0.8).tolist() == [1]
    assert pose_nms(inst[np.array([1, 2])], 0.8).tolist() == [0, 1]


def test_iteration_with_no_surviving_new_pose_keeps_all_earlier_ones():
    """Earlier A (0 px) and B (7 px), new C (2 px) between them: C drops A,
    then B drops C. No new pose survives, so the reference keeps A and B."""
    from bmp.config import LoopConfig
    from bmp.loop import BMP, StageTimes

    inst = chain([0, 7, 2], [15, 17, 16])
    assert pose_nms(inst, 0.8).tolist() == [1]
    found, new = inst[np.array([0, 1])], inst[np.array([2])].replace(iteration=np.array([2], np.int32))
    loop = BMP.__new__(BMP)
    loop.loop, loop.times = LoopConfig(), StageTimes()
    merged = loop.merge(found, new)
    assert len(merged) == 2 and merged.iteration.tolist() == [1, 1]
