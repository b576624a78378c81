"""SAM 2's interactive training forward: a first click, then correction clicks.

For each person: decode the first click, then ``num_points - 1`` times sample a
correction click from the error between the GT mask and the current
prediction, append it to the prompt, and decode again with the previous
low-resolution logits as the mask prompt -- the procedure of SAM 2's
``SAM2Train._iter_correct_pt_sampling``. Gradients flow through the fed-back
logits, as there. Every step's prediction is returned for the loss.

Unlike SAM 2's video training forward, mask logits are not replaced where the
object score is negative: the image predictor used by the loop
(``SAM2ImagePredictor._predict``) never does that either.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..models.sam_features import DecoderFeatures
from .samplers import Click, MaskRefine, Pose


@dataclass
class DecodeStep:
    """One decoder pass for N people (M = 3 with multimask output, else 1).

    - ``masks``: (N, M, S, S) float32 mask logits at input resolution
    - ``low_res``: (N, M, S/4, S/4) logits
    - ``ious``: (N, M) predicted IoU
    - ``object_scores``: (N, 1) object-score logits
    - ``best``: (N,) index of the mask fed back (highest predicted IoU)
    """

    masks: torch.Tensor
    low_res: torch.Tensor
    ious: torch.Tensor
    object_scores: torch.Tensor
    best: torch.Tensor

    def best_low_res(self) -> torch.Tensor:
        """(N, 1, S/4, S/4) logits of the chosen masks."""
        rows = torch.arange(len(self.best), device=self.best.device)
        return self.low_res[rows, self.best].unsqueeze(1)

    def best_masks(self) -> torch.Tensor:
        """(N, S, S) logits of the chosen masks."""
        rows = torch.arange(len(self.best), device=self.best.device)
        return self.masks[rows, self.best]


def decode(
    model: torch.nn.Module,
    features: DecoderFeatures,
    point_coords: torch.Tensor,
    point_labels: torch.Tensor,
    mask_input: torch.Tensor | None,
    multimask_output: bool,
) -> DecodeStep:
    """Prompt encoder + mask decoder for N people, one image feature row each.

    Args:
        features: per-person rows (N, ...).
        point_coords: (N, P, 2) xy in input pixels; ``point_labels`` (N, P) int32.
        mask_input: (N, 1, S/4, S/4) logits of a previous step, or None.
    """
    sparse, dense = model.sam_prompt_encoder(
        points=(point_coords, point_labels), boxes=None, masks=mask_input
    )
    low_res, ious, _, object_scores = model.sam_mask_decoder(
        image_embeddings=features.image_embed,
        image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask_output,
        repeat_image=False,  # features are already one row per person
        high_res_features=features.high_res or None,
    )
    low_res = low_res.float()
    size = (model.image_size, model.image_size)
    masks = F.interpolate(low_res, size=size, mode="bilinear", align_corners=False)
    ious = ious.float()
    if multimask_output:
        best = ious.argmax(1)
    else:
        best = torch.zeros(len(ious), dtype=torch.long, device=ious.device)
    return DecodeStep(masks, low_res, ious, object_scores.float(), best)


def interactive_forward(
    model: torch.nn.Module,
    features: DecoderFeatures,
    gt_masks: torch.Tensor,
    poses: list[Pose],
    sampler: MaskRefine,
    num_points: int,
    rng: np.random.Generator,
    multimask_max_points: int = 1,
) -> tuple[list[DecodeStep], list[list[Click]]]:
    """Run the click-and-correct procedure for N people.

    Args:
        features: decoder features, one row per person (N, ...).
        gt_masks: (N, S, S) bool targets in the input frame.
        poses: N poses in the input frame.
        num_points: clicks per person (first + corrections) = decoder passes.
        multimask_max_points: predict 3 masks while there are at most this many clicks.
    Returns:
        the ``num_points`` decoder steps and each person's clicks in order.
    """
    n = len(gt_masks)
    device = gt_masks.device
    clicks = [[sampler.first_click(gt_masks[i], poses[i], rng)] for i in range(n)]
    steps: list[DecodeStep] = []
    mask_input = None
    for step in range(num_points):
        if step > 0:
            pred = steps[-1].best_masks().detach() > 0
            for i in range(n):
                used = {c.keypoint for c in clicks[i] if c.keypoint is not None}
                clicks[i].append(sampler.next_click(gt_masks[i], pred[i], poses[i], used, rng))
        coords = torch.tensor([[c.xy for c in row] for row in clicks], dtype=torch.float32, device=device)
        labels = torch.tensor([[c.label for c in row] for row in clicks], dtype=torch.int32, device=device)
        multimask = step + 1 <= multimask_max_points
        out = decode(model, features, coords, labels, mask_input, multimask_output=multimask)
        steps.append(out)
        mask_input = out.best_low_res()
    return steps, clicks
