import numpy as np
import pytest
import torch

from bmp.masks import encode_rle, exclusive_masks, fill_small_regions, mask_iou, mask_out, resize_mask


def test_exclusive_masks_never_overlap_and_highest_score_wins():
    rng = np.random.default_rng(0)
    masks = rng.random((6, 40, 50)) > 0.4
    scores = rng.random(6)
    out = exclusive_masks(masks, scores)
    assert out.sum(0).max() <= 1
    assert (out.any(0) == masks.any(0)).all()  # no pixel lost
    best = np.argmax(scores)
    assert (out[best] == masks[best]).all()


def test_exclusive_masks_tie_goes_to_earlier_mask():
    masks = np.ones((2, 3, 3), bool)
    out = exclusive_masks(masks, np.array([0.5, 0.5]))
    assert out[0].all() and not out[1].any()


def test_mask_out_blackens_exactly_the_union_of_masks():
    image = np.full((10, 12, 3), 200, np.uint8)
    masks = np.zeros((2, 10, 12), bool)
    masks[0, :3, :3] = True
    masks[1, 5:, 5:] = True
    out = mask_out(image, masks)
    union = masks.any(0)
    assert (out[union] == 0).all() and (out[~union] == 200).all()
    assert (image == 200).all()  # input untouched
    assert (mask_out(image, np.zeros((0, 10, 12), bool)) == image).all()


def test_small_regions_clean_up_fills_holes_and_drops_sprinkles():
    mask = np.zeros((60, 60), bool)
    mask[10:40, 10:40] = True
    mask[20:22, 20:22] = False  # 4 px hole
    mask[50:52, 50:53] = True  # 6 px sprinkle
    logits = torch.from_numpy(np.where(mask, 1.0, -1.0).astype(np.float32))[None]
    out = (fill_small_regions(logits, 0.0, max_hole_area=10, max_sprinkle_area=50) > 0)[0].numpy()
    assert out[20:22, 20:22].all()
    assert not out[50:52, 50:53].any()
    assert out[10:40, 10:40].all()


def test_rle_round_trip_and_iou():
    from pycocotools import mask as mask_utils

    mask = np.zeros((7, 9), bool)
    mask[2:5, 3:8] = True
    rle = encode_rle(mask)
    assert isinstance(rle["counts"], str)
    back = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert (back.astype(bool) == mask).all()
    assert mask_iou(mask[None], mask[None])[0, 0] == pytest.approx(1.0)


def test_resize_mask_takes_h_w_and_keeps_hard_edges():
    mask = np.zeros((4, 6), bool)
    mask[:2, :3] = True  # the top-left quarter
    up = resize_mask(mask, (8, 12))
    assert up.dtype == bool and up.shape == (8, 12)
    assert up[:4, :6].all() and not up[4:].any() and not up[:, 6:].any()
    assert np.array_equal(resize_mask(up, (4, 6)), mask)
