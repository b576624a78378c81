"""MaskPose conditioning as an mmpose transform."""

from __future__ import annotations

import numpy as np
from mmcv.transforms import BaseTransform
from mmpose.registry import TRANSFORMS

from ...masks import decode_rle, segmentation_to_rle
from ..mask_condition import dim_background, filled_contour_mask


@TRANSFORMS.register_module()
class MaskBackground(BaseTransform):
    """Dim the full-resolution image outside the person's mask, as the
    reference does: ``cv2.addWeighted(img, 1 - alpha, img * mask, alpha, 0)``.

    The mask is read from ``results['segmentation']`` (COCO polygons or RLE:
    what the reference pipeline and datasets give; bmp's per-sample pose path
    passes the polygons of :func:`bmp.models.mask_condition.mask_polygons`) or
    from ``results['mask']`` ((H, W) bool), which is first turned into the
    reference's filled external contours. A sample without a mask, or whose
    mask gives no polygon, is left unchanged, unless ``continue_on_failure``
    is False. Place it after ``GetBBoxCenterScale`` and before ``TopdownAffine``
    (which then warps the dimmed image).

    Args:
        alpha: how much of the background is removed (MaskPose: 0.2-0.25).
        continue_on_failure: pass samples without a mask through unchanged.
    """

    def __init__(self, alpha: float = 0.25, continue_on_failure: bool = True) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"MaskBackground.alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha
        self.continue_on_failure = continue_on_failure

    def transform(self, results: dict) -> dict:
        img = results["img"]
        mask = None
        if results.get("segmentation") is not None:
            mask = _decode_segmentation(results["segmentation"], img.shape[:2])
        elif results.get("mask") is not None:
            mask = filled_contour_mask(np.asarray(results["mask"], dtype=bool))
        if mask is None:
            if not self.continue_on_failure:
                raise ValueError("MaskBackground: the sample has no mask")
            return results
        results["img"] = dim_background(img, mask, self.alpha)
        return results

    def __repr__(self) -> str:
        return f"MaskBackground(alpha={self.alpha}, continue_on_failure={self.continue_on_failure})"


def _decode_segmentation(segmentation: list | dict, size: tuple[int, int]) -> np.ndarray:
    return decode_rle(segmentation_to_rle(segmentation, *size))
