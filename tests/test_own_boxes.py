"""Pose from your own boxes: ``BMP.estimate_pose`` is the loop's pose step on
the caller's boxes, ``predict(boxes=)`` seeds the loop with them as iteration 0
(unchanged, never dropped), and ``bmp run --boxes`` does it for a folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bmp import BMP
from bmp.cli import main
from bmp.config import load_config
from bmp.images import load_image
from bmp.loop import given_people
from bmp.pose_nms import pose_nms
from bmp.structures import Instances
from tests.conftest import COCO_DIR, MODELS_DIR, ROOT, offline_bmp_home, rng_pose

LITE = str(ROOT / "configs" / "bmp_lite.py")
IMAGE = COCO_DIR / "000000197388.jpg"  # five people


@pytest.fixture(scope="module")
def lite(tmp_path_factory) -> BMP:
    """Lite with real YOLO weights, posing iteration 1 top-down too: its first
    pass would otherwise keep the detector's own keypoints, which boxes lack."""
    cfg = load_config(LITE).to_dict()
    cfg["pose"]["first_pass"] = "topdown"
    with offline_bmp_home(tmp_path_factory):
        return BMP.from_config(cfg, device="cpu", weights_dirs=[MODELS_DIR])


@pytest.fixture(scope="module")
def first_iteration(lite):
    """(detections, people) of iteration 1 of the plain loop on IMAGE."""
    record = lite.predict_iterations(IMAGE, num_iters=1)[0]
    assert len(record.detections) >= 3
    return record.detections, record.people


def assert_same_poses(a: Instances, b: Instances) -> None:
    np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-4)
    np.testing.assert_allclose(a.keypoint_scores, b.keypoint_scores, atol=1e-5)
    np.testing.assert_allclose(a.visibility, b.visibility, atol=1e-5)
    np.testing.assert_allclose(a.presence, b.presence, atol=1e-5)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_estimate_pose_equals_the_loops_pose_step_on_its_own_boxes(lite, first_iteration):
    detections, people = first_iteration
    posed = lite.estimate_pose(IMAGE, detections.boxes, masks=detections.masks,
                               box_scores=detections.det_scores)
    np.testing.assert_array_equal(posed.boxes, detections.boxes)  # unchanged, in the order given
    np.testing.assert_array_equal(posed.det_scores, detections.det_scores)
    assert (posed.iteration == 0).all() and posed.keypoint_scores.any()
    # Pose-NMS may have dropped some detections; every survivor is one of them, by its exact box.
    rows = [int(np.flatnonzero((detections.boxes == box).all(1))[0]) for box in people.boxes]
    assert_same_poses(posed[rows], people)


def test_estimate_pose_batch_is_estimate_pose_per_image(lite, first_iteration):
    detections, _ = first_iteration
    other = COCO_DIR / "000000000785.jpg"
    one = lite.estimate_pose(other, [[100, 40, 400, 420]])
    batch = lite.estimate_pose_batch([IMAGE, other, IMAGE], [detections.boxes, [[100, 40, 400, 420]], []])
    assert_same_poses(batch[0], lite.estimate_pose(IMAGE, detections.boxes))
    assert_same_poses(batch[1], one)
    assert len(batch[2]) == 0 and batch[2].image_size == batch[0].image_size


def test_predict_seeds_the_given_boxes_unchanged_and_finds_the_others(lite, first_iteration):
    detections, _ = first_iteration
    # A person at a score the detector threshold (0.3) would drop, the same box again
    # (box and pose NMS would drop it) and a box reaching out of the image (not clipped).
    h, w = load_image(IMAGE).shape[:2]
    boxes = np.array([detections.boxes[0], detections.boxes[0], [w - 60, 10, w + 40, 200]], np.float32)
    scores = np.array([0.01, 0.02, 0.5], np.float32)
    people = lite.predict(IMAGE, boxes=boxes, box_scores=scores)
    given = people[people.iteration == 0]
    np.testing.assert_array_equal(given.boxes, boxes)
    np.testing.assert_array_equal(given.det_scores, scores)
    assert_same_poses(given, lite.estimate_pose(IMAGE, boxes, box_scores=scores))
    assert given.masks.any((1, 2))[0]  # segmented like any found person
    assert (people.iteration >= 1).sum() >= 2  # the loop found people the boxes miss
    # Blacked out before the first detection, so the detector looks for everyone else.
    assert (lite.detector_inputs[0] != load_image(IMAGE)).any()


