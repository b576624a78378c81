"""Affine-Align (Pose2Seg): map each person onto its best-fitting pose template.

Per person and template, a least-squares similarity transform (rotation, uniform
scale, translation), with or without a mirror flip, maps the visible keypoints
onto the template's valid keypoints (at least 3 shared). The fit is scored by
``exp(-error / (2 sigma^2))`` times the share of the person's visible keypoints
the template has; the best transform wins. A person no template fits is aligned
by its box instead. Templates live in the unit square; the aligned window of
``size`` x ``size`` pixels shows the unit square plus ``margin`` on every side.

Coordinates are pixels with pixel centres at integers (COCO keypoints); all
matrices are (N, 2, 3) affine maps of column vectors ``[x, y, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

MIN_SHARED_POINTS = 3


@dataclass
class Alignment:
    """One Affine-Align result per person.

    - ``to_aligned`` (N, 2, 3): image pixels -> aligned window pixels.
    - ``scores`` (N,): fit quality in [0, 1]; 0 for a box-aligned person.
    - ``template`` (N,) int64: the chosen template, -1 for a box-aligned person.
    - ``reflected`` (N,) bool: the chosen transform mirrors the person.
    """

    to_aligned: torch.Tensor
    scores: torch.Tensor
    template: torch.Tensor
    reflected: torch.Tensor


def apply_affine(matrices: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(N, P, 2) points mapped by (N, 2, 3) matrices."""
    return points @ matrices[:, :, :2].transpose(1, 2) + matrices[:, None, :, 2]


def invert_affine(matrices: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) inverses of (N, 2, 3) invertible affine maps."""
    linear_inv = torch.linalg.inv(matrices[:, :, :2])
    return torch.cat([linear_inv, -linear_inv @ matrices[:, :, 2:]], 2)


def compose_affine(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) map ``x -> outer(inner(x))``; either may be (1, 2, 3)."""
    linear = outer[:, :, :2] @ inner[:, :, :2]
    shift = outer[:, :, :2] @ inner[:, :, 2:] + outer[:, :, 2:]
    return torch.cat([linear, shift], 2)


