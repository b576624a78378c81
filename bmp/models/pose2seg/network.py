"""The Pose2Seg network: ResNet-FPN features -> Affine-Align -> + skeleton
features -> SegModule -> a mask per person in its aligned window.

Paper defaults: ResNet-50-FPN, its stride-4 level (P2), 512-pixel input,
64 x 64 aligned window, SegModule = 7x7 stride-2 conv, 10 residual units,
bilinear x2 upsampling, one residual unit, 1x1 conv. The backbone depth, FPN
levels and widths are arguments so that small variants (ResNet-18, P2 only)
can be trained quickly; the pose templates are buffers, so a checkpoint carries
the templates it was trained with.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from .affine_align import (
    Alignment,
    align_poses,
    apply_affine,
    compose_affine,
    invert_affine,
    sample_affine,
    scale_matrix,
)
from .skeleton_features import NUM_CHANNELS, skeleton_features
from .templates import PoseTemplates

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_STRIDE = 4  # FPN level P2


class ResidualUnit(nn.Module):
    """A ResNet bottleneck unit (1x1, 3x3, 1x1 with batch norm), projected
    shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = max(out_channels // 4, 8)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
        )
        self.shortcut = (
            nn.Identity() if in_channels == out_channels
            else nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                               nn.BatchNorm2d(out_channels))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class SegModule(nn.Module):
    """(N, C_in, S, S) aligned features -> (N, 1, S, S) mask logits."""

    def __init__(self, in_channels: int, channels: int = 256, num_units: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
        )
        self.units = nn.Sequential(*[ResidualUnit(channels, channels) for _ in range(num_units)])
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.decoder = ResidualUnit(channels, channels // 2)
        self.predict = nn.Conv2d(channels // 2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict(self.decoder(self.upsample(self.units(self.stem(x)))))


def build_backbone(name: str, fpn_levels: Sequence[int], channels: int) -> nn.Module:
    """torchvision ResNet-FPN at random init (no download); output ``'0'`` is P2.

    Stages after the last FPN level are not built, so ``fpn_levels=(1,)`` is a
    cheap stem + first stage only."""
    from torchvision.models import resnet
    from torchvision.models.detection.backbone_utils import BackboneWithFPN

    levels = sorted(fpn_levels)
    if 1 not in levels or not set(levels) <= {1, 2, 3, 4}:
        raise ValueError(f"fpn_levels must be ResNet stages in 1..4 including 1 (P2), got {levels}")
    body = getattr(resnet, name)(weights=None, norm_layer=nn.BatchNorm2d)
    stage1 = body.inplanes // 8  # 64 (basic blocks) or 256 (bottlenecks)
    return BackboneWithFPN(
        body,
        return_layers={f"layer{k}": str(i) for i, k in enumerate(levels)},
        in_channels_list=[stage1 * 2 ** (k - 1) for k in levels],
        out_channels=channels,
    )


@dataclass
class Pose2SegOutput:
    """``logits`` (N, 1, S, S) in each person's aligned window, and the
    ``alignment`` that defines the window (``to_aligned``: image -> window)."""

    logits: torch.Tensor
    alignment: Alignment


class Pose2SegNet(nn.Module):
    """Pose2Seg.

    Args:
        backbone: torchvision ResNet name (``'resnet50'`` in the paper).
        fpn_levels: ResNet stages fed to the FPN (1 = stride 4 ... 4 = stride 32);
            the mask head reads level 1 (P2), refined top-down by the others.
        fpn_channels: FPN width.
        seg_channels, num_units: SegModule width and residual units.
        align_size: side of the aligned window (64).
        margin: window margin around the template's unit square.
        input_size: the longer image side fed to the backbone.
        num_templates: K, when no ``templates`` file is given (a checkpoint then
            supplies them).
        templates: a file from ``tools/pose2seg_templates.py``.
        use_skeleton: concatenate the 55 skeleton-feature channels.
        sigma, paf_width: skeleton-feature sizes in window pixels.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        fpn_levels: Sequence[int] = (1, 2, 3, 4),
        fpn_channels: int = 256,
        seg_channels: int = 256,
        num_units: int = 10,
        align_size: int = 64,
        margin: float = 0.1,
        input_size: int = 512,
        num_templates: int = 3,
        templates: str | os.PathLike | None = None,
        use_skeleton: bool = True,
        sigma: float = 2.0,
        paf_width: float = 1.5,
    ) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone, fpn_levels, fpn_channels)
        in_channels = fpn_channels + (NUM_CHANNELS if use_skeleton else 0)
        self.seg = SegModule(in_channels, seg_channels, num_units)
        self.align_size = align_size
        self.margin = margin
        self.input_size = input_size
        self.use_skeleton = use_skeleton
        self.sigma = sigma
        self.paf_width = paf_width
        if templates is not None:
            loaded = PoseTemplates.load(templates)
            poses, valid = torch.as_tensor(loaded.poses), torch.as_tensor(loaded.valid)
        else:
            poses = torch.full((num_templates, 17, 2), 0.5)
            valid = torch.zeros(num_templates, 17, dtype=torch.bool)
        self.register_buffer("templates", poses.float())
        self.register_buffer("template_valid", valid)

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[float, float]]:
        """An (H, W, 3) uint8 RGB image -> the backbone input (1, 3, H', W'),
        longer side ``input_size``, zero-padded (after normalising) to a multiple
        of 32, and the per-axis scale (fx, fy) from image to input pixels."""
        h, w = image.shape[:2]
        f = self.input_size / max(h, w)
        nw, nh = max(1, round(w * f)), max(1, round(h * f))
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
        x = torch.from_numpy(resized).float().div_(255).permute(2, 0, 1)
        mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
        std = torch.tensor(IMAGENET_STD)[:, None, None]
        x = (x - mean) / std
        ph, pw = -(-nh // 32) * 32, -(-nw // 32) * 32
        x = torch.nn.functional.pad(x, (0, pw - nw, 0, ph - nh))
        return x[None].to(self.templates.device), (nw / w, nh / h)

    def extract_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, 3, H', W') -> (B, C, H'/4, W'/4): FPN level P2."""
        return self.backbone(inputs)["0"]

    def aligned_inputs(
        self,
        features: torch.Tensor,
        input_scale: tuple[float, float],
        keypoints: torch.Tensor,
        valid: torch.Tensor,
        boxes: torch.Tensor,
        jitter: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Alignment]:
        """Affine-Align: the SegModule input of the people of one image.

        Args:
            features: (1, C, h, w) from :meth:`extract_features`.
            input_scale: (fx, fy) image -> backbone-input pixels.
            keypoints: (N, 17, 2) image pixels. valid: (N, 17) bool.
            boxes: (N, 4) xyxy, for people no template fits.
            jitter: optional (N, 2, 3) extra maps within the window (training
                augmentation), applied after the alignment.
        Returns:
            (N, C [+ 55], S, S) aligned features and the alignment.
        """
        s = self.align_size
        alignment = align_poses(
            keypoints, valid, boxes, self.templates, self.template_valid, s, self.margin
        )
        if jitter is not None:
            alignment.to_aligned = compose_affine(jitter, alignment.to_aligned)
        image_to_feature = scale_matrix(
            input_scale[0] / FEATURE_STRIDE, input_scale[1] / FEATURE_STRIDE, keypoints.device
        )
        window_to_feature = compose_affine(image_to_feature, invert_affine(alignment.to_aligned))
        x = sample_affine(features, window_to_feature, (s, s))
        if self.use_skeleton:
            aligned_kpts = apply_affine(alignment.to_aligned, keypoints)
            x = torch.cat(
                [x, skeleton_features(aligned_kpts, valid, s, self.sigma, self.paf_width)], 1
            )
        return x, alignment

    def forward(
        self,
        features: torch.Tensor,
        input_scale: tuple[float, float],
        keypoints: torch.Tensor,
        valid: torch.Tensor,
        boxes: torch.Tensor,
        jitter: torch.Tensor | None = None,
    ) -> Pose2SegOutput:
        """Mask logits for the people of one image (arguments as
        :meth:`aligned_inputs`)."""
        x, alignment = self.aligned_inputs(features, input_scale, keypoints, valid, boxes, jitter)
        return Pose2SegOutput(self.seg(x), alignment)


def random_jitter(
    n: int, size: int, generator: torch.Generator, angle: float = 30.0,
    scale: tuple[float, float] = (0.8, 1.2), shift: float = 0.1,
) -> torch.Tensor:
    """(N, 2, 3) random rotations (+-``angle`` degrees), scalings and shifts
    (fraction of ``size``) about the window centre: training augmentation."""
    theta = (torch.rand(n, generator=generator) * 2 - 1) * np.deg2rad(angle)
    factor = scale[0] + torch.rand(n, generator=generator) * (scale[1] - scale[0])
    offset = (torch.rand(n, 2, generator=generator) * 2 - 1) * shift * size
    cos, sin = torch.cos(theta) * factor, torch.sin(theta) * factor
    linear = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], 1)
    centre = torch.full((n, 2, 1), (size - 1) / 2)
    shift_vec = centre - linear @ centre + offset[..., None]
    return torch.cat([linear, shift_vec], 2)