def test_predict_batch_with_per_image_boxes_equals_predict(lite, first_iteration):
    detections, _ = first_iteration
    other = COCO_DIR / "000000040083.jpg"
    boxes, scores = detections.boxes[:2], detections.det_scores[:2]
    batch = lite.predict_batch([IMAGE, other], num_iters=1, boxes=[boxes, None], box_scores=[scores, None])
    seeded = lite.predict(IMAGE, num_iters=1, boxes=boxes, box_scores=scores)
    single = [seeded, lite.predict(other, num_iters=1)]
    for b, s in zip(batch, single, strict=True):
        np.testing.assert_array_equal(b.iteration, s.iteration)
        np.testing.assert_array_equal(b.boxes, s.boxes)
        assert_same_poses(b, s)
    assert (batch[0].iteration == 0).sum() == 2 and (batch[1].iteration > 0).all()


def test_predict_iterations_with_boxes_records_what_predict_returns(lite, first_iteration):
    # What each iteration adds beyond your own boxes: the same seeding as predict.
    detections, _ = first_iteration
    boxes, scores = detections.boxes[:2], detections.det_scores[:2]
    records = lite.predict_iterations(IMAGE, num_iters=2, boxes=boxes, box_scores=scores)
    people = lite.predict(IMAGE, num_iters=2, boxes=boxes, box_scores=scores)
    assert all((r.people.iteration == 0).sum() == 2 for r in records)
    np.testing.assert_array_equal(records[-1].people.boxes, people.boxes)
    np.testing.assert_array_equal(records[-1].people.iteration, people.iteration)
    assert_same_poses(records[-1].people, people)
    batch = lite.predict_iterations_batch([IMAGE, IMAGE], num_iters=2, boxes=[boxes, None],
                                          box_scores=[scores, None])
    # A batch of two detector images rounds differently from one: boxes agree to float precision.
    np.testing.assert_allclose(batch[0][-1].people.boxes, people.boxes, atol=1e-3)
    np.testing.assert_array_equal(batch[0][-1].people.iteration, people.iteration)
    assert (batch[1][-1].people.iteration > 0).all()


@pytest.mark.parametrize("boxes, scores, masks, message", [
    ([1, 2, 3, 4], None, None, "boxes must be an (N, 4) array"),
    ([[1, 2, 3]], None, None, "boxes must be an (N, 4) array"),
    ([["a", "b", "c", "d"]], None, None, "boxes must be an (N, 4) array"),
    ([[0, 0, 10, 10], [5, 5, 5, 9]], None, None, "box 1 [5.0, 5.0, 5.0, 9.0] is not finite xyxy"),
    ([[0, np.nan, 10, 10]], None, None, "box 0"),
    ([[0, 0, 10, 10]], [0.5, 0.5], None, "box_scores must be 1 finite numbers"),
    ([[0, 0, 10, 10]], None, np.zeros((1, 20, 20), bool), "masks must be (N, H, W) = (1, 30, 40)"),
])
def test_malformed_boxes_are_refused_in_one_line(boxes, scores, masks, message):
    with pytest.raises(ValueError) as info:
        given_people((30, 40), boxes, scores, masks)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_predict_refuses_prior_and_boxes_together(lite):
    prior = Instances((10, 10), boxes=np.array([[0, 0, 5, 5]], np.float32))
    with pytest.raises(ValueError, match="prior or boxes, not both"):
        lite.predict(np.zeros((10, 10, 3), np.uint8), prior=prior, boxes=[[0, 0, 5, 5]])


