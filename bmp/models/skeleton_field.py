"""A per-person distance field to the body drawn from its visible keypoints.

The body is modelled as a union of parts: a sausage (capsule) around each COCO
limb, a disc at each keypoint and the filled torso polygon. Each part has a
radius relative to the person's scale ``s`` (square root of the box area), so
the *normalised* distance ``u = distance / (radius * s)`` is < 1 inside the part.
The field is the minimum of ``u`` over a person's parts: 0 on the drawn skeleton
(the limb axes and the pixel of every visible keypoint), ``torso_distance``
inside the torso polygon -- body for sure, but where another person's limb or
keypoint in front of it should still win.

Used by :class:`~bmp.models.pose2instance.Pose2InstanceSegmenter` (Pose2Instance's
per-person skeleton distance transform).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..keypoints import SKELETON, TORSO

# Radii relative to s = sqrt(box area). For an upright person s is about 0.6 of
# the height, so e.g. 0.055 s for the upper arm is ~3.3 % of the height (a
# ~7 %-of-height wide sleeve); thighs and the head are wider, forearms thinner.
# Set from body proportions, then scaled once (x 1.2, not per part) on the
# shared COCO sample's ground truth.
_LIMB_RADIUS = {
    (15, 13): 0.06, (16, 14): 0.06,  # shins
    (13, 11): 0.08, (14, 12): 0.08,  # thighs
    (11, 12): 0.07, (5, 11): 0.07, (6, 12): 0.07, (5, 6): 0.06,  # torso outline
    (5, 7): 0.055, (6, 8): 0.055,  # upper arms
    (7, 9): 0.045, (8, 10): 0.045,  # forearms
    (1, 2): 0.09, (0, 1): 0.09, (0, 2): 0.09, (1, 3): 0.09, (2, 4): 0.09,  # face
    (3, 5): 0.07, (4, 6): 0.07,  # ears to shoulders (neck)
}
#: Disc radius at each keypoint: the head, hands and feet are blobs around a point.
KEYPOINT_RADIUS = np.array(
    [0.1, 0.1, 0.1, 0.1, 0.1,  # nose, eyes, ears
     0.07, 0.07, 0.055, 0.055, 0.055, 0.055,  # shoulders, elbows, wrists
     0.08, 0.08, 0.07, 0.07, 0.06, 0.06],  # hips, knees, ankles
    dtype=np.float32,
)

#: Parts as (start keypoint, end keypoint, radius); a keypoint disc has start == end.
PARTS = np.array(
    [(a, b, _LIMB_RADIUS[(a, b)]) for a, b in SKELETON]
    + [(k, k, float(r)) for k, r in enumerate(KEYPOINT_RADIUS)],
    dtype=np.float32,
)


def person_scales(boxes: np.ndarray, keypoints: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(N,) scale ``s`` per person: sqrt of the xyxy box area, or of the visible
    keypoints' extent (x 1.2, COCO boxes are a bit larger) when the box is empty.

    Args:
        boxes: (N, 4) xyxy. keypoints: (N, 17, 2). valid: (N, 17) bool.
    """
    wh = np.clip(boxes[:, 2:] - boxes[:, :2], 0, None)
    scale = np.sqrt(wh[:, 0] * wh[:, 1])
    for i in np.flatnonzero(scale < 1):
        pts = keypoints[i][valid[i]]
        extent = pts.max(0) - pts.min(0) if len(pts) else np.zeros(2)
        scale[i] = 1.2 * np.sqrt(max(extent[0] * extent[1], extent.max() ** 2 / 4, 1.0))
    return np.maximum(scale, 1.0).astype(np.float32)


