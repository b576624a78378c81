"""The mask MaskPose is conditioned on: the detector mask as filled external
contours, rasterised the way the reference pipeline does it.

The reference hands the pose pipeline polygons, not masks: the external
contours of each mask (``cv2.findContours``, ``RETR_EXTERNAL``,
``CHAIN_APPROX_SIMPLE``) with more than 3 points, which its ``MaskBackground``
turns back into a mask with pycocotools (``frPyObjects`` → ``merge`` →
``decode``). Holes are filled, specks whose contour has at most 3 points are
dropped, and the polygon raster is not the original mask along the border. A
mask with no such contour (empty, or only specks) gives no polygon, and that
person's crop is not dimmed.

Both top-down paths use these functions: the per-sample mmpose pipeline passes
:func:`mask_polygons` as the sample's ``segmentation``; the batched path uses
:func:`filled_contour_masks`, which works on each mask's bounding region only
(the raster of a polygon moved by whole pixels moves with it, and the region's
margin keeps its edge from touching the polygon).
"""

from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from ..structures import mask_region

#: Region margin: the contour tracer and the polygon raster look one pixel
#: beyond the mask; two keep the region's edge out of both.
REGION_PAD = 2


def mask_polygons(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[np.ndarray] | None:
    """External contours with more than 3 points, flattened ``[x0, y0, x1, y1, ...]``
    (int32), shifted by ``offset`` (x, y); None for an empty mask or one
    without such a contour (the reference's rule)."""
    if not mask.any():
        return None
    contours, _ = cv2.findContours(
        mask.astype(np.uint8) * np.uint8(255), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
        offset=offset,
    )
    polygons = [c.flatten() for c in contours if len(c) > 3]
    return polygons or None


def rasterize_polygons(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """pycocotools' raster of the union of ``polygons``: (height, width) bool."""
    rles = mask_utils.frPyObjects([np.asarray(p, np.float64) for p in polygons], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def _padded_region(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The mask's bounding region grown by :data:`REGION_PAD` and clipped to the
    image; None for an empty mask."""
    region = mask_region(mask)
    if region is None:
        return None
    rows, cols = region
    h, w = mask.shape
    return (slice(max(rows.start - REGION_PAD, 0), min(rows.stop + REGION_PAD, h)),
            slice(max(cols.start - REGION_PAD, 0), min(cols.stop + REGION_PAD, w)))


def _filled_region(mask: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """(region, the filled-contour raster on it), or None where the mask gives
    no polygon: traced and rasterised on the mask's padded bounding region only."""
    region = _padded_region(mask)
    if region is None:
        return None
    rows, cols = region
    polygons = mask_polygons(mask[region])
    if polygons is None:
        return None
    return region, rasterize_polygons(polygons, rows.stop - rows.start, cols.stop - cols.start)


def filled_contour_mask(mask: np.ndarray) -> np.ndarray | None:
    """The reference's conditioning mask of one (H, W) mask, or None where it
    gives no polygon. Equal to ``rasterize_polygons(mask_polygons(mask), H, W)``."""
    found = _filled_region(mask)
    if found is None:
        return None
    out = np.zeros(mask.shape, bool)
    out[found[0]] = found[1]
    return out


def filled_contour_masks(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`filled_contour_mask` of every mask of ``masks`` (N, H, W), each
    written into its own region of one stack (no full-image copy per person).

    Returns:
        filled (N, H, W) bool, and has_polygon (N,) bool: False where the mask
        gave no polygon (its ``filled`` is all False; such a person's crop is
        left undimmed, which is not the same as dimming by an empty mask).
    """
    masks = np.asarray(masks)
    filled = np.zeros(masks.shape, bool)
    has_polygon = np.zeros(len(masks), bool)
    for i, mask in enumerate(masks):
        found = _filled_region(mask.astype(bool, copy=False))
        if found is not None:
            filled[(i, *found[0])] = found[1]
            has_polygon[i] = True
    return filled, has_polygon


def dim_background(image: np.ndarray, mask: np.ndarray, alpha: float) -> np.ndarray:
    """The reference's dimming of a full-resolution image:
    ``cv2.addWeighted(img, 1 - alpha, img * mask, alpha, 0)`` (for uint8, the
    weighted sum rounded to the nearest, ties to even)."""
    masked = image * mask.astype(image.dtype)[..., None]
    return cv2.addWeighted(image, 1.0 - alpha, masked, alpha, 0.0)
