"""Batched top-down pose on the device: crops, mask conditioning, flip test,
heatmap decoding.

The per-sample mmpose pipeline warps each person with ``cv2.warpAffine`` and
decodes each heatmap in numpy. Here every person of an iteration goes through
one batched crop (one ``grid_sample``; with MaskPose conditioning one gather of
the 4 bilinear neighbours), one forward pass (original and flipped crops in the
same batch) and one vectorised DARK-UDP decode, reproducing mmpose's arithmetic:
``GetBBoxCenterScale`` (padding), ``MaskBackground`` (dimming at full
resolution), ``TopdownAffine`` (UDP warp, aspect fix), ``UDPHeatmap.decode``
(argmax + ``refine_keypoints_dark_udp``) and
``TopdownPoseEstimator.add_pred_to_datasample`` (back to image coordinates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class CropBatch:
    """Crops of N people: ``images`` (N, 3, h, w) float in 0-255 RGB, and the
    ``centers`` / ``scales`` (N, 2) in image pixels that map them back."""

    images: torch.Tensor
    centers: torch.Tensor
    scales: torch.Tensor

    @staticmethod
    def cat(items: list[CropBatch]) -> CropBatch:
        """The crops of several images, as one batch."""
        if len(items) == 1:
            return items[0]
        return CropBatch(*(torch.cat(parts) for parts in zip(
            *((i.images, i.centers, i.scales) for i in items), strict=True)))


def boxes_to_center_scale(
    boxes: torch.Tensor, input_size: tuple[int, int], padding: float = 1.25
) -> tuple[torch.Tensor, torch.Tensor]:
    """mmpose's ``bbox_xyxy2cs`` + ``TopdownAffine._fix_aspect_ratio``.

    Args:
        boxes: (N, 4) xyxy.
        input_size: model input (w, h).
    Returns:
        centers (N, 2), scales (N, 2) with aspect ratio w/h of ``input_size``.
    """
    centers = (boxes[:, :2] + boxes[:, 2:]) * 0.5
    wh = (boxes[:, 2:] - boxes[:, :2]) * padding
    aspect = input_size[0] / input_size[1]
    w, h = wh[:, 0], wh[:, 1]
    wider = w > h * aspect
    scales = torch.stack(
        [torch.where(wider, w, h * aspect), torch.where(wider, w / aspect, h)], dim=1
    )
    return centers, scales


def crop_people(
    image: torch.Tensor,
    boxes: torch.Tensor,
    input_size: tuple[int, int],
    padding: float = 1.25,
    masks: torch.Tensor | None = None,
    mask_alpha: float = 0.0,
) -> CropBatch:
    """UDP-affine crops of every box, bilinear with zero padding (``cv2.warpAffine``).

    Args:
        image: (3, H, W) float RGB, 0-255 (whole numbers), on the target device.
        boxes: (N, 4) xyxy.
        masks: (N, H, W) bool person masks (MaskPose conditioning, used when
            ``mask_alpha`` > 0): person i's crop is cut from the image dimmed at
            full resolution, ``round(img * (1 - alpha) + img * mask_i * alpha)``
            as the reference's ``cv2.addWeighted`` gives it, and only then warped.
            An all-True mask leaves the crop undimmed.
    """
    w_out, h_out = input_size
    centers, scales = boxes_to_center_scale(boxes.float(), input_size, padding)
    dev = image.device
    # Output pixel (x', y') samples source x = x' * s_w / (w_out - 1) + c_x - s_w / 2 (UDP).
    xs = torch.arange(w_out, device=dev, dtype=torch.float32)
    ys = torch.arange(h_out, device=dev, dtype=torch.float32)
    src_x = xs[None] * (scales[:, :1] / (w_out - 1)) + (centers[:, :1] - scales[:, :1] / 2)
    src_y = ys[None] * (scales[:, 1:] / (h_out - 1)) + (centers[:, 1:] - scales[:, 1:] / 2)
    if masks is not None and mask_alpha > 0:
        crops = _dimmed_bilinear(image, masks, src_x, src_y, mask_alpha)
    else:
        crops = _bilinear(image, src_x, src_y)
    return CropBatch(crops, centers, scales)


def _bilinear(image: torch.Tensor, src_x: torch.Tensor, src_y: torch.Tensor) -> torch.Tensor:
    """One ``grid_sample`` of the shared image at the separable source
    coordinates ``src_x`` (N, w_out), ``src_y`` (N, h_out): (N, 3, h_out, w_out)."""
    _, height, width = image.shape
    n, w_out, h_out = len(src_x), src_x.shape[1], src_y.shape[1]
    # align_corners=True: -1 and 1 are the centres of the first and last pixel.
    gx = src_x / max(width - 1, 1) * 2 - 1
    gy = src_y / max(height - 1, 1) * 2 - 1
    grid = torch.stack(
        [gx[:, None, :].expand(n, h_out, w_out), gy[:, :, None].expand(n, h_out, w_out)], dim=-1
    )
    return F.grid_sample(
        image[None].expand(n, -1, -1, -1), grid, mode="bilinear", padding_mode="zeros",
        align_corners=True,
    )


def _dimmed_bilinear(
    image: torch.Tensor, masks: torch.Tensor, src_x: torch.Tensor, src_y: torch.Tensor, alpha: float
) -> torch.Tensor:
    """Bilinear crops of each person's own dimmed image, without making it.

    The dimmed image of person i differs from the original only through its
    mask, so each crop pixel gathers its 4 source neighbours from the shared
    image and from mask i, dims those values as the reference does at full
    resolution (rounded, as its uint8 image is) and interpolates them: N
    full-resolution images are never materialised, only N x 3 x h x w values
    per neighbour.
    """
    _, height, width = image.shape
    n, w_out, h_out = len(src_x), src_x.shape[1], src_y.shape[1]
    flat_image = image.reshape(3, -1)
    flat_masks = masks.reshape(n, -1)
    x0, y0 = src_x.floor(), src_y.floor()
    fx, fy = src_x - x0, src_y - y0
    x0, y0 = x0.long(), y0.long()
    keep, dim = 1.0 - alpha, alpha
    crops = image.new_zeros((3, n, h_out, w_out))
    for dy in (0, 1):
        yy = y0 + dy
        # Zero weight outside the image: cv2's BORDER_CONSTANT / grid_sample's zeros.
        wy = (fy if dy else 1 - fy) * ((yy >= 0) & (yy < height))
        row = yy.clamp(0, height - 1) * width
        for dx in (0, 1):
            xx = x0 + dx
            wx = (fx if dx else 1 - fx) * ((xx >= 0) & (xx < width))
            index = row[:, :, None] + xx.clamp(0, width - 1)[:, None, :]  # (N, h_out, w_out)
            values = flat_image[:, index]  # (3, N, h_out, w_out)
            inside = flat_masks.gather(1, index.reshape(n, -1)).reshape(index.shape).to(values.dtype)
            # addWeighted(img, 1 - a, img * m, a, 0): the sum in float32, rounded half to even.
            dimmed = torch.round(values * keep + (values * inside) * dim)
            crops += dimmed * (wy[:, :, None] * wx[:, None, :])
    return crops.permute(1, 0, 2, 3).contiguous()


def gaussian_kernel1d(size: int, device: torch.device) -> torch.Tensor:
    """OpenCV's Gaussian kernel for ``sigma=0`` (derived from the size)."""
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(size, device=device, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return (k / k.sum()).float()


def decode_udp_heatmaps(
    heatmaps: torch.Tensor, blur_kernel_size: int = 11
) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax + DARK-UDP refinement of every heatmap at once.

    Args:
        heatmaps: (N, K, H, W).
    Returns:
        keypoints (N, K, 2) in heatmap pixels, scores (N, K) (heatmap maxima).
    """
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    scores, index = flat.max(dim=-1)
    locs = torch.stack([index % w, index // w], dim=-1).float()
    locs[scores <= 0] = -1  # mmpose marks keypoints with no positive response

    # Modulate: Gaussian blur with zero padding, rescaled to the original maximum.
    kernel = gaussian_kernel1d(blur_kernel_size, heatmaps.device)
    pad = (blur_kernel_size - 1) // 2
    hm = heatmaps.reshape(n * k, 1, h, w).float()
    hm = F.conv2d(F.pad(hm, (pad, pad, pad, pad)), kernel.view(1, 1, 1, -1))
    hm = F.conv2d(hm, kernel.view(1, 1, -1, 1)).reshape(n, k, h, w)
    blurred_max = hm.reshape(n, k, -1).amax(-1).clamp_min(torch.finfo(torch.float32).tiny)
    hm = hm * (scores.float() / blurred_max)[..., None, None]
    hm = hm.clamp(1e-3, 50.0).log()
    hm = F.pad(hm.reshape(n * k, 1, h, w), (1, 1, 1, 1), mode="replicate").reshape(n, k, h + 2, w + 2)

    px = locs[..., 0].long() + 1
    py = locs[..., 1].long() + 1
    flat = hm.reshape(n, k, -1)
    stride = w + 2

    def at(dx: int, dy: int) -> torch.Tensor:
        # Clamped: keypoints with no positive response (-1) would index out of range.
        index = ((py + dy) * stride + (px + dx)).clamp(0, flat.shape[-1] - 1)
        return flat.gather(-1, index[..., None])[..., 0]

    i_ = at(0, 0)
    ix1, ix1_ = at(1, 0), at(-1, 0)
    iy1, iy1_ = at(0, 1), at(0, -1)
    ix1y1, ix1_y1_ = at(1, 1), at(-1, -1)
    dx = 0.5 * (ix1 - ix1_)
    dy = 0.5 * (iy1 - iy1_)
    dxx = ix1 - 2 * i_ + ix1_
    dyy = iy1 - 2 * i_ + iy1_
    dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
    eps = float(np.finfo(np.float32).eps)
    # Hessian^-1 @ gradient in closed form: a flat patch (singular Hessian)
    # gets no offset instead of stopping the batch, as linalg.inv would.
    a, b, d = (dxx + eps).double(), dxy.double(), (dyy + eps).double()
    det = a * d - b * b
    safe = torch.where(det == 0, torch.ones_like(det), det)
    offset = torch.stack(
        [(d * dx.double() - b * dy.double()) / safe, (a * dy.double() - b * dx.double()) / safe], dim=-1
    ).float()
    offset = torch.where(((scores > 0) & (det != 0))[..., None], offset, torch.zeros_like(offset))
    return locs - torch.nan_to_num(offset), scores


def heatmap_to_image(
    keypoints: torch.Tensor,
    heatmap_size: tuple[int, int],
    input_size: tuple[int, int],
    centers: torch.Tensor,
    scales: torch.Tensor,
) -> torch.Tensor:
    """Heatmap pixels → model input pixels (UDP) → image pixels (mmpose's
    ``add_pred_to_datasample``). Shapes: keypoints (N, K, 2), centers/scales (N, 2)."""
    hw = torch.tensor([heatmap_size[0] - 1, heatmap_size[1] - 1], device=keypoints.device)
    size = torch.tensor(input_size, device=keypoints.device, dtype=torch.float32)
    in_input = keypoints / hw * size
    return in_input / size * scales[:, None] + centers[:, None] - 0.5 * scales[:, None]
