"""MaskPose conditioning as an mmpose transform."""

from __future__ import annotations

import numpy as np
from mmcv.transforms import BaseTransform
from mmpose.registry import TRANSFORMS


@TRANSFORMS.register_module()
class MaskBackground(BaseTransform):
    """Dim the image outside the person's mask: ``img * ((1 - alpha) + alpha * mask)``.

    The mask is read from ``results['mask']`` ((H, W) bool, as bmp passes it) or
    from ``results['segmentation']`` (COCO polygons or RLE, as datasets give it).
    Without a mask the image is left unchanged, unless ``continue_on_failure``
    is False. Place it after ``GetBBoxCenterScale`` and before ``TopdownAffine``.

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
        mask = results.get("mask")
        if mask is None and results.get("segmentation") is not None:
            mask = _decode_segmentation(results["segmentation"], img.shape[:2])
        if mask is None:
            if not self.continue_on_failure:
                raise ValueError("MaskBackground: the sample has no mask")
            return results
        factor = (1.0 - self.alpha) + self.alpha * np.asarray(mask, dtype=np.float32)
        out = img.astype(np.float32) * factor[..., None]
        results["img"] = np.clip(out + 0.5, 0, 255).astype(img.dtype) if img.dtype == np.uint8 else out
        return results

    def __repr__(self) -> str:
        return f"MaskBackground(alpha={self.alpha}, continue_on_failure={self.continue_on_failure})"


def _decode_segmentation(segmentation, size: tuple[int, int]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    h, w = size
    if isinstance(segmentation, list):
        rles = mask_utils.frPyObjects(segmentation, h, w)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, h, w)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)
