"""Pose2Seg's skeleton features: part-affinity fields and part confidence maps.

Drawn in the aligned window from the aligned keypoints, 55 channels per person:

- channels ``2l, 2l+1`` (l < 19): the part-affinity field (PAF) of COCO limb
  ``l``: the unit vector from its first to its second keypoint on pixels within
  ``paf_width`` of the limb segment, 0 elsewhere or when an end is not visible;
- channels ``38 + k`` (k < 17): the confidence map of keypoint ``k``, a Gaussian
  of std ``sigma`` pixels around it, 0 when it is not visible.
"""

from __future__ import annotations

import torch

from ...keypoints import SKELETON

NUM_LIMBS = len(SKELETON)
NUM_CHANNELS = 2 * NUM_LIMBS + 17  # 38 PAF + 17 confidence maps = 55


def skeleton_features(
    keypoints: torch.Tensor,
    valid: torch.Tensor,
    size: int = 64,
    sigma: float = 2.0,
    paf_width: float = 1.5,
) -> torch.Tensor:
    """(N, 55, size, size) skeleton features.

    Args:
        keypoints: (N, 17, 2) in aligned-window pixels. valid: (N, 17) bool.
        sigma: std of the confidence Gaussians, pixels.
        paf_width: distance (pixels) from a limb segment within which its PAF is set.
    """
    n = len(keypoints)
    device, dtype = keypoints.device, keypoints.dtype
    ys, xs = torch.meshgrid(
        torch.arange(size, device=device, dtype=dtype),
        torch.arange(size, device=device, dtype=dtype),
        indexing="ij",
    )
    grid = torch.stack([xs, ys], -1)  # (S, S, 2)

    # Confidence maps: (N, 17, S, S).
    d2 = ((grid[None, None] - keypoints[:, :, None, None]) ** 2).sum(-1)
    confidence = torch.exp(-d2 / (2 * sigma**2)) * valid[:, :, None, None]

    # PAFs: (N, 19, 2, S, S).
    start = torch.tensor([a for a, _ in SKELETON], device=device)
    end = torch.tensor([b for _, b in SKELETON], device=device)
    a, b = keypoints[:, start], keypoints[:, end]  # (N, L, 2)
    limb = b - a
    length = limb.norm(dim=-1).clamp_min(1e-6)  # (N, L)
    direction = limb / length[..., None]
    rel = grid[None, None] - a[:, :, None, None]  # (N, L, S, S, 2)
    along = (rel * direction[:, :, None, None]).sum(-1)
    across = (rel[..., 0] * direction[:, :, None, None, 1] - rel[..., 1] * direction[:, :, None, None, 0])
    on_limb = (along >= -paf_width) & (along <= length[:, :, None, None] + paf_width)
    on_limb &= across.abs() <= paf_width
    on_limb &= (valid[:, start] & valid[:, end])[:, :, None, None]
    paf = direction[:, :, :, None, None] * on_limb[:, :, None].to(dtype)  # (N, L, 2, S, S)
    return torch.cat([paf.reshape(n, 2 * NUM_LIMBS, size, size), confidence], 1)
