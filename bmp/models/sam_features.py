"""SAM 2 image features, split where SAM 2 itself splits them.

:func:`encode` gives the image encoder's raw FPN output; :func:`decoder_features`
applies the mask decoder's own projections (``conv_s0`` / ``conv_s1``) and the
``no_mem_embed``, exactly as ``SAM2ImagePredictor.set_image`` combines them.
The loop's segmenter and the SAM-pose2seg fine-tuning (which caches the frozen
encoder output and trains the projections) both go through these, so the
fine-tuning validates exactly what the loop predicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class EncoderFeatures:
    """Raw FPN levels of a batch of images, finest first:
    (B, C, 4h, 4w), (B, C, 2h, 2w), (B, C, h, w) with h = w = S / 16."""

    levels: list[torch.Tensor]

    def __len__(self) -> int:
        return len(self.levels[0])

    def to(self, device: torch.device | str) -> EncoderFeatures:
        return EncoderFeatures([x.to(device, non_blocking=True) for x in self.levels])

    def __getitem__(self, index: int | slice) -> EncoderFeatures:
        index = slice(index, index + 1) if isinstance(index, int) else index
        return EncoderFeatures([x[index] for x in self.levels])

    @staticmethod
    def cat(items: Sequence[EncoderFeatures]) -> EncoderFeatures:
        return EncoderFeatures([torch.cat(parts) for parts in zip(*(i.levels for i in items), strict=True)])


@dataclass
class DecoderFeatures:
    """What SAM's mask decoder consumes: ``image_embed`` (B, C, h, w) and
    ``high_res`` [(B, C0, 4h, 4w), (B, C1, 2h, 2w)] (empty when the model has
    no high-resolution path)."""

    image_embed: torch.Tensor
    high_res: list[torch.Tensor]

    def index(self, rows: torch.Tensor) -> DecoderFeatures:
        """Rows ``rows`` (N,) of the batch: one entry per person."""
        return DecoderFeatures(self.image_embed[rows], [x[rows] for x in self.high_res])


def encode(model: torch.nn.Module, images: torch.Tensor) -> EncoderFeatures:
    """Raw FPN features of ``images`` (B, 3, S, S), without gradients."""
    with torch.no_grad():
        fpn = model.image_encoder(images)["backbone_fpn"]
    return EncoderFeatures([x.detach() for x in fpn[-model.num_feature_levels:]])


def decoder_features(model: torch.nn.Module, features: EncoderFeatures) -> DecoderFeatures:
    """The decoder inputs, as ``SAM2ImagePredictor.set_image`` builds them:
    the coarsest level plus ``no_mem_embed``; the finer levels through the
    decoder's ``conv_s0`` / ``conv_s1`` (trainable, so gradients flow here)."""
    *fine, coarse = features.levels
    if model.directly_add_no_mem_embed:
        coarse = coarse + model.no_mem_embed.reshape(1, -1, 1, 1)
    high_res: list[torch.Tensor] = []
    if model.use_high_res_features_in_sam:
        decoder = model.sam_mask_decoder
        high_res = [decoder.conv_s0(fine[0]), decoder.conv_s1(fine[1])]
    return DecoderFeatures(coarse, high_res)


def set_features(
    predictor: Any, features: EncoderFeatures, orig_hw: tuple[int, int] | Sequence[tuple[int, int]]
) -> None:
    """Set a ``SAM2ImagePredictor``'s images from encoder features (fresh or
    cached), as its ``set_image`` / ``set_image_batch`` would from the pixels.
    ``orig_hw``: the (H, W) of the one image, or of each image of the batch."""
    sizes = [tuple(orig_hw)] if isinstance(orig_hw[0], int) else [tuple(hw) for hw in orig_hw]
    if len(sizes) != len(features):
        raise ValueError(f"{len(sizes)} image sizes for features of {len(features)} images")
    dec = decoder_features(predictor.model, features)
    predictor.reset_predictor()
    predictor._features = {"image_embed": dec.image_embed, "high_res_feats": dec.high_res}
    predictor._orig_hw = sizes
    predictor._is_batch = len(sizes) > 1
    predictor._is_image_set = True
