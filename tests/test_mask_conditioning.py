"""MaskPose conditioning as the reference does it: the detector mask becomes
filled external contours (more than 3 points each) rasterised by pycocotools,
the full-resolution image is dimmed (``cv2.addWeighted``) and only then warped.
The batched crop must equal ``cv2.warpAffine`` of that dimmed image."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from bmp.masks import encode_rle
from bmp.models.mask_condition import (
    dim_background,
    filled_contour_mask,
    filled_contour_masks,
    mask_polygons,
)

INPUT = (192, 256)


def reference_mask(mask: np.ndarray) -> np.ndarray | None:
    """The reference's steps written out on the full image: inference_topdown's
    contours, then MaskBackground's frPyObjects / merge / decode."""
    if mask.sum() == 0:
        return None
    contours, _ = cv2.findContours(
        (mask * 255).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    polygons = [c.flatten() for c in contours if len(c) > 3]
    if not polygons:
        return None
    h, w = mask.shape
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))) > 0


def random_masks(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Blobs with holes and specks, some cut by the image border."""
    masks = []
    for i in range(count):
        h, w = (int(v) for v in rng.integers(6, 90, 2))
        m = np.zeros((h, w), np.uint8)
        for _ in range(int(rng.integers(1, 5))):
            centre = (int(rng.integers(-5, w + 5)), int(rng.integers(-5, h + 5)))
            axes = (int(rng.integers(0, 25)), int(rng.integers(0, 25)))
            cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        m = m.astype(bool)
        if i % 3 == 0:
            m ^= rng.random((h, w)) > 0.93  # holes and specks
        masks.append(m)
    return masks


def test_holes_are_filled_and_specks_dropped():
    mask = np.zeros((40, 50), bool)
    mask[5:30, 8:35] = True
    mask[12:20, 15:25] = False  # a hole
    mask[36, 44:46] = True  # a 2-pixel speck: its contour has 2 points
    filled = filled_contour_mask(mask)
    expected = reference_mask(mask)
    assert expected is not None
    np.testing.assert_array_equal(filled, expected)
    assert filled[12:20, 15:25].all()  # hole filled
    assert not filled[34:, 40:].any()  # speck gone
    # A mask of specks only, and an empty mask, give no polygon: no conditioning.
    speck = np.zeros((40, 50), bool)
    speck[36, 44:46] = True
    assert filled_contour_mask(speck) is None and reference_mask(speck) is None
    assert filled_contour_mask(np.zeros((40, 50), bool)) is None
    stack, has_polygon = filled_contour_masks(np.stack([mask, speck]))
    assert has_polygon.tolist() == [True, False]
    np.testing.assert_array_equal(stack[0], expected)
    assert not stack[1].any()


def test_region_raster_equals_the_full_image_raster():
    """Tracing and rasterising on the padded bounding region gives the
    reference's full-image result, also for masks touching the border."""
    for mask in random_masks(np.random.default_rng(0), 150):
        expected = reference_mask(mask)
        got = filled_contour_mask(mask)
        if expected is None:
            assert got is None
        else:
            np.testing.assert_array_equal(got, expected)
            polygons = mask_polygons(mask)
            assert polygons is not None and all(len(p) > 6 for p in polygons)


def test_dimming_is_add_weighted():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (60, 70, 3), dtype=np.uint8)
    mask = rng.random((60, 70)) > 0.5
    for alpha in (0.2, 0.25):
        got = dim_background(image, mask, alpha)
        want = cv2.addWeighted(image, 1 - alpha, image * mask[..., None].astype(np.uint8), alpha, 0)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got[mask], image[mask])


