"""Mask propagation with SAM 2's video memory, one frame at a time.

``SAM2VideoPredictor`` wants the whole clip up front (``init_state`` loads every
frame) and no new objects once tracking started; a video pipeline that streams
frames and gains people on the way needs neither. This module drives the same
model through its per-frame entry point, ``SAM2Base.track_step``, with one
memory bank per track:

- :meth:`SAM2MemoryPropagator.propagate` encodes the new frame once and
  predicts every remembered track's mask from its memory (memory attention +
  mask decoder, no prompts), also encoding that prediction as a memory;
- :meth:`SAM2MemoryPropagator.remember` then stores the mask BMP found for a
  matched track as a conditioning frame (SAM 2's "mask prompt"), replacing the
  prediction, starts memories for new tracks and forgets dead ones.

Memory is bounded: the last ``max_cond_frames`` conditioning frames and the
last ``num_maskmem`` frames of spatial memory per track (object pointers of up
to 16 frames, as SAM 2 attends to), stored in bfloat16.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..weights import load_weights, resolve_checkpoint

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_KEEP = ("maskmem_features", "maskmem_pos_enc", "obj_ptr", "object_score_logits")


class SAM2MemoryPropagator:
    """Streams frames through a SAM 2 / 2.1 model and propagates track masks.

    Args:
        config: sam2 model config, e.g. ``'configs/sam2.1/sam2.1_hiera_b+.yaml'``.
        checkpoint: registry name or file (a sam2 checkpoint ``{'model': ...}``).
        max_cond_frames: conditioning (BMP-mask) frames kept per track.
        image_size: the model's square input side (default: the config's, 1024);
            smaller is faster and coarser.
        trust_checkpoint: allow fully unpickling an unregistered checkpoint
            file that holds more than tensors (see :func:`bmp.weights.check_trusted`).
    """

    def __init__(
        self,
        config: str = "configs/sam2.1/sam2.1_hiera_b+.yaml",
        checkpoint: str = "sam2.1-hiera-b+",
        device: str = "cpu",
        weights_dirs: Sequence[str] = (),
        max_cond_frames: int = 2,
        image_size: int | None = None,
        strict: bool = True,
        trust_checkpoint: bool = False,
    ) -> None:
        from sam2.build_sam import build_sam2_video_predictor

        path = resolve_checkpoint(checkpoint, weights_dirs)
        overrides = [f"++model.image_size={int(image_size)}"] if image_size else []
        # ckpt_path=None: sam2's _load_checkpoint would torch.load the file itself.
        model = build_sam2_video_predictor(config, ckpt_path=None, device="cpu", mode="eval",
                                           hydra_overrides_extra=overrides)
        load_weights(model, path, strict=strict, trusted=trust_checkpoint)
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.max_cond_frames = max(1, int(max_cond_frames))
        self.memory: dict[int, dict[str, dict[int, dict]]] = {}
        self.step = 0
        self._frame: tuple | None = None  # (vision feats, pos embeds, feature sizes) of this step
        self._size: tuple[int, int] = (0, 0)
        self._pos_enc: list[torch.Tensor] | None = None

    # Frame features ----------------------------------------------------------

    def _encode(self, image: np.ndarray) -> tuple:
        """Backbone features of an (H, W, 3) RGB frame, resized to the model's square input."""
        size = self.model.image_size
        x = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
        x = (x - np.array(_IMAGENET_MEAN, np.float32)) / np.array(_IMAGENET_STD, np.float32)
        batch = torch.from_numpy(x).permute(2, 0, 1)[None].to(self.device)
        backbone_out = self.model.forward_image(batch)
        _, feats, pos, sizes = self.model._prepare_backbone_features(backbone_out)
        return feats, pos, sizes

    def _track_step(self, memory: dict, mask_inputs: torch.Tensor | None) -> dict:
        feats, pos, sizes = self._frame
        return self.model.track_step(
            frame_idx=self.step, is_init_cond_frame=mask_inputs is not None,
            current_vision_feats=feats, current_vision_pos_embeds=pos, feat_sizes=sizes,
            point_inputs=None, mask_inputs=mask_inputs, output_dict=memory,
            num_frames=self.step + 1, run_mem_encoder=True,
        )

    def _to_image_mask(self, logits: torch.Tensor) -> np.ndarray:
        """(1, 1, S, S) high-res logits -> (H, W) bool at the frame's size."""
        h, w = self._size
        up = F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False)
        return (up[0, 0] > 0).cpu().numpy()

    def _mask_input(self, mask: np.ndarray) -> torch.Tensor:
        size = self.model.image_size
        m = torch.from_numpy(mask.astype(np.float32))[None, None].to(self.device)
        m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return (m >= 0.5).float()

    def _compact(self, out: dict) -> dict:
        kept = {k: out[k] for k in _KEEP}
        if kept["maskmem_features"] is not None:
            kept["maskmem_features"] = kept["maskmem_features"].to(torch.bfloat16)
        if kept["maskmem_pos_enc"] is not None:
            # The same for every frame and track: keep one copy, as SAM 2 does.
            self._pos_enc = self._pos_enc or kept["maskmem_pos_enc"]
            kept["maskmem_pos_enc"] = self._pos_enc
        return kept

    # Public API ----------------------------------------------------------------

    @torch.inference_mode()
    def propagate(self, image: np.ndarray) -> dict[int, np.ndarray]:
        """The next frame: track id -> (H, W) bool mask predicted from memory."""
        self.step += 1
        self._size = image.shape[:2]
        self._frame = self._encode(image)
        masks = {}
        for track_id, memory in self.memory.items():
            out = self._track_step(memory, None)
            memory["non_cond_frame_outputs"][self.step] = self._compact(out)
            masks[track_id] = self._to_image_mask(out["pred_masks_high_res"])
        return masks

    @torch.inference_mode()
    def remember(self, masks: dict[int, np.ndarray], alive: set[int]) -> None:
        """Store this frame's BMP masks (track id -> (H, W) bool) as conditioning
        memory; forget tracks not in ``alive``. Call after :meth:`propagate`."""
        if self._frame is None:
            raise RuntimeError("SAM2MemoryPropagator.remember called before propagate")
        for track_id in [t for t in self.memory if t not in alive]:
            del self.memory[track_id]
        for track_id, mask in masks.items():
            if track_id not in alive:
                continue
            memory = self.memory.setdefault(
                track_id, {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
            )
            out = self._track_step(memory, self._mask_input(mask))
            memory["non_cond_frame_outputs"].pop(self.step, None)
            memory["cond_frame_outputs"][self.step] = self._compact(out)
        for memory in self.memory.values():
            self._prune(memory)

    def _prune(self, memory: dict) -> None:
        cond, non_cond = memory["cond_frame_outputs"], memory["non_cond_frame_outputs"]
        for step in sorted(cond)[:-self.max_cond_frames]:
            # An older mask prompt still serves as recent memory, as in SAM 2.
            non_cond.setdefault(step, cond.pop(step))
        spatial = self.step - self.model.num_maskmem
        pointers = self.step - self.model.max_obj_ptrs_in_encoder
        for step in list(non_cond):
            if step <= pointers:
                del non_cond[step]
            elif step <= spatial and non_cond[step]["maskmem_features"] is not None:
                non_cond[step] = dict(non_cond[step], maskmem_features=None)

    def reset(self) -> None:
        """Forget every track and frame (a new video); the model stays loaded."""
        self.memory.clear()
        self.step = 0
        self._frame = None

    def memory_frames(self) -> int:
        """Frames held in memory over all tracks (for tests and the summary)."""
        return sum(len(m["cond_frame_outputs"]) + len(m["non_cond_frame_outputs"])
                   for m in self.memory.values())