def skeleton_distance(
    keypoints: torch.Tensor,
    valid: torch.Tensor,
    scales: torch.Tensor,
    size: tuple[int, int],
    stride: int = 1,
    torso_distance: float = 0.2,
    max_elements: int = 1 << 22,
) -> torch.Tensor:
    """Normalised distance of every pixel to each person's body parts.

    The full-image field; :class:`~bmp.models.pose2instance.Pose2InstanceSegmenter`
    evaluates the same field per person on a grid over its reach instead
    (:func:`skeleton_distance_grid`, :func:`body_reach_boxes`).

    Args:
        keypoints: (N, 17, 2) xy pixels (pixel centres at integer coordinates).
        valid: (N, 17) bool, the keypoints to draw from.
        scales: (N,) person scale ``s`` in pixels.
        size: (H, W) of the image.
        stride: evaluate every ``stride``-th pixel and interpolate bilinearly in
            between (``u`` is continuous, so 2 costs little accuracy for 4x speed).
        torso_distance: ``u`` inside the torso polygon.
        max_elements: pixels are processed in chunks so that one (N, parts,
            chunk) temporary stays under this many elements.
    Returns:
        (N, H, W) float32 ``u``; ``inf`` everywhere for a person with no valid
        keypoint.
    """
    h, w = size
    gh, gw = -(-(h - 1) // stride) + 1, -(-(w - 1) // stride) + 1  # the grid covers the image
    out = skeleton_distance_grid(
        keypoints, valid, scales, (0, 0), stride, (gh, gw), torso_distance, max_elements
    )
    if stride > 1:
        full = ((gh - 1) * stride + 1, (gw - 1) * stride + 1)
        out = F.interpolate(out[None], size=full, mode="bilinear", align_corners=True)[0]
        out = out[:, :h, :w].contiguous()
    # The drawn skeleton includes each visible keypoint's own pixel, exactly
    # (interpolation would blur it).
    person, joint = torch.nonzero(valid, as_tuple=True)
    xy = keypoints[person, joint].round().long()
    inside_image = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    out[person[inside_image], xy[inside_image, 1], xy[inside_image, 0]] = 0.0
    out[~valid.any(1)] = float("inf")
    return out


def skeleton_distance_grid(
    keypoints: torch.Tensor,
    valid: torch.Tensor,
    scales: torch.Tensor,
    origin: tuple[int, int],
    step: int,
    shape: tuple[int, int],
    torso_distance: float = 0.2,
    max_elements: int = 1 << 22,
) -> torch.Tensor:
    """``u`` at the nodes ``(x0 + step * j, y0 + step * i)`` of a regular grid.

    Args:
        keypoints, valid, scales, torso_distance, max_elements: as for
            :func:`skeleton_distance`.
        origin: (x0, y0) pixel of node (0, 0); nodes may lie outside the image.
        step: pixels between nodes.
        shape: (rows, cols) of the grid.
    Returns:
        (N, rows, cols) float32; no keypoint pixel is zeroed, no invalid person
        set to ``inf`` (``u`` is then ~1e7, "far").
    """
    gh, gw = shape
    n = len(keypoints)
    device = keypoints.device
    parts = torch.as_tensor(PARTS, device=device)
    start, end = parts[:, 0].long(), parts[:, 1].long()
    part_ok = valid[:, start] & valid[:, end]  # (N, P)
    # A part that is not drawn is moved far away instead of masked: no inf * 0.
    far = torch.tensor(1e7, device=device)
    a = torch.where(part_ok[..., None], keypoints[:, start], far)  # (N, P, 2)
    b = torch.where(part_ok[..., None], keypoints[:, end], far)
    ab = b - a
    inv_len2 = 1.0 / (ab * ab).sum(-1).clamp_min(1e-6)
    inv_radius2 = (1.0 / (parts[None, :, 2] * scales[:, None])) ** 2  # (N, P)
    edges = _torso_edges(keypoints, valid)  # (N, 4, 2, 2)

    ys, xs = torch.meshgrid(
        torch.arange(gh, device=device, dtype=torch.float32) * step + origin[1],
        torch.arange(gw, device=device, dtype=torch.float32) * step + origin[0],
        indexing="ij",
    )
    pixels = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)  # (gh * gw, 2)
    out = torch.empty(n, gh * gw, dtype=torch.float32, device=device)
    chunk = max(1024, max_elements // max(1, n * len(parts)))
    ax, ay = a[..., 0, None], a[..., 1, None]  # (N, P, 1)
    abx, aby = ab[..., 0, None], ab[..., 1, None]
    for lo in range(0, gh * gw, chunk):
        p = pixels[lo : lo + chunk]  # (C, 2)
        apx, apy = p[:, 0] - ax, p[:, 1] - ay  # (N, P, C)
        t = ((apx * abx + apy * aby) * inv_len2[..., None]).clamp_(0, 1)
        dist2 = (apx - t * abx).square_() + (apy - t * aby).square_()
        u2 = (dist2 * inv_radius2[..., None]).amin(1)  # (N, C)
        inside = _inside(edges, p)
        u = u2.sqrt_()
        out[:, lo : lo + chunk] = torch.where(inside, u.clamp(max=torso_distance), u)
    return out.view(n, gh, gw)


def body_reach_boxes(
    keypoints: np.ndarray, valid: np.ndarray, scales: np.ndarray, reach: float
) -> np.ndarray:
    """(N, 4) xyxy boxes outside which each person's ``u`` is >= ``reach``:
    the visible keypoints' extent grown by ``reach`` x the largest drawn part
    radius x ``s``. Every part lies within the keypoints' extent (limbs join
    keypoints, the torso polygon has keypoints as corners) and no limb is wider
    than the disc of one of its ends, so a pixel farther than that from the
    extent is farther than ``reach`` radii from every part. NaN rows for a
    person with no valid keypoint.
    """
    boxes = np.full((len(keypoints), 4), np.nan, np.float32)
    for i in np.flatnonzero(valid.any(1)):
        pts = keypoints[i][valid[i]]
        margin = reach * float(KEYPOINT_RADIUS[valid[i]].max()) * float(scales[i])
        boxes[i, :2] = pts.min(0) - margin
        boxes[i, 2:] = pts.max(0) + margin
    return boxes


def _torso_edges(keypoints: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(N, 4, 2, 2) edges (start, end) of the polygon through the visible torso
    keypoints (shoulders, hips) in order; degenerate (start == end) edges pad it
    and any person with fewer than 3 visible torso keypoints."""
    n = len(keypoints)
    torso = list(TORSO)
    edges = torch.zeros(n, 4, 2, 2, dtype=keypoints.dtype, device=keypoints.device)
    vis = valid[:, torso].cpu().numpy()
    for i in np.flatnonzero(vis.sum(1) >= 3):  # tiny per-person bookkeeping, no pixels
        idx = [torso[j] for j in np.flatnonzero(vis[i])]
        poly = keypoints[i, idx]
        edges[i, : len(idx), 0] = poly
        edges[i, : len(idx), 1] = poly.roll(-1, dims=0)
    return edges


def _inside(edges: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(N, C) bool: is each point inside each person's polygon (even-odd rule)?

    Args:
        edges: (N, E, 2, 2). points: (C, 2).
    """
    a, b = edges[:, :, None, 0], edges[:, :, None, 1]  # (N, E, 1, 2)
    px, py = points[None, None, :, 0], points[None, None, :, 1]
    straddles = (a[..., 1] > py) != (b[..., 1] > py)  # never true for a degenerate edge
    dy = b[..., 1] - a[..., 1]
    safe_dy = torch.where(dy == 0, torch.ones_like(dy), dy)
    x_cross = a[..., 0] + (py - a[..., 1]) * (b[..., 0] - a[..., 0]) / safe_dy
    crossings = (straddles & (px < x_cross)).sum(1)
    return crossings % 2 == 1
