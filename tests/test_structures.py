import numpy as np
import pytest

from bmp.structures import Instances


def make(n: int, size=(20, 30), iteration: int = 1) -> Instances:
    boxes = np.tile(np.array([[1, 2, 11, 22]], np.float32), (n, 1)) + np.arange(n)[:, None]
    return Instances(size, boxes=boxes, det_scores=np.linspace(0.9, 0.5, n).astype(np.float32),
                     iteration=np.full(n, iteration, np.int32))


def test_missing_fields_are_filled_with_the_right_shapes():
    inst = make(3)
    assert inst.keypoints.shape == (3, 17, 2)
    assert inst.masks.shape == (3, 20, 30) and inst.masks.dtype == bool
    assert inst.visibility.shape == (3, 17)
    empty = Instances((20, 30))
    assert len(empty) == 0 and empty.masks.shape == (0, 20, 30)


def test_selection_by_bool_index_and_int():
    inst = make(4)
    assert len(inst[np.array([True, False, True, False])]) == 2
    assert np.allclose(inst[[3, 0]].boxes[0], inst.boxes[3])
    assert len(inst[1]) == 1


def test_cat_pads_prompts_with_padding_label():
    a = make(2).replace(prompts=np.ones((2, 3, 2), np.float32),
                        prompt_labels=np.ones((2, 3), np.int32))
    b = make(1, iteration=2)
    c = Instances.cat([a, b])
    assert len(c) == 3 and c.prompts.shape == (3, 3, 2)
    assert (c.prompt_labels[2] == -1).all()
    assert list(c.iteration) == [1, 1, 2]


def test_inconsistent_lengths_are_rejected():
    with pytest.raises(ValueError, match="scores"):
        Instances((5, 5), boxes=np.zeros((2, 4), np.float32), scores=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="masks"):
        Instances((5, 5), boxes=np.zeros((1, 4), np.float32), masks=np.zeros((1, 4, 4), bool))


def test_areas_and_xywh_use_xyxy_boxes():
    inst = Instances((50, 50), boxes=np.array([[10, 20, 40, 30]], np.float32))
    assert inst.areas[0] == pytest.approx(300)
    assert inst.boxes_xywh()[0].tolist() == [10, 20, 30, 10]


def test_host_mask_selection_and_cat_copy_only_each_masks_region():
    """Selecting and merging people equals plain indexing, and a fresh copy of
    small masks on a large image maps about their regions' pages, not N x H x W."""
    import resource

    from bmp.structures import copy_masks

    def rss_mb() -> float:  # resident now (a high-water mark could hide the copy)
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    rng = np.random.default_rng(0)
    masks = np.zeros((5, 60, 80), bool)
    for m in masks[:4]:
        y, x = rng.integers(0, 40, 2)
        m[y:y + 15, x:x + 30] = rng.random((15, 30)) < 0.7
    people = Instances((60, 80), boxes=np.zeros((5, 4), np.float32), masks=masks)
    np.testing.assert_array_equal(people[np.array([3, 0, 4])].masks, masks[[3, 0, 4]])
    np.testing.assert_array_equal(people[people.boxes[:, 0] == 0].masks, masks)
    np.testing.assert_array_equal(Instances.cat([people[:2], people[2:]]).masks, masks)

    big = np.zeros((20, 6000, 8000), bool)  # 960 MB if every page were touched
    for i in range(20):
        big[i, 300 * i: 300 * i + 200, 100:300] = True
    before = rss_mb()
    copied = copy_masks([big], [np.arange(20)])
    grown_mb = rss_mb() - before
    assert copied[7, 2200, 200] and copied.sum() == big.sum()
    assert grown_mb < 100, grown_mb
