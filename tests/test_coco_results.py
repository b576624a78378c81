"""COCO results back to Instances (bmp.coco.coco_to_instances): the one reader
that video records (resume) and the HTML report's thumbnails share."""

from __future__ import annotations

import cv2
import numpy as np

from bmp.coco import coco_to_instances, instances_to_coco
from bmp.masks import decode_rle, encode_rle, segmentation_to_rle
from bmp.models.mask_condition import rasterize_polygons
from bmp.structures import NUM_KEYPOINTS, Instances


def _people(n: int, size: tuple[int, int] = (40, 60)) -> Instances:
    rng = np.random.default_rng(0)
    h, w = size
    xy = rng.uniform(0, 30, (n, 2)).astype(np.float32)
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        masks[i, 5 * i:5 * i + 7, 3 * i:3 * i + 11] = True
    extra = rng.uniform(0, 1, (n, 2, 3)).astype(np.float32)
    extra[1] = 0  # a person without the extra points: written absent, read back as zeros
    return Instances(
        size, boxes=np.concatenate([xy, xy + 10], axis=1), scores=rng.uniform(0, 1, n).astype(np.float32),
        det_scores=rng.uniform(0, 1, n).astype(np.float32),
        keypoints=rng.uniform(0, 50, (n, NUM_KEYPOINTS, 2)).astype(np.float32),
        keypoint_scores=rng.uniform(0, 1, (n, NUM_KEYPOINTS)).astype(np.float32),
        visibility=rng.uniform(0, 1, (n, NUM_KEYPOINTS)).astype(np.float32),
        presence=rng.uniform(0, 1, (n, NUM_KEYPOINTS)).astype(np.float32),
        masks=masks, mask_scores=rng.uniform(0, 1, n).astype(np.float32),
        iteration=np.array([1, 2, 2][:n], np.int32), track_id=np.array([7, -1, 3][:n], np.int32),
        extra_keypoints=extra)


def test_results_come_back_as_the_people_written_up_to_rounding():
    people = _people(3)
    results = instances_to_coco(people, 5)
    for result, track in zip(results, people.track_id, strict=True):
        result["track_id"] = int(track)  # what a video record adds
    back = coco_to_instances(results, people.image_size)
    assert back.image_size == people.image_size and len(back) == 3
    for name, tol in [("boxes", 0.01), ("scores", 1e-5), ("det_scores", 1e-5), ("keypoints", 1e-3),
                      ("keypoint_scores", 1e-3), ("visibility", 1e-4), ("presence", 1e-4),
                      ("mask_scores", 1e-5), ("extra_keypoints", 1e-3)]:
        np.testing.assert_allclose(getattr(back, name), getattr(people, name), atol=tol, err_msg=name)
    assert np.array_equal(back.masks, people.masks)
    assert back.iteration.tolist() == [1, 2, 2] and back.track_id.tolist() == [7, -1, 3]
    assert back.prompts.shape == (3, 0, 2)


def test_results_come_back_scaled_into_a_smaller_image():
    people = _people(3)
    h, w = people.image_size
    small = (h // 2, w // 2)
    back = coco_to_instances(instances_to_coco(people, 5), small, scale=0.5)
    full = coco_to_instances(instances_to_coco(people, 5), people.image_size)
    assert back.image_size == small and back.masks.shape == (3, *small)
    np.testing.assert_allclose(back.boxes, full.boxes * 0.5, atol=1e-5)
    np.testing.assert_allclose(back.keypoints, full.keypoints * 0.5, atol=1e-5)
    np.testing.assert_allclose(back.extra_keypoints[..., :2], full.extra_keypoints[..., :2] * 0.5, atol=1e-5)
    np.testing.assert_array_equal(back.extra_keypoints[..., 2], full.extra_keypoints[..., 2])
    np.testing.assert_array_equal(back.keypoint_scores, full.keypoint_scores)
    for got, mask in zip(back.masks, full.masks, strict=True):
        expected = cv2.resize(mask.view(np.uint8), small[::-1], interpolation=cv2.INTER_NEAREST) > 0
        assert np.array_equal(got, expected) and got.any()


def test_results_of_other_tools_with_only_boxes_come_back_neutral():
    back = coco_to_instances([{"bbox": [1, 2, 3, 4]}, {"bbox": [0, 0, 5, 5], "score": 0.5,
                                                       "segmentation": None}], (10, 12))
    assert back.boxes.tolist() == [[1, 2, 4, 6], [0, 0, 5, 5]] and back.scores.tolist() == [0, 0.5]
    assert not back.keypoints.any() and not back.keypoint_scores.any() and not back.masks.any()
    assert back.masks.shape == (2, 10, 12)
    assert back.iteration.tolist() == [1, 1] and back.track_id.tolist() == [-1, -1]
    assert len(coco_to_instances([], (10, 12))) == 0


def test_decode_rle_inverts_encode_rle_with_str_or_bytes_counts():
    mask = np.zeros((9, 7), bool)
    mask[2:5, 1:6] = True
    rle = encode_rle(mask)
    assert isinstance(rle["counts"], str)
    assert np.array_equal(decode_rle(rle), mask)
    assert np.array_equal(decode_rle(dict(rle, counts=rle["counts"].encode("ascii"))), mask)


def _uncompressed(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: column-major run lengths, starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return {"size": list(mask.shape), "counts": np.diff(np.concatenate([[0], edges])).tolist()}


def test_every_coco_segmentation_form_reads_as_the_same_mask():
    # Two parts of one person (polygons are merged), as ground truth has them.
    polygons = [[1, 1, 6, 1, 6, 4, 1, 4], [2, 6, 8, 6, 8, 9, 2, 9]]
    mask = rasterize_polygons([np.asarray(p) for p in polygons], 11, 10)
    assert mask.sum() > 0 and mask[:5].any() and mask[6:].any()
    compressed = encode_rle(mask)
    for form in (polygons, _uncompressed(mask), compressed,
                 dict(compressed, counts=compressed["counts"].encode("ascii"))):
        assert np.array_equal(decode_rle(segmentation_to_rle(form, 11, 10)), mask), form
