"""Pose-to-mask segmenters: pose-prompted SAM 2 and a weight-free skeleton mask."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..images import PixelArray
from ..keypoints import SKELETON, TORSO
from ..masks import fill_small_regions
from .sam_features import encode, set_features
from ..prompts import PromptConfig, select_prompts
from ..structures import Instances, to_tensor
from ..weights import load_or_warn, resolve_checkpoint
from .base import SEGMENTERS, compile_in_place


@SEGMENTERS.register_module()
class SAM2Segmenter:
    """SAM 2 / SAM 2.1 prompted with points chosen from each pose.

    The image embedding is computed once in :meth:`set_image` and reused by every
    :meth:`segment` call for that image (all loop iterations); all people of a
    call are decoded in one batch, prompts padded with SAM's padding label.
    Single-mask output; as in SAM 2's own post-processing, holes of at most
    ``max_hole_area`` px are filled and islands of at most ``max_sprinkle_area``
    px removed on the 256x256 low-resolution logits, which are then upsampled
    and thresholded at ``mask_threshold``. Everything image-sized stays on the
    model's device: the image is resized and normalised there, and the masks
    are returned as a device tensor.

    Args:
        config: sam2 model config name, e.g. ``'configs/sam2.1/sam2.1_hiera_b+.yaml'``.
        checkpoint: registry name or file; a sam2 checkpoint ``{'model': state_dict}``.
        prompts: :class:`~bmp.prompts.PromptConfig` fields (method, num_points, ...).
    """

    def __init__(
        self,
        config: str = "configs/sam2.1/sam2.1_hiera_b+.yaml",
        checkpoint: str | None = "sam2.1-hiera-b+",
        device: str = "cpu",
        weights_dirs: Sequence[str] = (),
        prompts: dict[str, Any] | None = None,
        mask_threshold: float = 0.0,
        max_hole_area: int = 10,
        max_sprinkle_area: int = 50,
        strict: bool = True,
    ) -> None:
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        # Resolved before building, so a missing file fails fast.
        path = resolve_checkpoint(checkpoint, weights_dirs) if checkpoint is not None else None
        model = build_sam2(config, ckpt_path=None, device="cpu", mode="eval")
        load_or_warn(model, path, strict=strict)
        model.to(device).eval()
        self.predictor = SAM2ImagePredictor(model, mask_threshold=mask_threshold)
        self.predictor._transforms = sam2_cleanup_transforms(
            model.image_size, mask_threshold, max_hole_area, max_sprinkle_area
        )
        self.prompt_config = PromptConfig(**(prompts or {}))
        self.device = device

    takes_device_image = True

    def compile_models(self, backend: str) -> list[str]:
        """The image encoder (one input size), where SAM's time goes; the
        mask decoder's batch (people) varies and it stays eager."""
        compile_in_place(self.predictor.model.image_encoder, backend)
        return ["segmenter.image_encoder"]

    @torch.inference_mode()
    def set_image(self, image: PixelArray) -> None:
        """Encode ``image`` (H, W, 3) uint8 RGB, host array or device tensor.

        ``SAM2ImagePredictor.set_image`` with its resize and normalisation done
        on the model's device instead of the host."""
        x = to_tensor(image, self.device).permute(2, 0, 1).float() / 255.0  # = ToTensor
        size = tuple(x.shape[-2:])
        x = self.predictor._transforms.transforms(x)[None]  # Resize + Normalize
        set_features(self.predictor, encode(self.predictor.model, x), size)

    @torch.inference_mode()
    def segment(self, people: Instances, others: Instances | None = None) -> Instances:
        """Masks for ``people``; ``others`` (people found earlier) only feed
        negative prompts when those are configured."""
        n = len(people)
        if n == 0:
            return people
        if not self.predictor._is_image_set:
            raise RuntimeError("SAM2Segmenter.set_image must be called before segment")
        cfg = self.prompt_config
        points, labels = select_prompts(
            people.keypoints, people.keypoint_scores, people.visibility, cfg, boxes=people.boxes,
            others=(others.keypoints, others.keypoint_scores) if others is not None else None,
        )
        h, w = people.image_size
        masks = torch.zeros((n, h, w), dtype=torch.bool, device=self.predictor.device)
        scores = np.zeros(n, dtype=np.float32)
        prompted = np.flatnonzero((labels > 0).any(1) | cfg.use_box)
        if len(prompted):
            boxes = people.boxes[prompted] if cfg.use_box else None
            _, coords, point_labels, box = self.predictor._prep_prompts(
                points[prompted], labels[prompted], boxes, None, normalize_coords=True
            )
            # Batched torch-level call: one prompt-encoder/decoder pass for all people.
            batch_masks, iou, _ = self.predictor._predict(
                coords, point_labels, box, None, multimask_output=False
            )
            masks[torch.from_numpy(prompted).to(masks.device)] = batch_masks[:, 0].bool()
            scores[prompted] = iou[:, 0].float().cpu().numpy()
        return people.replace(
            masks=masks, mask_scores=scores, prompts=points, prompt_labels=labels
        )