def _udp_warp(image: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    from mmpose.structures.bbox import get_udp_warp_matrix

    warp = get_udp_warp_matrix(center, scale, 0, INPUT)
    return cv2.warpAffine(image, warp, INPUT, flags=cv2.INTER_LINEAR)


def _crops(image: np.ndarray, boxes: np.ndarray, masks: np.ndarray | None, alpha: float):
    from bmp.models.topdown import crop_people

    return crop_people(
        torch.from_numpy(image).permute(2, 0, 1).float(), torch.from_numpy(boxes), INPUT,
        masks=None if masks is None else torch.from_numpy(masks), mask_alpha=alpha,
    )


def test_crop_of_dimmed_image_equals_cv2_warp_of_the_dimmed_image(people_with_masks):
    image, people = people_with_masks
    filled, has_polygon = filled_contour_masks(people.masks)
    assert has_polygon.all()
    alpha = 0.2
    crops = _crops(image, people.boxes, filled, alpha)
    for i in range(len(people)):
        dimmed = dim_background(image, filled[i], alpha)  # full resolution, uint8
        expected = _udp_warp(dimmed, crops.centers[i].numpy(), crops.scales[i].numpy())
        diff = np.abs(crops.images[i].permute(1, 2, 0).numpy() - expected.astype(np.float32))
        assert diff.max() <= 1.0 and diff.mean() < 0.5  # cv2's uint8 output rounding only
        # Dimming by the raw mask instead (its border pixels, holes and specks)
        # would not give the reference's crop.
        raw = _udp_warp(dim_background(image, people.masks[i], alpha), crops.centers[i].numpy(),
                        crops.scales[i].numpy())
        assert np.abs(raw.astype(np.float32) - expected).max() > 1.0


def test_alpha_zero_or_full_masks_change_nothing(people_with_masks):
    from bmp.models.mmpose_ext import MaskBackground

    image, people = people_with_masks
    filled, _ = filled_contour_masks(people.masks)
    plain = _crops(image, people.boxes, None, 0.0).images
    assert torch.equal(_crops(image, people.boxes, filled, 0.0).images, plain)
    # The neighbour-gathering path itself is grid_sample's bilinear: an
    # all-True mask (a person without polygon) leaves the crop as it is, up to
    # grid_sample's round trip through normalised coordinates (~1e-4 px).
    full = _crops(image, people.boxes, np.ones_like(filled), 0.2).images
    torch.testing.assert_close(full, plain, atol=0.02, rtol=0)
    out = MaskBackground(alpha=0.0).transform({"img": image.copy(), "mask": filled[0]})["img"]
    np.testing.assert_array_equal(out, image)


def test_conditioning_changes_the_crop_only_where_the_mask_is_zero(people_with_masks):
    image, people = people_with_masks
    filled, _ = filled_contour_masks(people.masks)
    # Undimmed through the same arithmetic: an all-True mask.
    plain = _crops(image, people.boxes, np.ones_like(filled), 0.25).images
    dimmed = _crops(image, people.boxes, filled, 0.25).images
    # The mask cut like the image: 1 exactly where every neighbour that
    # contributes to the output pixel is inside the mask.
    mask_images = np.repeat(filled[:, None].astype(np.float32), 3, axis=1)
    inside = torch.stack([
        _crops(np.ascontiguousarray(m.transpose(1, 2, 0)), people.boxes[i : i + 1], None, 0.0).images[0]
        for i, m in enumerate(mask_images)
    ])
    changed = dimmed != plain
    assert changed.any()
    assert not changed[inside > 1 - 1e-5].any()
    assert (dimmed <= plain).all()  # dimming only darkens


def test_mask_background_transform_uses_the_filled_contours():
    from bmp.models.mmpose_ext import MaskBackground

    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    mask = np.zeros((40, 50), bool)
    mask[5:30, 8:35] = True
    mask[12:20, 15:25] = False
    mask[36, 44:46] = True
    filled = reference_mask(mask)
    want = cv2.addWeighted(img, 0.75, img * filled[..., None].astype(np.uint8), 0.25, 0)
    from_mask = MaskBackground(alpha=0.25).transform({"img": img.copy(), "mask": mask})["img"]
    from_polygons = MaskBackground(alpha=0.25).transform(
        {"img": img.copy(), "segmentation": mask_polygons(mask)}
    )["img"]
    np.testing.assert_array_equal(from_mask, want)
    np.testing.assert_array_equal(from_polygons, want)
    # A dataset's RLE is the mask itself, as bmp.masks.segmentation_to_rle reads it.
    from_rle = MaskBackground(alpha=0.25).transform(
        {"img": img.copy(), "segmentation": encode_rle(filled)}
    )["img"]
    np.testing.assert_array_equal(from_rle, want)
    # No mask, or a mask without polygon: left as it is, unless told to fail.
    for sample in ({}, {"mask": np.zeros((40, 50), bool)}, {"segmentation": None}):
        out = MaskBackground(alpha=0.25).transform({"img": img.copy(), **sample})["img"]
        np.testing.assert_array_equal(out, img)
    with pytest.raises(ValueError):
        MaskBackground(alpha=0.25, continue_on_failure=False).transform({"img": img.copy()})


class _Captured(Exception):
    """Ends a pose call once the network's input is seen (random weights
    would only make mmpose's heatmap refinement fail on flat heatmaps)."""


def _pose_inputs(pose, image: np.ndarray, people) -> list[torch.Tensor]:
    """What the network is given for each person: the normalised crops of the
    batched path, the packed uint8 crops of mmpose's per-sample pipeline."""
    seen: list[torch.Tensor] = []

    def capture(inputs) -> None:
        seen.extend(x.float() for x in inputs)
        raise _Captured

    if pose.batched:
        pose.model.extract_feat = capture
    else:
        pose.model.test_step = lambda batch: capture(batch["inputs"])
    with pytest.raises(_Captured):
        pose.estimate(image, people)
    return seen


@pytest.mark.parametrize("batched", [True, False])
def test_a_mask_without_polygon_is_posed_undimmed(people_with_masks, batched):
    """The reference's MaskPose pipeline raises for a person whose mask has no
    external contour of more than 3 points (a thin line, specks); bmp poses
    that person on the undimmed image (README, Differences from the
    reference), not on one dimmed or blacked out by the raw mask."""
    from bmp.models.pose import MMPoseTopDown
    from tests.tiny_models import CSPNEXT_T_UDP

    image, found = people_with_masks
    people = found[np.arange(3)]
    masks = people.masks.copy()
    x0, y0, x1, y1 = people.boxes[1].astype(int)
    masks[1] = False
    masks[1, (y0 + y1) // 2, x0:x1] = True  # one pixel high: a 2-point contour
    masks[2] = False
    masks[2, y0 + 2 : y1 - 2 : 6, x0 + 2 : x1 - 2 : 6] = True  # isolated pixels
    people = people.replace(masks=masks)
    assert mask_polygons(masks[0]) is not None
    assert mask_polygons(masks[1]) is None and mask_polygons(masks[2]) is None

    def inputs(alpha: float) -> list[torch.Tensor]:
        pose = MMPoseTopDown(CSPNEXT_T_UDP, None, flip_test=False, mask_alpha=alpha, batched=batched)
        assert pose.batched == batched
        return _pose_inputs(pose, image, people)

    conditioned, plain = inputs(0.2), inputs(0.0)
    assert len(conditioned) == len(plain) == 3
    assert (conditioned[0] - plain[0]).abs().max() > 0.1  # conditioning is on
    # The batched path's all-True mask costs grid_sample's coordinate round
    # trip (< 0.02 of a pixel value, normalised by std ~57); the pipeline
    # leaves the image untouched.
    atol = 1e-3 if batched else 0.0
    for i in (1, 2):
        torch.testing.assert_close(conditioned[i], plain[i], atol=atol, rtol=0)
