"""Image-sized data stays on the loop's device: the mask operations answer in
kind (numpy or torch), SAM's clean-up runs in torch, and the loop moves no
image- or mask-sized tensor to the host until its output."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from bmp import BMP
from bmp.masks import (
    component_areas,
    exclusive_masks,
    fill_missing_masks,
    fill_small_regions,
    mask_out,
)
from bmp.structures import Instances
from tests.tiny_models import CSPNEXT_T_UDP, tiny_config


def cv2_areas(region: np.ndarray) -> np.ndarray:
    _, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    return np.where(region, stats[labels, cv2.CC_STAT_AREA], 0)


def shapes(rng: np.random.Generator) -> np.ndarray:
    """Masks of the kinds SAM makes and worse: blobs with holes and specks,
    a one-pixel spiral (the slowest case for label propagation), noise."""
    masks = np.zeros((4, 64, 80), bool)
    cv2.ellipse(masks[0].view(np.uint8), (40, 32), (30, 20), 15, 0, 360, 1, -1)
    masks[0, 30:32, 38:41] = False
    masks[0, 2, 2] = masks[0, 60, 75] = True
    x0, y0, x1, y1 = 2, 2, 77, 61
    while x0 < x1 and y0 < y1:  # spiral walls, one pixel thick
        masks[1, y0, x0:x1 + 1] = masks[1, y0:y1 + 1, x1] = True
        masks[1, y1, x0:x1 + 1] = masks[1, y0 + 2:y1 + 1, x0] = True
        x0, y0, x1, y1 = x0 + 2, y0 + 2, x1 - 2, y1 - 2
    masks[2] = rng.random((64, 80)) > 0.55
    masks[3] = cv2.dilate((rng.random((64, 80)) > 0.97).astype(np.uint8), np.ones((3, 3))) > 0
    return masks


@pytest.mark.parametrize("on_device", [True, False])
def test_component_areas_equal_opencv(on_device):
    """The GPU labelling (run here on the CPU) and the host path both give
    OpenCV's 8-connected component areas, also for noise above the
    percolation threshold (one huge, tortuous component)."""
    rng = np.random.default_rng(0)
    masks = np.concatenate([shapes(rng), rng.random((2, 64, 80)) > 0.45])
    for region in (masks, ~masks):
        got = component_areas(torch.from_numpy(region), on_device=on_device).numpy()
        want = np.stack([cv2_areas(m) for m in region])
        np.testing.assert_array_equal(got, want)
    assert component_areas(torch.zeros((0, 5, 5), dtype=torch.bool)).shape == (0, 5, 5)


def test_fill_small_regions_is_sams_hole_and_sprinkle_rule():
    masks = shapes(np.random.default_rng(1))
    logits = torch.from_numpy(np.where(masks, 5.0, -5.0).astype(np.float32))
    out = fill_small_regions(logits, 0.0, max_hole_area=10, max_sprinkle_area=50).numpy() > 0
    for mask, got in zip(masks, out, strict=True):
        holes = cv2_areas(~mask)
        filled = mask | ((holes > 0) & (holes <= 10))
        islands = cv2_areas(filled)
        np.testing.assert_array_equal(got, filled & ~((islands > 0) & (islands <= 50)))
    assert out[0, 30:32, 38:41].all() and not out[0, 2, 2]  # hole filled, speck gone


def test_mask_ops_answer_in_kind_and_agree():
    rng = np.random.default_rng(2)
    masks = rng.random((5, 30, 40)) > 0.6
    masks[3:] = False  # empty masks, for the stand-in rule
    scores = rng.random(5).astype(np.float32)
    image = rng.integers(1, 255, (30, 40, 3), dtype=np.uint8)
    boxes = np.array([[0, 0, 10, 10], [5, 5, 30, 25], [0, 0, 40, 30], [4, 4, 31, 26], [1, 2, 3, 4]],
                     np.float32)
    found = Instances((30, 40), boxes=boxes[:3], masks=masks[:3])
    people = Instances((30, 40), boxes=boxes, masks=masks)
    people_t = people.replace(masks=torch.from_numpy(masks))
    found_t = found.replace(masks=torch.from_numpy(masks[:3]))

    ex, ex_t = exclusive_masks(masks, scores), exclusive_masks(torch.from_numpy(masks), scores)
    out, out_t = mask_out(image, masks), mask_out(torch.from_numpy(image), torch.from_numpy(masks))
    fill, fill_t = fill_missing_masks(people, found), fill_missing_masks(people_t, found_t)
    for host, dev in ((ex, ex_t), (out, out_t), (fill, fill_t)):
        assert isinstance(host, np.ndarray) and isinstance(dev, torch.Tensor)
        np.testing.assert_array_equal(host, dev.numpy())
    assert ex.sum(0).max() <= 1
    np.testing.assert_array_equal(fill[3], masks[1])  # re-detects person 1 (IoU 0.85)
    assert fill[4].sum() == 2 * 2  # no earlier match: its box


def test_instances_keep_tensor_masks_through_index_and_cat():
    masks = torch.zeros((3, 8, 9), dtype=torch.bool)
    masks[1, 2:4, 3:6] = True
    people = Instances((8, 9), boxes=np.zeros((3, 4), np.float32), masks=masks)
    picked = people[np.array([False, True, True])]
    assert isinstance(picked.masks, torch.Tensor) and picked.masks[0].sum() == 6
    host_part = Instances((8, 9), boxes=np.zeros((1, 4), np.float32))
    both = Instances.cat([host_part, picked])
    assert isinstance(both.masks, torch.Tensor) and both.masks.shape == (3, 8, 9)
    out = both.to_host()
    assert isinstance(out.masks, np.ndarray) and out.masks.dtype == bool and out.masks[1].sum() == 6


@pytest.fixture()
def device_loop(tiny_weights):
    cfg = tiny_config(tiny_weights, detector="rtmdet_tiny_confident.pth")
    cfg["pose"].update(config=CSPNEXT_T_UDP, checkpoint=str(tiny_weights / "cspnext_t_udp_random.pth"))
    cfg["segmenter"]["prompts"]["score_thr"] = 0.0  # random pose weights are never confident
    return BMP.from_config(cfg, device="cpu")


def test_loop_moves_no_image_sized_tensor_to_the_host(device_loop, coco_images, monkeypatch):
    """On CPU ``.cpu()`` / ``.numpy()`` cost nothing, but each call on an
    image-sized tensor is a device-to-host copy on a GPU: the loop may make
    them only in its final ``to_host``. The mask operations are told they run
    on a GPU, so they take their device paths."""
    import bmp.masks

    loop = device_loop
    assert loop.detector.takes_device_image and loop.pose.takes_device_image
    image = coco_images[2]
    h, w = cv2.imread(str(image)).shape[:2]
    moved: list[tuple[str, tuple[int, ...]]] = []
    in_output = [False]

    def spy(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            if self.numel() >= h * w // 4 and not in_output[0]:
                moved.append((name, tuple(self.shape)))
            return original(self, *args, **kwargs)

        return wrapper

    to_host = Instances.to_host

    def output(self):
        in_output[0] = True
        try:
            return to_host(self)
        finally:
            in_output[0] = False

    detector_inputs = []
    detect = loop.detector.detect_batch

    def record(images):
        detector_inputs.extend(images)
        return detect(images)

    monkeypatch.setattr(bmp.masks, "on_host", lambda tensor: False)
    for name in ("cpu", "numpy", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, spy(name))
    monkeypatch.setattr(Instances, "to_host", output)
    monkeypatch.setattr(loop.detector, "detect_batch", record)
    people = loop.predict(image)
    monkeypatch.undo()

    assert len(people) >= 2 and len(detector_inputs) == 2
    assert all(isinstance(x, torch.Tensor) for x in detector_inputs)  # masked on the device
    assert moved == []
    assert isinstance(people.masks, np.ndarray) and people.masks.shape == (len(people), h, w)
    assert people.masks.sum(0).max() <= 1


def test_dense_and_contested_exclusivity_agree():
    rng = np.random.default_rng(3)
    masks = torch.from_numpy(rng.random((7, 50, 60)) > 0.5)
    scores = rng.choice([0.2, 0.5, 0.9], 7).astype(np.float32)  # ties: the earlier mask wins
    dense = exclusive_masks(masks, scores, dense=True)
    assert torch.equal(dense, exclusive_masks(masks, scores, dense=False))
    assert dense.sum(0).max() <= 1 and torch.equal(dense.any(0), masks.any(0))


def test_sam_encodes_on_the_device_like_sam2s_predictor(tiny_weights, coco_images):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from bmp.images import load_image
    from bmp.models.segmenters import SAM2Segmenter
    from tests.tiny_models import SAM21_T

    segmenter = SAM2Segmenter(config=SAM21_T, checkpoint=str(tiny_weights / "sam21_hiera_t_random.pt"))
    image = load_image(coco_images[1])
    reference = SAM2ImagePredictor(segmenter.predictor.model)
    with torch.inference_mode():
        reference.set_image(image)
        segmenter.set_image(torch.from_numpy(image))  # a device tensor, as the loop passes it
    ours = segmenter.predictor
    assert ours._orig_hw == reference._orig_hw == [image.shape[:2]]
    torch.testing.assert_close(ours._features["image_embed"], reference._features["image_embed"])
    for a, b in zip(ours._features["high_res_feats"], reference._features["high_res_feats"], strict=True):
        torch.testing.assert_close(a, b)