def test_pose_nms_never_drops_fixed_people():
    pose = rng_pose()
    same = Instances((100, 100), boxes=np.array([[0, 0, 100, 100]] * 3, np.float32),
                     keypoints=np.stack([pose, pose, pose + 0.5]),
                     keypoint_scores=np.array([[0.9] * 17, [0.5] * 17, [0.95] * 17], np.float32),
                     iteration=np.array([0, 0, 1], np.int32))
    assert len(pose_nms(same, 0.5)) == 1
    np.testing.assert_array_equal(pose_nms(same, 0.5, fixed=np.array([False, True, False])), [1])
    # Two given people never suppress each other; the later duplicate goes.
    np.testing.assert_array_equal(pose_nms(same, 0.5, fixed=np.array([True, True, False])), [0, 1])


# bmp run --boxes ------------------------------------------------------------------------

NAMES = ["000000197388.jpg", "000000040083.jpg"]


def run_args(folder: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(folder), "--config", LITE, "--out", str(out), "--weights-dir", str(MODELS_DIR),
            "--device", "cpu", "--iters", "1", *extra]


@pytest.fixture
def folder(tmp_path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for name in NAMES:
        shutil.copy(COCO_DIR / name, images / name)
    return images


def write_boxes(path: Path, entries) -> str:
    path.write_text(json.dumps(entries))
    return str(path)


def test_run_with_boxes_seeds_those_images_and_resumes(folder, tmp_path, capsys):
    boxes = write_boxes(tmp_path / "dets.json", [
        {"image_id": 197388, "category_id": 1, "bbox": [10.5, 40.25, 80.0, 230.0], "score": 0.04},
        {"image_id": 197388, "category_id": 1, "bbox": [370.0, 170.0, 260.0, 220.0], "score": 0.9},
    ])
    results = {}
    for batch in ("1", "2"):
        out = tmp_path / f"out{batch}"
        assert main(run_args(folder, out, "--boxes", boxes, "--batch-size", batch)) == 0
        results[batch] = (out / "results.json").read_text()
    assert results["1"] == results["2"]  # batching keeps the seeds with their images
    found = json.loads(results["1"])
    given = [r for r in found if r["iteration"] == 0]
    assert [r["image_id"] for r in given] == [197388, 197388]
    assert [r["bbox"] for r in given] == [[10.5, 40.25, 80.0, 230.0], [370.0, 170.0, 260.0, 220.0]]
    assert [r["det_score"] for r in given] == [0.04, 0.9]
    assert {r["image_id"] for r in found if r["iteration"] == 1} >= {40083}  # no boxes: the plain loop
    # Resuming with the same boxes is a no-op; other boxes are another run.
    assert main(run_args(folder, tmp_path / "out1", "--boxes", boxes)) == 0
    other = write_boxes(tmp_path / "other.json", [{"image_id": 40083, "bbox": [0, 0, 50, 50], "score": 1}])
    capsys.readouterr()
    assert main(run_args(folder, tmp_path / "out1", "--boxes", other)) == 2
    assert "holds results of a different run" in capsys.readouterr().err


@pytest.mark.parametrize("entries, message", [
    ({"annotations": []}, "is not a list of COCO detection results (it is a JSON dict)"),
    ([{"image_id": 197388}], "entry 0 is not a detection with image_id and bbox"),
    ([{"image_id": 197388, "bbox": [1, 2, 3]}], "entry 0 has bbox [1, 2, 3]; it must be [x, y, w, h]"),
    ([{"image_id": 197388, "bbox": [1, 2, 0, 5]}], "entry 0 has bbox [1, 2, 0, 5]"),
    ([{"image_id": "a", "bbox": [1, 2, 3, 4]}], "entry 0 has image_id 'a', not an integer"),
    ([{"image_id": 197388, "bbox": [1, 2, 3, 4], "category_id": 3}], "category_id 3; only people (1)"),
    ([{"image_id": 197388, "bbox": [1, 2, 3, 4], "score": "high"}], "score 'high', not a finite number"),
    ([{"image_id": 785, "bbox": [1, 2, 3, 4]}], "1 image ids match no input image: [785]"),
])
def test_bad_boxes_files_are_refused_in_one_line(folder, tmp_path, capsys, entries, message):
    boxes = write_boxes(tmp_path / "dets.json", entries)
    assert main(run_args(folder, tmp_path / "out", "--boxes", boxes)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bmp: error: --boxes") and message in err and "\n" not in err, err
