"""Sparsemax (Martins & Astudillo, 2016): a softmax whose output can be exactly zero."""

from __future__ import annotations

import torch


def sparsemax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Euclidean projection of ``logits`` onto the probability simplex along ``dim``:
    ``max(z - tau, 0)`` with ``tau`` chosen so each slice sums to 1."""
    z = logits.transpose(dim, -1)
    sorted_z, _ = torch.sort(z, dim=-1, descending=True)
    cumsum = sorted_z.cumsum(-1)
    k = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    support = 1 + k * sorted_z > cumsum
    k_max = support.sum(-1, keepdim=True)
    tau = (cumsum.gather(-1, k_max - 1) - 1) / k_max.to(z.dtype)
    return torch.clamp(z - tau, min=0).transpose(dim, -1)