def scale_matrix(
    fx: float, fy: float | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(1, 2, 3) map between pixel grids whose sizes differ by ``fx`` (``fy``)
    (new = f * old), pixel centres at integers: ``x' = f (x + 0.5) - 0.5``."""
    fy = fx if fy is None else fy
    return torch.tensor([[[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5]]], device=device)


def fit_similarity(
    src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor, reflect: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted least-squares similarity transform ``src -> dst``, closed form.

    Without ``reflect`` the linear part is ``[[a, -b], [b, a]]``; with it
    ``[[a, b], [b, -a]]`` (a mirror flip followed by a similarity).

    Args:
        src, dst: (B, P, 2) corresponding points. weights: (B, P) >= 0.
    Returns:
        ``matrices`` (B, 2, 3) and ``sq_error`` (B,): the weighted mean squared
        residual ``|M src - dst|^2``.
    """
    w = weights / weights.sum(1, keepdim=True).clamp_min(1e-12)
    mu_s = (w[..., None] * src).sum(1, keepdim=True)
    mu_d = (w[..., None] * dst).sum(1, keepdim=True)
    s, d = src - mu_s, dst - mu_d
    sx, sy, dx, dy = s[..., 0], s[..., 1], d[..., 0], d[..., 1]
    norm = (w * (sx * sx + sy * sy)).sum(1).clamp_min(1e-12)
    if reflect:
        a = (w * (sx * dx - sy * dy)).sum(1) / norm
        b = (w * (sy * dx + sx * dy)).sum(1) / norm
        linear = torch.stack([torch.stack([a, b], -1), torch.stack([b, -a], -1)], -2)
    else:
        a = (w * (sx * dx + sy * dy)).sum(1) / norm
        b = (w * (sx * dy - sy * dx)).sum(1) / norm
        linear = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)
    shift = mu_d[:, 0] - (linear @ mu_s[:, 0, :, None])[..., 0]
    matrices = torch.cat([linear, shift[..., None]], 2)
    residual = apply_affine(matrices, src) - dst
    sq_error = (w * (residual**2).sum(-1)).sum(1)
    return matrices, sq_error


def unit_to_window(size: int, margin: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 2, 3) map from template (unit-square) coordinates to aligned-window
    pixels: [-margin, 1 + margin] spans the ``size`` pixels edge to edge."""
    f = size / (1 + 2 * margin)
    shift = f * margin - 0.5
    return torch.tensor([[[f, 0.0, shift], [0.0, f, shift]]], device=device)


def box_to_unit(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) maps from image pixels to each xyxy box's unit square (longer
    side 1, box centred, aspect kept) -- how templates were normalised."""
    side = (boxes[:, 2:] - boxes[:, :2]).amax(1).clamp_min(1.0)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    zero = torch.zeros_like(side)
    inv = 1.0 / side
    return torch.stack(
        [
            torch.stack([inv, zero, 0.5 - centre[:, 0] * inv], -1),
            torch.stack([zero, inv, 0.5 - centre[:, 1] * inv], -1),
        ],
        1,
    )


def align_poses(
    keypoints: torch.Tensor,
    valid: torch.Tensor,
    boxes: torch.Tensor,
    templates: torch.Tensor,
    template_valid: torch.Tensor,
    size: int = 64,
    margin: float = 0.1,
    sigma: float = 0.1,
) -> Alignment:
    """Affine-Align of every person onto its best template.

    Args:
        keypoints: (N, 17, 2) image pixels. valid: (N, 17) bool.
        boxes: (N, 4) xyxy, used for a person no template fits.
        templates: (K, 17, 2) unit-square poses. template_valid: (K, 17) bool.
        size, margin: the aligned window (see :func:`unit_to_window`).
        sigma: error scale of the score, in template units.
    """
    n, k = len(keypoints), len(templates)
    device = keypoints.device
    window = unit_to_window(size, margin, device)
    if n == 0:
        empty = torch.zeros(0, device=device)
        return Alignment(torch.zeros(0, 2, 3, device=device), empty, empty.long(), empty.bool())
    shared = valid[:, None] & template_valid[None]  # (N, K, 17)
    src = keypoints[:, None].expand(n, k, 17, 2).reshape(n * k, 17, 2)
    dst = templates[None].expand(n, k, 17, 2).reshape(n * k, 17, 2)
    weights = shared.reshape(n * k, 17).float()
    candidates, scores = [], []
    for reflect in (False, True):
        matrices, sq_error = fit_similarity(src, dst, weights, reflect)
        candidates.append(matrices.view(n, k, 2, 3))
        scores.append(torch.exp(-sq_error.view(n, k) / (2 * sigma**2)))
    candidates = torch.stack(candidates, 2)  # (N, K, 2, 2, 3)
    count = shared.sum(-1)  # (N, K)
    coverage = count / valid.sum(-1, keepdim=True).clamp_min(1)
    score = torch.stack(scores, 2) * (coverage * (count >= MIN_SHARED_POINTS))[..., None]
    best = score.view(n, 2 * k).argmax(1)  # first of equals: plain before mirrored
    best_score = score.view(n, 2 * k).gather(1, best[:, None])[:, 0]
    to_unit = candidates.view(n, 2 * k, 2, 3)[torch.arange(n, device=device), best]
    fitted = best_score > 0
    to_unit = torch.where(fitted[:, None, None], to_unit, box_to_unit(boxes))
    return Alignment(
        to_aligned=compose_affine(window, to_unit),
        scores=torch.where(fitted, best_score, torch.zeros_like(best_score)),
        template=torch.where(fitted, best // 2, torch.full_like(best, -1)),
        reflected=fitted & (best % 2 == 1),
    )


def sample_affine(
    source: torch.Tensor, out_to_source: torch.Tensor, out_size: tuple[int, int]
) -> torch.Tensor:
    """Resample ``source`` on an output grid whose pixel centres map into it by
    ``out_to_source`` (bilinear, zeros outside).

    Args:
        source: (1, C, Hs, Ws), shared by every output, or (N, C, Hs, Ws), one each.
        out_to_source: (N, 2, 3) output pixels -> source pixels.
        out_size: (h, w) of each output.
    Returns:
        (N, C, h, w).
    """
    n = len(out_to_source)
    h, w = out_size
    hs, ws = source.shape[-2:]
    # Pixels -> grid_sample's normalised coordinates (align_corners=False).
    to_norm = torch.tensor(
        [[[2.0 / ws, 0.0, 1.0 / ws - 1.0], [0.0, 2.0 / hs, 1.0 / hs - 1.0]]],
        device=source.device, dtype=source.dtype,
    )
    matrices = compose_affine(to_norm, out_to_source.to(source.dtype))
    ys, xs = torch.meshgrid(
        torch.arange(h, device=source.device, dtype=source.dtype),
        torch.arange(w, device=source.device, dtype=source.dtype),
        indexing="ij",
    )
    pixels = torch.stack([xs, ys], -1).reshape(1, h * w, 2).expand(n, h * w, 2)
    grid = apply_affine(matrices, pixels).view(n, h, w, 2)
    if len(source) == 1 and n != 1:
        # Stack every output's grid under the one source: no copy of the source per person.
        out = F.grid_sample(source, grid.reshape(1, n * h, w, 2), align_corners=False)
        return out.view(source.shape[1], n, h, w).transpose(0, 1)
    return F.grid_sample(source, grid, align_corners=False)
