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
from ..prompts import PAD_LABEL, PromptConfig, confidence_channel, select_prompts
from ..structures import Instances, to_tensor
from ..weights import load_or_warn, resolve_checkpoint
from .base import SEGMENTERS, compile_in_place
from .sam_decode import decode_people
from .sam_features import encode, set_features


@SEGMENTERS.register_module()
class SAM2Segmenter:
    """SAM 2 / SAM 2.1 prompted with points chosen from each pose.

    The image embedding is computed once in :meth:`set_image` and reused by every
    :meth:`segment` call for that image (all loop iterations); the people of a
    call are decoded in one batch per distinct prompt-point count, each with
    exactly its own points (what per-person ``SAM2ImagePredictor.predict``
    calls would give).
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
        trust_checkpoint: allow fully unpickling an unregistered checkpoint
            file that holds more than tensors (see :func:`bmp.weights.check_trusted`).
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
        trust_checkpoint: bool = False,
    ) -> None:
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        # Resolved before building, so a missing file fails fast.
        path = resolve_checkpoint(checkpoint, weights_dirs) if checkpoint is not None else None
        # ckpt_path=None: sam2's _load_checkpoint would torch.load the file itself.
        model = build_sam2(config, ckpt_path=None, device="cpu", mode="eval")
        load_or_warn(model, path, strict=strict, trusted=trust_checkpoint)
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
        """Encode ``image`` (H, W, 3) uint8 RGB, host array or device tensor."""
        self.set_images([image])

    @torch.inference_mode()
    def set_images(self, images: Sequence[PixelArray]) -> None:
        """Encode a batch of images in one image-encoder call.

        ``SAM2ImagePredictor.set_image_batch`` with its resize and normalisation
        done on the model's device instead of the host."""
        inputs, sizes = [], []
        for image in images:
            x = to_tensor(image, self.device).permute(2, 0, 1).float() / 255.0  # = ToTensor
            sizes.append(tuple(x.shape[-2:]))
            inputs.append(self.predictor._transforms.transforms(x))  # Resize + Normalize
        set_features(self.predictor, encode(self.predictor.model, torch.stack(inputs)), sizes)

    def segment(self, people: Instances, others: Instances | None = None) -> Instances:
        """Masks for ``people`` of the one image set; ``others`` (people found
        earlier) only feed negative prompts when those are configured."""
        return self.segment_batch([people], [others])[0]

    @torch.inference_mode()
    def segment_batch(
        self, people: Sequence[Instances], others: Sequence[Instances | None] | None = None
    ) -> list[Instances]:
        """Masks for ``people[b]`` on image ``b`` of the batch set, every image's
        people decoded together, one decoder call per prompt-point count."""
        if not self.predictor._is_image_set:
            raise RuntimeError("SAM2Segmenter.set_image(s) must be called before segment")
        if len(people) != len(self.predictor._orig_hw):
            raise ValueError(f"people of {len(people)} images for {len(self.predictor._orig_hw)} images set")
        others = list(others) if others is not None else [None] * len(people)
        cfg = self.prompt_config
        selected = [
            select_prompts(
                p.keypoints, p.keypoint_scores, confidence_channel(p, cfg), cfg, boxes=p.boxes,
                others=(o.keypoints, o.keypoint_scores) if o is not None else None,
            )
            for p, o in zip(people, others, strict=True)
        ]
        if not any(len(p) for p in people):
            return list(people)
        width = max(points.shape[1] for points, _ in selected)
        points = np.concatenate([_pad_points(pts, width) for pts, _ in selected])
        labels = np.concatenate([_pad_labels(lbl, width) for _, lbl in selected])
        image_index = np.concatenate([np.full(len(p), b, np.int64) for b, p in enumerate(people)])
        boxes = np.concatenate([p.boxes for p in people]) if cfg.use_box else None
        # A person with no point is decoded from SAM's padding token alone, as
        # the reference's per-person calls do.
        masks, scores = decode_people(self.predictor, points, labels, image_index, boxes)
        out, start = [], 0
        for b, (p, (pts, lbl)) in enumerate(zip(people, selected, strict=True)):
            stop = start + len(p)
            out.append(p if len(p) == 0 else p.replace(
                masks=masks[b], mask_scores=scores[start:stop], prompts=pts, prompt_labels=lbl
            ))
            start = stop
        return out


def _pad_points(points: np.ndarray, width: int) -> np.ndarray:
    return np.pad(points, [(0, 0), (0, width - points.shape[1]), (0, 0)])


def _pad_labels(labels: np.ndarray, width: int) -> np.ndarray:
    return np.pad(labels, [(0, 0), (0, width - labels.shape[1])], constant_values=PAD_LABEL)


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
            return upsample_masks(flat.view_as(logits), orig_hw, threshold)

    return CleanUpOnDevice(resolution, threshold, max_hole_area, max_sprinkle_area)


def upsample_masks(
    logits: torch.Tensor, size: tuple[int, int], threshold: float, max_pixels: int = 1 << 24
) -> torch.Tensor:
    """Low-resolution mask logits (B, C, h, w) bilinearly upsampled to ``size``
    (H, W) and thresholded: (B, C, H, W) float16, +inf where the logit exceeds
    ``threshold``, -inf elsewhere.

    A few masks at a time (about ``max_pixels`` upsampled values), so the float
    full-resolution logits of all B x C masks never exist at once (at 48 MP, 20
    people's are 3.7 GB). Float16 +-inf rather than bool because sam2's
    ``_predict`` thresholds what this returns against its Python-float
    ``mask_threshold``: +-inf answer that right for any threshold, and on the CPU
    comparing a bool or integer tensor with a float would first copy it to
    float32.
    """
    b, c, h, w = logits.shape[0], logits.shape[1], size[0], size[1]
    flat = logits.flatten(0, 1)[:, None]
    out = torch.full((b * c, h, w), float("-inf"), dtype=torch.float16, device=logits.device)
    chunk = max(1, max_pixels // max(1, h * w))
    for lo in range(0, b * c, chunk):
        up = F.interpolate(flat[lo : lo + chunk], size, mode="bilinear", align_corners=False)[:, 0]
        out[lo : lo + chunk].masked_fill_(up > threshold, float("inf"))
    return out.view(b, c, h, w)
