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
    """Single-mask SAM output for N people on the predictor's one image: masks
    (N, H, W) bool on its device and predicted IoUs (N,); :func:`decode_people`
    for a batch of one image."""
    masks, scores = decode_people(predictor, points, labels, np.zeros(len(points), np.int64), boxes)
    return masks[0], scores


def decode_people(
    predictor: Any,
    points: np.ndarray,
    labels: np.ndarray,
    image_index: np.ndarray,
    boxes: np.ndarray | None = None,
    max_rows: int = 32,
) -> tuple[list[torch.Tensor], np.ndarray]:
    """Single-mask SAM output for N people of the predictor's images.

    Args:
        predictor: a ``SAM2ImagePredictor`` whose images (features of B images,
            ``_orig_hw`` of each) are set.
        points: (N, P, 2) image xy; ``labels`` (N, P): 1 positive, 0 negative,
            -1 unused (any position; the used ones keep their order).
        image_index: (N,) the image of each person, in 0..B-1.
        boxes: (N, 4) xyxy box prompts, or None.
        max_rows: people per decoder call at most, which bounds the per-person
            copies of the image features the decoder makes.
    Returns:
        masks: for every image b, (N_b, H_b, W_b) bool on the predictor's device,
        its people in row order (post-processed as the predictor's transforms
        do), and predicted IoUs (N,) float32.
    """
    sizes = [tuple(hw) for hw in predictor._orig_hw]
    image_index = np.asarray(image_index, np.int64)
    dev = predictor.device
    masks = [
        torch.zeros((int((image_index == b).sum()), *hw), dtype=torch.bool, device=dev)
        for b, hw in enumerate(sizes)
    ]
    # Row r is row position[r] among its image's people.
    position = np.zeros(len(points), np.int64)
    for b in range(len(sizes)):
        position[image_index == b] = np.arange(int((image_index == b).sum()))
    scores = np.zeros(len(points), dtype=np.float32)
    used = labels != PAD_LABEL
    counts = used.sum(1)
    for count in np.unique(counts):
        group = np.flatnonzero(counts == count)
        for rows in np.array_split(group, -(-len(group) // max_rows)):
            # A stable sort brings each row's used entries to the front, in order.
            first = np.argsort(~used[rows], axis=1, kind="stable")[:, :count]
            low_res, iou = _decode(
                predictor, np.take_along_axis(points[rows], first[..., None], 1),
                np.take_along_axis(labels[rows], first, 1), image_index[rows],
                None if boxes is None else boxes[rows],
            )
            scores[rows] = iou[:, 0].float().cpu().numpy()
            for b in np.unique(image_index[rows]):
                mine = image_index[rows] == b
                logits = low_res[torch.from_numpy(mine).to(dev)]
                full = predictor._transforms.postprocess_masks(logits, sizes[b])
                target = torch.from_numpy(position[rows][mine]).to(dev)
                masks[b][target] = (full > predictor.mask_threshold)[:, 0]
    return masks, scores


def _decode(
    predictor: Any, points: np.ndarray, labels: np.ndarray, image_index: np.ndarray,
    boxes: np.ndarray | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-resolution logits (n, 1, 256, 256) and IoUs (n, 1) of people with the
    same number of points, each on its own image's features: what
    ``SAM2ImagePredictor._prep_prompts`` + ``_predict`` compute per image, with
    the image embedding taken per person instead of repeated for one image."""
    model, transforms, dev = predictor.model, predictor._transforms, predictor.device
    sizes = [tuple(hw) for hw in predictor._orig_hw]
    coords = torch.as_tensor(points, dtype=torch.float, device=dev).clone()
    box_coords = None if boxes is None else torch.as_tensor(
        boxes, dtype=torch.float, device=dev).reshape(-1, 2, 2).clone()
    for b in np.unique(image_index):  # normalised by each image's own size
        mine = torch.from_numpy(image_index == b).to(dev)
        coords[mine] = transforms.transform_coords(coords[mine], normalize=True, orig_hw=sizes[b])
        if box_coords is not None:
            box_coords[mine] = transforms.transform_coords(box_coords[mine], normalize=True, orig_hw=sizes[b])
    point_labels = torch.as_tensor(labels, dtype=torch.int, device=dev)
    if box_coords is not None:  # box corners first, as sam2 orders them
        box_labels = torch.tensor([[2, 3]], dtype=torch.int, device=dev).repeat(len(box_coords), 1)
        coords = torch.cat([box_coords, coords], dim=1)
        point_labels = torch.cat([box_labels, point_labels], dim=1)
    sparse, dense = model.sam_prompt_encoder(points=(coords, point_labels), boxes=None, masks=None)
    rows = torch.from_numpy(image_index).to(dev)
    features = predictor._features
    low_res, iou, _, _ = model.sam_mask_decoder(
        image_embeddings=features["image_embed"][rows],
        image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
        repeat_image=False,
        high_res_features=[level[rows] for level in features["high_res_feats"]],
    )
    return low_res, iou