@SEGMENTERS.register_module()
class SkeletonSegmenter:
    """A weight-free mask drawn from the pose: limbs between confident keypoints
    as thick lines, the torso polygon filled, a disc at the head.

    Thickness scales with person size (``thickness`` x sqrt of the box area). It
    is a coarse stand-in for SAM when no segmentation weights are available, so
    the loop (mask-out, exclusive masks, COCO output) still runs end to end; its
    masks follow the skeleton, not the silhouette, so expect low mask AP.
    The mask score is the mean score of the keypoints drawn.
    """

    def __init__(self, score_thr: float = 0.3, thickness: float = 0.12) -> None:
        self.score_thr = score_thr
        self.thickness = thickness

    def set_image(self, image: np.ndarray) -> None:
        """Nothing to precompute."""

    def segment(self, people: Instances, others: Instances | None = None) -> Instances:
        h, w = people.image_size
        masks = np.zeros((len(people), h, w), dtype=bool)
        scores = np.zeros(len(people), dtype=np.float32)
        for i in range(len(people)):
            masks[i], scores[i] = self._draw(
                people.keypoints[i], people.keypoint_scores[i], people.areas[i], (h, w)
            )
        return people.replace(masks=masks, mask_scores=scores)

    def _draw(
        self, kpts: np.ndarray, scores: np.ndarray, area: float, size: tuple[int, int]
    ) -> tuple[np.ndarray, float]:
        canvas = np.zeros(size, dtype=np.uint8)
        ok = scores >= self.score_thr
        if not ok.any():
            return canvas.astype(bool), 0.0
        width = max(2, int(round(self.thickness * np.sqrt(max(area, 1.0)))))
        pts = np.round(kpts).astype(np.int32)
        for a, b in SKELETON:
            if ok[a] and ok[b]:
                cv2.line(canvas, tuple(map(int, pts[a])), tuple(map(int, pts[b])), 1, width)
        torso = [t for t in TORSO if ok[t]]
        if len(torso) >= 3:
            cv2.fillPoly(canvas, [pts[torso]], 1)
        head = [i for i in range(5) if ok[i]]
        if head:
            centre = pts[head].mean(0).astype(int)
            cv2.circle(canvas, tuple(map(int, centre)), int(width * 1.2), 1, -1)
        for i in np.flatnonzero(ok):
            cv2.circle(canvas, tuple(map(int, pts[i])), width // 2, 1, -1)
        return canvas.astype(bool), float(scores[ok].mean())


def sam2_cleanup_transforms(resolution: int, threshold: float, max_hole_area: int, max_sprinkle_area: int):
    """SAM 2's transforms with the mask clean-up done by
    :func:`bmp.masks.fill_small_regions` (plain torch, any device) rather than
    sam2's optional CUDA extension, which the package is installed without."""
    from sam2.utils.transforms import SAM2Transforms

    class CleanUpOnDevice(SAM2Transforms):
        def postprocess_masks(self, masks: torch.Tensor, orig_hw: tuple[int, int]) -> torch.Tensor:
            logits = masks.float()
            flat = fill_small_regions(logits.flatten(0, 1), threshold, max_hole_area, max_sprinkle_area)
            return F.interpolate(flat.view_as(logits), orig_hw, mode="bilinear", align_corners=False)

    return CleanUpOnDevice(resolution, threshold, max_hole_area, max_sprinkle_area)
