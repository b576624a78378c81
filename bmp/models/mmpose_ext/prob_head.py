"""ProbPose-style heatmap head with per-keypoint presence, visibility, expected-OKS
and error side heads (the PMPose layout of BBoxMaskPose v2).

Parameter names follow the published PMPose checkpoints: the heatmap branch is
mmpose's ``HeatmapHead`` (``deconv_layers``, ``conv_layers``, ``final_layer``);
each side head is an ``nn.Sequential`` named ``probability_layers``,
``visibility_layers``, ``oks_layers`` or ``error_layers`` of three
[3x3 conv, BatchNorm, max-pool, ReLU] blocks that pool the 16x12 backbone map
down to 1x1, then a 1x1 conv to one value per keypoint and its activation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmpose.models.heads import HeatmapHead
from mmpose.models.utils.tta import flip_heatmaps
from mmpose.registry import MODELS
from mmpose.utils.typing import ConfigType, Features, OptConfigType, OptSampleList, Predictions
from torch import Tensor, nn

from .sparsemax import sparsemax

#: Side heads: attribute name -> (pred_instances field, final activation).
SIDE_HEADS = {
    "probability_layers": ("keypoints_probs", nn.Sigmoid),
    "visibility_layers": ("keypoints_visible", nn.Sigmoid),
    "oks_layers": ("keypoints_oks", nn.Sigmoid),
    "error_layers": ("keypoints_error", nn.ReLU),
}


@MODELS.register_module()
class ProbPoseHead(HeatmapHead):
    """Heatmaps plus per-keypoint presence / visibility / expected OKS / error.

    Args:
        in_channels: backbone feature channels (ViT-B: 768).
        out_channels: keypoints predicted (PMPose: 23; bmp uses the first 17).
        side_pool_sizes: max-pool kernel of each side-head block; their product
            must equal the backbone feature map size (16x12 for 256x192 input).
        normalize: scale of the sparsemax-normalised heatmaps (None: raw heatmaps).
        score_source: what ``keypoint_scores`` reports: ``'oks'`` (expected OKS,
            as PMPose) or ``'heatmap'`` (the heatmap maximum).
        side_loss_weight: weight of the visibility/presence BCE terms in training.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        deconv_out_channels: Sequence[int] = (256, 256),
        deconv_kernel_sizes: Sequence[int] = (4, 4),
        side_pool_sizes: Sequence[Sequence[int]] = ((4, 3), (2, 2), (2, 2)),
        normalize: float | None = 1.0,
        score_source: str = "oks",
        side_loss_weight: float = 1.0,
        loss: ConfigType = dict(type="KeypointMSELoss", use_target_weight=True),  # noqa: B006
        decoder: OptConfigType = None,
        init_cfg: OptConfigType = None,
    ) -> None:
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            deconv_out_channels=deconv_out_channels,
            deconv_kernel_sizes=deconv_kernel_sizes,
            loss=loss,
            decoder=decoder,
            init_cfg=init_cfg,
        )
        if score_source not in ("oks", "heatmap"):
            raise ValueError(f"score_source must be 'oks' or 'heatmap', got {score_source!r}")
        self.normalize = normalize
        self.score_source = score_source
        self.side_loss_weight = side_loss_weight
        for name, (_, activation) in SIDE_HEADS.items():
            setattr(self, name, _side_head(in_channels, out_channels, side_pool_sizes, activation()))

    def forward(self, feats: tuple[Tensor]) -> Tensor:
        """(B, K, H, W) heatmaps, sparsemax-normalised over each map's pixels."""
        heatmaps = super().forward(feats)
        if self.normalize is None:
            return heatmaps
        b, k, h, w = heatmaps.shape
        # Sparsemax of 2x the logits: sharper than softmax, and exactly zero far
        # from the peak, so a heatmap reads as a probability map.
        probs = sparsemax(heatmaps.reshape(b, k, h * w) / 0.5, dim=-1) * self.normalize
        return probs.clamp(0.0, 1.0).reshape(b, k, h, w)

    def forward_side(self, feats: tuple[Tensor]) -> dict[str, Tensor]:
        """Per-keypoint side outputs ``{pred field: (B, K)}`` from the last
        backbone map (detached: the side heads do not steer the backbone)."""
        x = feats[-1].detach()
        return {
            field: getattr(self, name)(x).flatten(1) for name, (field, _) in SIDE_HEADS.items()
        }

    def predict(
        self, feats: Features, batch_data_samples: OptSampleList, test_cfg: ConfigType = {}  # noqa: B006
    ) -> Predictions:
        if test_cfg.get("flip_test", False):
            flip_indices = batch_data_samples[0].metainfo["flip_indices"]
            plain, flipped = feats
            heatmaps = self.forward(plain)
            heatmaps_flip = flip_heatmaps(
                self.forward(flipped),
                flip_mode=test_cfg.get("flip_mode", "heatmap"),
                flip_indices=flip_indices,
                shift_heatmap=test_cfg.get("shift_heatmap", False),
            )
            heatmaps = (heatmaps + heatmaps_flip) * 0.5
            side = self.forward_side(plain)
            side_flip = self.forward_side(flipped)
            side = {k: (v + side_flip[k][:, flip_indices]) * 0.5 for k, v in side.items()}
        else:
            heatmaps = self.forward(feats)
            side = self.forward_side(feats)
        preds = self.decode(heatmaps)
        h, w = heatmaps.shape[-2:]
        side["keypoints_error"] = side["keypoints_error"] / float(np.hypot(h, w))
        for i, pred in enumerate(preds):
            pred.keypoints_conf = pred.keypoint_scores.copy()
            for field, values in side.items():
                setattr(pred, field, values[i : i + 1].float().cpu().numpy())
            if self.score_source == "oks":
                pred.keypoint_scores = pred.keypoints_oks.copy()
        if test_cfg.get("output_heatmaps", False):
            from mmengine.structures import PixelData

            return preds, [PixelData(heatmaps=hm) for hm in heatmaps.detach()]
        return preds

    def loss(
        self, feats: tuple[Tensor], batch_data_samples: OptSampleList, train_cfg: ConfigType = {}  # noqa: B006
    ) -> dict:
        """Heatmap loss plus BCE of visibility and presence against the
        annotated keypoint visibility. (The expected-OKS and error heads need
        ProbPose's OKS/error targets, which this loss does not build: they are
        left untrained here.)"""
        losses = super().loss(feats, batch_data_samples, train_cfg)
        side = self.forward_side(feats)
        visible = torch.cat([d.gt_instance_labels.keypoint_weights for d in batch_data_samples]) > 0
        target = visible.float().to(side["keypoints_visible"].device)
        losses["loss_visibility"] = self.side_loss_weight * F.binary_cross_entropy(
            side["keypoints_visible"], target
        )
        losses["loss_presence"] = self.side_loss_weight * F.binary_cross_entropy(
            side["keypoints_probs"], target
        )
        return losses


def _side_head(
    channels: int, num_keypoints: int, pool_sizes: Sequence[Sequence[int]], activation: nn.Module
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in pool_sizes:
        layers += [
            nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1),
            nn.BatchNorm2d(channels),
            nn.MaxPool2d(kernel_size=tuple(size), stride=tuple(size)),
            nn.ReLU(inplace=True),
        ]
    layers += [nn.Conv2d(channels, num_keypoints, kernel_size=1), activation]
    return nn.Sequential(*layers)
