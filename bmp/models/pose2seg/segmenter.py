"""Pose2Seg as a loop segmenter: backbone features once per image, then one
batched pass of Affine-Align + SegModule per :meth:`segment` call."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ...structures import Instances
from ...weights import WeightsError, load_weights, resolve_checkpoint
from ..base import SEGMENTERS
from .affine_align import sample_affine
from .network import Pose2SegNet

logger = logging.getLogger(__name__)


@SEGMENTERS.register_module()
class Pose2SegSegmenter:
    """Pose2Seg masks from poses (no boxes or detector masks needed).

    Args:
        network: :class:`~bmp.models.pose2seg.network.Pose2SegNet` arguments
            (backbone, widths, ``templates`` file, ...); they must match the
            checkpoint.
        checkpoint: registry name or file from ``tools/train_pose2seg_net.py``;
            it also holds the pose templates it was trained with. Without it
            the network has random weights (for tests only).
        kpt_thr: keypoints with visibility >= this are used (ground truth: v > 0).
        mask_thr: probability threshold of the pasted-back mask.
        max_pixels: people are pasted back in groups of at most this many
            (people x image pixels) values, to bound memory on large images.
        trust_checkpoint: allow fully unpickling an unregistered checkpoint
            file that holds more than tensors (see :func:`bmp.weights.check_trusted`).
    """

    def __init__(
        self,
        network: dict[str, Any] | None = None,
        checkpoint: str | None = None,
        kpt_thr: float = 0.3,
        mask_thr: float = 0.5,
        max_pixels: int = 1 << 26,
        device: str = "cpu",
        weights_dirs: Sequence[str] = (),
        strict: bool = True,
        trust_checkpoint: bool = False,
    ) -> None:
        network = dict(network or {})
        if checkpoint is None and network.get("templates") is None:
            raise ValueError("Pose2SegSegmenter needs a checkpoint or a network.templates file")
        self.net = Pose2SegNet(**network)
        if checkpoint is not None:
            path = resolve_checkpoint(checkpoint, weights_dirs)
            try:
                load_weights(self.net, path, strict=strict, trusted=trust_checkpoint)
            except WeightsError:
                raise
            except RuntimeError as exc:  # shape mismatches escape load_state_dict(strict=False)
                detail = str(exc).strip().splitlines()[1:2] or [str(exc)]
                raise WeightsError(
                    f"{path} does not fit this Pose2Seg network ({detail[0].strip()}); is "
                    "`network` the one the checkpoint was trained with?"
                ) from exc
        else:
            logger.warning("Pose2SegSegmenter has no checkpoint: random weights")
        self.net.to(device).eval()
        self.device = device
        self.kpt_thr = kpt_thr
        self.mask_thr = mask_thr
        self.max_pixels = max_pixels
        self._features: torch.Tensor | None = None
        self._scale: tuple[float, float] = (1.0, 1.0)

    @torch.inference_mode()
    def set_image(self, image: np.ndarray) -> None:
        """Run the backbone once; every ``segment`` call of this image reuses it."""
        inputs, self._scale = self.net.preprocess(image)
        self._features = self.net.extract_features(inputs.to(self.device))

    @torch.inference_mode()
    def segment(self, people: Instances) -> Instances:
        n = len(people)
        if n == 0:
            return people
        if self._features is None:
            raise RuntimeError("Pose2SegSegmenter.set_image must be called before segment")
        h, w = people.image_size
        valid_np = (people.visibility >= self.kpt_thr) & np.isfinite(people.keypoints).all(-1)
        posed = np.flatnonzero(valid_np.any(1))
        masks = np.zeros((n, h, w), dtype=bool)
        scores = np.zeros(n, dtype=np.float32)
        if len(posed) == 0:
            return people.replace(masks=masks, mask_scores=scores)
        out = self.net(
            self._features,
            self._scale,
            torch.as_tensor(people.keypoints[posed], dtype=torch.float32, device=self.device),
            torch.as_tensor(valid_np[posed], device=self.device),
            torch.as_tensor(people.boxes[posed], dtype=torch.float32, device=self.device),
        )
        prob = torch.sigmoid(out.logits)  # (P, 1, S, S)
        inside = prob > self.mask_thr
        scores[posed] = ((prob * inside).sum((1, 2, 3)) / inside.sum((1, 2, 3)).clamp_min(1)).cpu().numpy()
        step = max(1, self.max_pixels // (h * w))
        for lo in range(0, len(posed), step):
            pasted = sample_affine(prob[lo : lo + step], out.alignment.to_aligned[lo : lo + step], (h, w))
            masks[posed[lo : lo + step]] = (pasted[:, 0] > self.mask_thr).cpu().numpy()
        return people.replace(masks=masks, mask_scores=scores)
