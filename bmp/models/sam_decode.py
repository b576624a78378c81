"""SAM 2's prompt encoder and mask decoder over many people at once.

A batched decoder call gives every row as many prompt tokens as the widest
row; narrower rows would get extra not-a-point tokens, and SAM's answer changes
with them. So people are grouped by their number of prompt points and each
group is one call, in which every person has exactly its own points (and SAM's
own single padding token when there is no box): the masks equal per-person
``SAM2ImagePredictor.predict`` calls with the same points.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..prompts import PAD_LABEL


def decode_by_point_count(
    predictor: Any,
    points: np.ndarray,
    labels: np.ndarray,
    boxes: np.ndarray | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """Single-mask SAM output for N people on the predictor's current image.

    Args:
        predictor: a ``SAM2ImagePredictor`` whose image (features) is set.
        points: (N, P, 2) image xy; ``labels`` (N, P): 1 positive, 0 negative,
            -1 unused (any position; the used ones keep their order).
        boxes: (N, 4) xyxy box prompts, or None.
    Returns:
        masks (N, H, W) bool on the predictor's device (post-processed as the
        predictor's transforms do) and predicted IoUs (N,) float32.
    """
    n = len(points)
    h, w = predictor._orig_hw[-1]
    masks = torch.zeros((n, h, w), dtype=torch.bool, device=predictor.device)
    scores = np.zeros(n, dtype=np.float32)
    used = labels != PAD_LABEL
    counts = used.sum(1)
    for count in np.unique(counts):
        rows = np.flatnonzero(counts == count)
        # A stable sort brings each row's used entries to the front, in order.
        first = np.argsort(~used[rows], axis=1, kind="stable")[:, :count]
        group_points = np.take_along_axis(points[rows], first[..., None], 1)
        group_labels = np.take_along_axis(labels[rows], first, 1)
        _, coords, point_labels, box = predictor._prep_prompts(
            group_points, group_labels, None if boxes is None else boxes[rows], None,
            normalize_coords=True,
        )
        group_masks, iou, _ = predictor._predict(coords, point_labels, box, None, multimask_output=False)
        masks[torch.from_numpy(rows).to(masks.device)] = group_masks[:, 0].bool()
        scores[rows] = iou[:, 0].float().cpu().numpy()
    return masks, scores
