"""SAM 2's training losses, summed over the interactive steps.

Per step and person: sigmoid focal loss and dice loss on the mask logits,
an L1 (or MSE) loss between the predicted IoU and the IoU the mask actually
has, and a BCE on the object score (every training person is present). With
several output masks, focal + dice are taken from the mask that fits best,
and the IoU loss from all of them (``supervise_all_iou``), as in SAM 2's
``MultiStepMultiMasksAndIous``. Sums are divided by the number of people.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import LossConfig
from .interactive import DecodeStep


def focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Sigmoid focal loss averaged over pixels.

    Args:
        logits: (N, M, H, W); targets: (N, 1, H, W) float in {0, 1}.
    Returns:
        (N, M)
    """
    targets = targets.expand_as(logits)
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.flatten(2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - soft dice (with +1 smoothing), (N, M, H, W) vs (N, 1, H, W) -> (N, M)."""
    prob = logits.sigmoid().flatten(2)
    targets = targets.flatten(2)
    numerator = 2 * (prob * targets).sum(-1)
    denominator = prob.sum(-1) + targets.sum(-1)
    return 1 - (numerator + 1) / (denominator + 1)


def iou_loss(
    logits: torch.Tensor, targets: torch.Tensor, pred_ious: torch.Tensor, use_l1: bool = True
) -> torch.Tensor:
    """Error of the predicted IoU against the IoU of the thresholded mask.

    Args:
        logits: (N, M, H, W); targets: (N, 1, H, W); pred_ious: (N, M).
    Returns:
        (N, M)
    """
    pred = logits.flatten(2) > 0
    gt = targets.flatten(2) > 0
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    actual = inter / union.clamp(min=1.0)
    if use_l1:
        return F.l1_loss(pred_ious, actual, reduction="none")
    return F.mse_loss(pred_ious, actual, reduction="none")


class MultiStepLoss:
    """The weighted sum of SAM 2's losses over every decoder step.

    Returns a dict with ``loss`` (to back-propagate) and the unweighted
    components ``focal``, ``dice``, ``iou``, ``object`` (summed over steps,
    divided by the number of people).
    """

    def __init__(self, cfg: LossConfig) -> None:
        self.cfg = cfg

    def __call__(self, steps: list[DecodeStep], gt_masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """``gt_masks``: (N, S, S) bool targets at the resolution of ``steps[i].masks``."""
        cfg = self.cfg
        n = max(len(gt_masks), 1)
        targets = gt_masks.unsqueeze(1).float()
        zero = gt_masks.new_zeros((), dtype=torch.float32)
        totals = dict.fromkeys(("focal", "dice", "iou", "object"), zero)
        for step in steps:
            focal = focal_loss(step.masks, targets, cfg.focal_alpha, cfg.focal_gamma)
            dice = dice_loss(step.masks, targets)
            iou = iou_loss(step.masks, targets, step.ious, cfg.iou_l1)
            if focal.shape[1] > 1:
                best = (cfg.mask * focal + cfg.dice * dice).argmin(1, keepdim=True)
                focal, dice = focal.gather(1, best), dice.gather(1, best)
                iou = iou.mean(1, keepdim=True) if cfg.supervise_all_iou else iou.gather(1, best)
            obj = F.binary_cross_entropy_with_logits(
                step.object_scores, torch.ones_like(step.object_scores), reduction="none"
            )
            for name, value in (("focal", focal), ("dice", dice), ("iou", iou), ("object", obj)):
                totals[name] = totals[name] + value.sum() / n
        totals["loss"] = (
            cfg.mask * totals["focal"] + cfg.dice * totals["dice"]
            + cfg.iou * totals["iou"] + cfg.object * totals["object"]
        )
        return totals
