"""Top-down pose estimators: mmpose models and Ultralytics YOLO-pose."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..images import PixelArray
from ..masks import box_iou
from ..structures import NUM_KEYPOINTS, Instances, to_numpy, to_tensor
from ..weights import resolve_checkpoint
from .base import POSE_ESTIMATORS, compile_in_place, resolve_model_config
from .yolo import load_ultralytics, predict


@POSE_ESTIMATORS.register_module()
class MMPoseTopDown:
    """Any mmpose top-down model (config + checkpoint).

    Two execution paths give the same keypoints (within interpolation noise):

    - ``batched=True`` (default, for heatmap heads with a UDP codec such as
      ViTPose, MaskPose, PMPose): all boxes of an iteration are cropped on the
      device with one ``grid_sample``, original and flipped crops run as one
      batch, heatmaps are decoded together (:mod:`bmp.models.topdown`).
    - ``batched=False`` or any other head (e.g. RTMPose's SimCC): mmpose's own
      per-sample pipeline, as the reference implementation runs it.

    MaskPose conditioning: when the model config's test pipeline holds
    ``MaskBackground`` (or ``mask_alpha`` is given), the image is dimmed at full
    resolution outside the filled external contours of the person's mask from
    ``people.masks`` before the crop is warped, as the reference does
    (:mod:`bmp.models.mask_condition`). Side heads
    (``ProbPoseHead``) fill ``visibility``, ``presence`` and ``kpt_oks``; other
    models report their keypoint scores there.

    Args:
        mask_alpha: override the config's MaskBackground alpha (0 disables).
        padding: box padding before cropping (mmpose's ``GetBBoxCenterScale``).
        trust_checkpoint: allow fully unpickling an unregistered checkpoint
            file that holds more than tensors (see :func:`bmp.weights.check_trusted`).
    """

    def __init__(
        self,
        config: str,
        checkpoint: str | None,
        device: str = "cpu",
        weights_dirs: Sequence[str] = (),
        flip_test: bool = True,
        mask_alpha: float | None = None,
        batched: bool = True,
        padding: float = 1.25,
        strict: bool = True,
        trust_checkpoint: bool = False,
    ) -> None:
        from mmengine.config import Config
        from mmengine.registry import DefaultScope
        from mmpose.apis import init_model

        from ..weights import load_or_warn
        from . import mmpose_ext  # noqa: F401  (registers MaskBackground, ProbPoseHead)

        cfg = Config.fromfile(resolve_model_config(config))
        cfg.model.setdefault("test_cfg", {})["flip_test"] = flip_test
        # Resolved before building, so a missing file fails fast.
        path = resolve_checkpoint(checkpoint, weights_dirs) if checkpoint is not None else None
        # Built without a checkpoint: mmengine's loader would unpickle the file
        # itself; bmp.weights applies the safety rule instead.
        with DefaultScope.overwrite_default_scope("mmpose"):
            self.model = init_model(cfg, checkpoint=None, device=device)
        load_or_warn(self.model, path, strict=strict, trusted=trust_checkpoint)
        self.model.eval()
        self.device = device
        self.flip_test = flip_test
        self.padding = padding
        pipeline = list(cfg.test_dataloader.dataset.pipeline)
        configured = next((t for t in pipeline if t["type"] == "MaskBackground"), None)
        self.mask_alpha = mask_alpha if mask_alpha is not None else (
            configured.get("alpha", 0.25) if configured else 0.0
        )
        self.batched = batched and _supports_batched(self.model)
        #: Pad each forward batch to a power of two (set when compiled).
        self.pad_batch = False
        self.takes_device_image = self.batched
        self._pipeline_cfg = _with_mask_background(pipeline, self.mask_alpha)
        self._pipeline = None
        #: Per EXTRA_KEYPOINT_NAMES, the model's keypoint index that gives it, or -1.
        self._extra_index = extra_keypoint_index(self.model.dataset_meta.get("keypoint_id2name") or {})

    def compile_models(self, backend: str) -> list[str]:
        """Backbone and head with static shapes: batches are padded to powers
        of two, so a handful of compiled sizes serve any number of people
        (inductor's dynamic-shape path fails on mmpretrain's ViT)."""
        compile_in_place(self.model.backbone, backend, dynamic=False)
        compile_in_place(self.model.head, backend, dynamic=False)
        self.pad_batch = True
        return ["pose.backbone", "pose.head"]

    def estimate(self, image: PixelArray, people: Instances) -> Instances:
        return self.estimate_batch([image], [people])[0]

    @torch.inference_mode()
    def estimate_batch(
        self, images: Sequence[PixelArray], people: Sequence[Instances],
        others: Sequence[Instances | None] | None = None,
    ) -> list[Instances]:
        """Poses of ``people[b]`` on ``images[b]``: every crop of every image in
        one forward pass."""
        counts = [len(p) for p in people]
        if not sum(counts):
            return list(people)
        run = self._batched if self.batched else self._per_sample
        kpts, scores, side = run(images, people)
        fallback = scores.copy()
        visible = np.clip(side.get("keypoints_visible", fallback), 0, 1).astype(np.float32)
        presence = np.clip(side.get("keypoints_probs", fallback), 0, 1).astype(np.float32)
        oks = side.get("keypoints_oks", fallback).astype(np.float32)
        out, start = [], 0
        for p, n in zip(people, counts, strict=True):
            rows = slice(start, start + n)
            out.append(p if n == 0 else p.replace(
                keypoints=kpts[rows].astype(np.float32), keypoint_scores=scores[rows].astype(np.float32),
                visibility=visible[rows], presence=presence[rows], kpt_oks=oks[rows],
                **({"extra_keypoints": side["extra_keypoints"][rows]} if "extra_keypoints" in side else {}),
            ))
            start += n
        return out

    def _crops(self, images: Sequence[PixelArray], people: Sequence[Instances], input_size: tuple[int, int]):
        """The crops of every person of every image, image by image."""
        from .topdown import CropBatch, crop_people

        dev = next(self.model.parameters()).device
        parts = []
        for image, p in zip(images, people, strict=True):
            if len(p) == 0:
                continue
            image_t = to_tensor(image, dev).permute(2, 0, 1).float()
            boxes = torch.from_numpy(p.boxes).to(dev)
            masks = _conditioning_masks(p.masks, dev) if self.mask_alpha > 0 else None
            parts.append(crop_people(image_t, boxes, input_size, self.padding, masks, self.mask_alpha))
        return CropBatch.cat(parts)

    def _batched(self, images: Sequence[PixelArray], people: Sequence[Instances]):
        from mmpose.models.utils.tta import flip_heatmaps

        from .topdown import decode_udp_heatmaps, heatmap_to_image

        model, head = self.model, self.model.head
        codec = head.decoder
        crops = self._crops(images, people, tuple(codec.input_size))
        x = crops.images
        preprocessor = model.data_preprocessor
        if not getattr(preprocessor, "_channel_conversion", True):
            x = x[:, [2, 1, 0]]  # the model expects BGR input
        x = (x - preprocessor.mean) / preprocessor.std
        n = len(x)
        if self.flip_test:
            x = torch.cat([x, x.flip(-1)])  # one forward pass for both views
        total = len(x)
        if self.pad_batch:
            x = F.pad(x, (0, 0, 0, 0, 0, 0, 0, (1 << (total - 1).bit_length()) - total))
        feats = model.extract_feat(x)
        heatmaps = head.forward(feats)[:total]
        side = head.forward_side(feats) if hasattr(head, "forward_side") else {}
        side = {k: v[:total] for k, v in side.items()}
        if self.flip_test:
            flip_indices = model.dataset_meta["flip_indices"]
            test_cfg = model.test_cfg or {}
            flipped = flip_heatmaps(
                heatmaps[n:], flip_mode=test_cfg.get("flip_mode", "heatmap"),
                flip_indices=flip_indices, shift_heatmap=test_cfg.get("shift_heatmap", False),
            )
            heatmaps = (heatmaps[:n] + flipped) * 0.5
            side = {k: (v[:n] + v[n:][:, flip_indices]) * 0.5 for k, v in side.items()}
        locs, scores = decode_udp_heatmaps(heatmaps.float(), codec.blur_kernel_size)
        kpts = heatmap_to_image(
            locs, tuple(codec.heatmap_size), tuple(codec.input_size), crops.centers, crops.scales
        )
        if "keypoints_error" in side:
            side["keypoints_error"] = side["keypoints_error"] / float(np.hypot(*heatmaps.shape[-2:]))
        if side and getattr(head, "score_source", "heatmap") == "oks":
            scores = side["keypoints_oks"]
        k = NUM_KEYPOINTS
        side_np = {name: v[:, :k].float().cpu().numpy() for name, v in side.items()}
        kpts, scores = kpts.cpu().numpy(), scores.float().cpu().numpy()
        side_np.update(self._extra_keypoints(kpts, scores))
        return kpts[:, :k], scores[:, :k], side_np

    def _per_sample(self, images: Sequence[PixelArray], people: Sequence[Instances]):
        from mmcv.transforms import Compose
        from mmengine.dataset import pseudo_collate
        from mmengine.registry import DefaultScope

        from .mask_condition import mask_polygons

        with DefaultScope.overwrite_default_scope("mmpose"):
            if self._pipeline is None:
                self._pipeline = Compose(self._pipeline_cfg)
            samples = []
            for image, p in zip(images, people, strict=True):
                if len(p) == 0:
                    continue
                bgr = np.ascontiguousarray(to_numpy(image)[..., ::-1])
                host_masks = to_numpy(p.masks) if self.mask_alpha > 0 else None
                for i, box in enumerate(p.boxes):
                    info = dict(img=bgr, bbox=box[None].astype(np.float32), bbox_score=np.ones(1, np.float32))
                    if self.mask_alpha > 0:
                        # As the reference's inference_topdown: polygons (None: undimmed here,
                        # where the reference raises).
                        info["segmentation"] = mask_polygons(host_masks[i].astype(bool, copy=False))
                    info.update(self.model.dataset_meta)
                    samples.append(self._pipeline(info))
            results = self.model.test_step(pseudo_collate(samples))
        k = NUM_KEYPOINTS
        kpts = np.concatenate([r.pred_instances.keypoints for r in results])
        scores = np.concatenate([r.pred_instances.keypoint_scores for r in results])
        side = self._extra_keypoints(kpts, scores)
        kpts, scores = kpts[:, :k], scores[:, :k]
        for name in ("keypoints_visible", "keypoints_probs", "keypoints_oks", "keypoints_error"):
            values = [getattr(r.pred_instances, name, None) for r in results]
            if all(v is not None for v in values) and hasattr(self.model.head, "forward_side"):
                side[name] = np.concatenate([np.asarray(v, np.float32).reshape(1, -1) for v in values])[:, :k]
        return kpts, scores, side

    def _extra_keypoints(self, kpts: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
        """``{"extra_keypoints": (N, 2, 3)}`` from all of the model's (N, K) points,
        or {} for a model without them (the loop then keeps zeros)."""
        if all(i < 0 for i in self._extra_index):
            return {}
        out = np.zeros((len(kpts), len(self._extra_index), 3), np.float32)
        for j, i in enumerate(self._extra_index):
            if i >= 0:
                out[:, j, :2], out[:, j, 2] = kpts[:, i], scores[:, i]
        return {"extra_keypoints": out}


def extra_keypoint_index(id2name: dict[int, str]) -> list[int]:
    """Per :data:`~bmp.keypoints.EXTRA_KEYPOINT_NAMES`, the index of the first
    of its source names in a model's layout, -1 where it has none."""
    from ..keypoints import EXTRA_KEYPOINT_NAMES, EXTRA_KEYPOINT_SOURCES

    by_name = {name: int(i) for i, name in id2name.items()}
    return [
        next((by_name[s] for s in EXTRA_KEYPOINT_SOURCES[name] if s in by_name), -1)
        for name in EXTRA_KEYPOINT_NAMES
    ]


def _supports_batched(model) -> bool:
    from mmpose.codecs import UDPHeatmap
    from mmpose.models.heads import HeatmapHead

    return isinstance(model.head, HeatmapHead) and isinstance(model.head.decoder, UDPHeatmap)


def _conditioning_masks(masks: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """MaskPose's conditioning masks on ``device``: the reference's filled
    external contours of each mask (:mod:`bmp.models.mask_condition`), all True
    for a person whose mask gives no polygon of more than 3 points: posed
    undimmed, where the reference's MaskBackground raises (README, "Differences
    from the reference").

    The masks go to the host and back here, for mask-conditioned pose models
    only: contour tracing and the polygon raster are OpenCV's and pycocotools'
    and have no device version that gives the same pixels.
    """
    from .mask_condition import filled_contour_masks

    filled, has_polygon = filled_contour_masks(to_numpy(masks))
    filled[~has_polygon] = True
    return torch.from_numpy(filled).to(device)


def _with_mask_background(pipeline: list[dict], alpha: float) -> list[dict]:
    """The test pipeline with a string image loader replaced for arrays, and
    ``MaskBackground`` present (before ``TopdownAffine``) exactly when alpha > 0."""
    steps = [dict(t) for t in pipeline if t["type"] != "MaskBackground"]
    for step in steps:
        if step["type"] == "LoadImage":
            step.setdefault("imdecode_backend", "cv2")
    if alpha > 0:
        at = next(i for i, t in enumerate(steps) if t["type"] == "TopdownAffine")
        steps.insert(at, dict(type="MaskBackground", alpha=alpha, continue_on_failure=True))
    return steps


@POSE_ESTIMATORS.register_module()
class UltralyticsTopDown:
    """YOLO-pose used top-down: every box is cropped from the original image
    (padded by ``padding``), the crops go through the model as one batch, and
    the pose whose box best overlaps the query box is kept.

    This keeps BMP's rule that pose looks at the original image, not the
    masked detector input, with the only pose weights available offline.

    YOLO-pose takes no mask, so MaskPose's conditioning is done on its input:
    with ``condition='others_dimmed'`` the pixels of the people found in
    earlier iterations (``others``) are dimmed by ``condition_alpha`` (1:
    blacked out) in every crop, except where the person's own detector mask
    (a ``-seg`` detector's) claims them. A hidden person's crop then no longer
    shows the occluder it would otherwise lock onto.

    With ``first_pass='detector'``, people found before anyone else (the first
    iteration: the detector saw the unmasked original image) keep the
    keypoints a pose detector gave them, at its full input resolution; the
    top-down crops serve the later iterations, where the detector saw the
    masked image.
    """

    def __init__(
        self,
        checkpoint: str = "yolo11n-pose",
        device: str = "cpu",
        weights_dirs: Sequence[str] = (),
        imgsz: int = 320,
        padding: float = 1.25,
        score_thr: float = 0.05,
        condition: str = "none",
        condition_alpha: float = 1.0,
        same_person_iou: float = 0.5,
        first_pass: str = "topdown",
        trust_checkpoint: bool = False,
    ) -> None:
        if first_pass not in ("topdown", "detector"):
            raise ValueError(f"pose.first_pass must be 'topdown' or 'detector', got {first_pass!r}")
        self.first_pass = first_pass
        if condition not in ("none", "others_dimmed"):
            raise ValueError(f"pose.condition must be 'none' or 'others_dimmed', got {condition!r}")
        if not 0.0 <= condition_alpha <= 1.0:
            raise ValueError(f"pose.condition_alpha must be in [0, 1], got {condition_alpha}")
        self.condition = condition
        self.condition_alpha = condition_alpha
        self.same_person_iou = same_person_iou
        # Same rule as UltralyticsDetector: registered sha256 or trusted.
        self.model = load_ultralytics(checkpoint, weights_dirs, device, trusted=trust_checkpoint)
        self.device = device
        self.imgsz = imgsz
        self.padding = padding
        self.score_thr = score_thr

    def estimate(self, image: np.ndarray, people: Instances, others: Instances | None = None) -> Instances:
        return self.estimate_batch([image], [people], [others])[0]

    @torch.inference_mode()
    def estimate_batch(
        self, images: Sequence[np.ndarray], people: Sequence[Instances],
        others: Sequence[Instances | None] | None = None,
    ) -> list[Instances]:
        """Poses of ``people[b]`` on ``images[b]``; the crops of every image go
        through the model as one batch."""
        others = list(others) if others is not None else [None] * len(people)
        out = list(people)
        crops: list[np.ndarray] = []
        pending: list[tuple[int, list[tuple[int, int]], list[np.ndarray]]] = []
        for b, (image, p, o) in enumerate(zip(images, people, others, strict=True)):
            if len(p) == 0:
                continue
            first = o is None or len(o) == 0
            if self.first_pass == "detector" and first and p.keypoint_scores.any():
                scores = p.keypoint_scores
                out[b] = p.replace(visibility=scores.copy(), presence=scores.copy())
                continue
            mine, origins, query = self._crops(image, p, o)
            crops += mine
            pending.append((b, origins, query))
        if not crops:
            return out
        # rect=False: every crop is letterboxed to the same square, so a crop's
        # pose does not depend on which other crops share the call.
        results = iter(predict(
            self.model, crops, imgsz=self.imgsz, conf=self.score_thr, classes=[0], device=self.device,
            rect=False,
        ))
        for b, origins, query in pending:
            out[b] = self._read([next(results) for _ in origins], people[b], origins, query)
        return out

    def _crops(
        self, image: np.ndarray, people: Instances, others: Instances | None
    ) -> tuple[list[np.ndarray], list[tuple[int, int]], list[np.ndarray]]:
        """Each person's padded box crop (BGR, conditioned), its origin in the
        image and the person's box in crop pixels."""
        h, w = image.shape[:2]
        hide = self._hidden_pixels(people, others)
        crops, origins, query = [], [], []
        for i, box in enumerate(people.boxes):
            cx, cy = (box[:2] + box[2:]) / 2
            half = (box[2:] - box[:2]) * self.padding / 2
            x0, y0 = int(max(0, np.floor(cx - half[0]))), int(max(0, np.floor(cy - half[1])))
            x1, y1 = int(min(w, np.ceil(cx + half[0]))), int(min(h, np.ceil(cy + half[1])))
            x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
            crop = image[y0:y1, x0:x1, ::-1]
            if hide is not None:
                crop = _dim(crop, hide(i, y0, y1, x0, x1), self.condition_alpha)
            crops.append(np.ascontiguousarray(crop))
            origins.append((x0, y0))
            query.append(box - np.array([x0, y0, x0, y0], np.float32))
        return crops, origins, query

    @staticmethod
    def _read(
        results: list, people: Instances, origins: list[tuple[int, int]], query: list[np.ndarray]
    ) -> Instances:
        """Each crop's pose whose box best overlaps the person's, in image pixels."""
        n = len(people)
        kpts = np.zeros((n, NUM_KEYPOINTS, 2), np.float32)
        scores = np.zeros((n, NUM_KEYPOINTS), np.float32)
        for i, result in enumerate(results):
            if result.keypoints is None or len(result.boxes) == 0:
                # Nothing found in the crop: keep an all-zero-score pose at the box centre.
                kpts[i] = (people.boxes[i, :2] + people.boxes[i, 2:]) / 2
                continue
            boxes = result.boxes.xyxy.float().cpu().numpy()
            best = int(np.argmax(box_iou(query[i][None], boxes)[0] + 1e-3 * result.boxes.conf.cpu().numpy()))
            kpts[i] = result.keypoints.xy[best].float().cpu().numpy() + np.array(origins[i])
            if result.keypoints.conf is not None:
                scores[i] = result.keypoints.conf[best].float().cpu().numpy()
        return people.replace(
            keypoints=kpts, keypoint_scores=scores, visibility=scores.copy(), presence=scores.copy()
        )

    def _hidden_pixels(self, people: Instances, others: Instances | None):
        """``hide(i, y0, y1, x0, x1)`` -> the (crop) pixels to dim for person i, or
        None when nothing is conditioned. An earlier person whose box person i
        re-detects (IoU >= ``same_person_iou``) is not dimmed in i's crop: that
        is i's own body, found before."""
        if self.condition == "none" or others is None or len(others) == 0 or self.condition_alpha == 0:
            return None
        found = to_numpy(others.masks)
        if not found.any():
            return None
        own = to_numpy(people.masks)
        same = box_iou(people.boxes, others.boxes) >= self.same_person_iou  # (N, M)

        def hide(i: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
            region = found[~same[i], y0:y1, x0:x1].any(0)
            return region & ~own[i, y0:y1, x0:x1]

        return hide


def _dim(crop: np.ndarray, where: np.ndarray, alpha: float) -> np.ndarray:
    """``crop`` (h, w, 3) uint8 with the pixels ``where`` (h, w) scaled by 1 - alpha."""
    factor = np.where(where, np.float32(1 - alpha), np.float32(1))[..., None]
    return (crop.astype(np.float32) * factor + 0.5).astype(np.uint8)


@POSE_ESTIMATORS.register_module()
class DetectorKeypoints:
    """Keeps the keypoints the detector already predicted (YOLO-pose as a
    one-stage detector+pose model). Fastest; note the keypoints then come from
    the masked detector input rather than the original image."""

    def estimate(self, image: np.ndarray, people: Instances) -> Instances:
        if len(people) and not np.any(people.keypoint_scores):
            raise RuntimeError(
                "DetectorKeypoints needs a detector that predicts keypoints (e.g. a YOLO-pose "
                "checkpoint); this detector returned none"
            )
        return people.replace(
            visibility=people.keypoint_scores.copy(), presence=people.keypoint_scores.copy()
        )
