"""Person detectors: mmdet models, Ultralytics YOLO, and ground-truth boxes."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..images import PixelArray
from ..structures import Instances, to_numpy, to_tensor
from ..weights import resolve_checkpoint
from .base import DETECTORS, compile_in_place, resolve_model_config
from .yolo import load_ultralytics, predict

logger = logging.getLogger(__name__)


@DETECTORS.register_module()
class MMDetDetector:
    """Any mmdet detector (config + checkpoint); the BMP default is RTMDet-Ins-L,
    which also returns instance masks.

    Args:
        config: mmdet config path or ``'mmdet::rtmdet/rtmdet-ins_l_8xb32-300e_coco.py'``.
        checkpoint: registry name or file (see :mod:`bmp.weights`).
        score_thr, nms_iou, max_per_img: the model's own test-time filtering
            (BMP: 0.05, 0.6, 40). The loop applies its stricter person filter after.
        person_class: the label index of "person" in the model's classes.
        device_preprocess: letterbox and normalise on the model's device (one
            upload of the raw image) when the config's test pipeline is the
            plain Resize(keep_ratio) + Pad of RTMDet/YOLO-style configs; else,
            or with False, mmdet's own CPU pipeline.
        trust_checkpoint: allow fully unpickling an unregistered checkpoint
            file that holds more than tensors (see :func:`bmp.weights.check_trusted`).
    """

    def __init__(
        self,
        config: str,
        checkpoint: str | None,
        device: str = "cpu",
        weights_dirs: Sequence[str] = (),
        score_thr: float = 0.05,
        nms_iou: float = 0.6,
        max_per_img: int = 40,
        person_class: int = 0,
        device_preprocess: bool = True,
        strict: bool = True,
        trust_checkpoint: bool = False,
    ) -> None:
        from mmdet.apis import init_detector
        from mmengine.config import Config
        from mmengine.registry import DefaultScope

        from ..weights import load_or_warn

        cfg = Config.fromfile(resolve_model_config(config))
        test_cfg = cfg.model.get("test_cfg") or {}
        # Two-stage models nest their test settings under rcnn.
        target = test_cfg.get("rcnn", test_cfg)
        target.update(score_thr=score_thr, max_per_img=max_per_img)
        target["nms"] = dict(type="nms", iou_threshold=nms_iou)
        # Resolved before building, so a missing file fails fast.
        path = resolve_checkpoint(checkpoint, weights_dirs) if checkpoint is not None else None
        # Built without a checkpoint: mmengine's loader would unpickle the file
        # itself; bmp.weights applies the safety rule instead.
        with DefaultScope.overwrite_default_scope("mmdet"):
            self.model = init_detector(cfg, checkpoint=None, device=device)
        load_or_warn(self.model, path, strict=strict, trusted=trust_checkpoint)
        self.model.eval()
        self.person_class = person_class
        self.device = device
        self._pipeline = None
        self._letterbox = _letterbox_spec(cfg) if device_preprocess else None
        # The loop then hands over its device copy of the image (and blacks it out there).
        self.takes_device_image = self._letterbox is not None

    def compile_models(self, backend: str) -> list[str]:
        """The backbone (the letterboxed input has one size per aspect ratio)."""
        compile_in_place(self.model.backbone, backend)
        return ["detector.backbone"]

    def _test_pipeline(self):
        from mmcv.transforms import Compose
        from mmdet.utils import get_test_pipeline_cfg

        if self._pipeline is None:
            steps = get_test_pipeline_cfg(self.model.cfg.copy())
            steps[0].type = "mmdet.LoadImageFromNDArray"
            self._pipeline = Compose(steps)
        return self._pipeline

    def detect(self, image: PixelArray) -> Instances:
        return self.detect_batch([image])[0]

    @torch.inference_mode()
    def detect_batch(self, images: Sequence[PixelArray]) -> list[Instances]:
        """People in every image; letterboxed inputs of one shape (all of them,
        when the pipeline pads to a fixed size) go through the model together."""
        from mmdet.apis import inference_detector
        from mmengine.registry import DefaultScope

        results: list = [None] * len(images)
        with DefaultScope.overwrite_default_scope("mmdet"), torchvision_nms():
            if self._letterbox is not None:
                inputs = [self._letterboxed(image) for image in images]
                for rows in same_shape_groups([x for x, _ in inputs]):
                    batch = torch.stack([inputs[i][0] for i in rows])
                    predicted = self.model.predict(batch, [inputs[i][1] for i in rows], rescale=True)
                    for i, result in zip(rows, predicted, strict=True):
                        results[i] = result
            else:
                for i, image in enumerate(images):
                    # mmdet models are trained on BGR images (cv2 decoding).
                    bgr = np.ascontiguousarray(to_numpy(image)[..., ::-1])
                    results[i] = inference_detector(self.model, bgr, test_pipeline=self._test_pipeline())
        return [self._people(r, tuple(image.shape[:2])) for r, image in zip(results, images, strict=True)]

    def _people(self, result, size: tuple[int, int]) -> Instances:
        pred = result.pred_instances
        keep = (pred.labels == self.person_class).nonzero().flatten()
        boxes = pred.bboxes[keep].float().cpu().numpy()
        scores = pred.scores[keep].float().cpu().numpy()
        if "masks" in pred and len(keep):
            masks = pred.masks[keep].bool()  # stays on the device
        else:  # none, or a box-only model: empty masks, made where the loop's masks live
            masks = torch.zeros((len(keep), *size), dtype=torch.bool, device=pred.bboxes.device)
        return Instances(size, boxes=boxes, det_scores=scores, masks=masks)

    def _letterboxed(self, image: PixelArray):
        """mmdet's Resize(keep_ratio) + Pad + DetDataPreprocessor as tensor ops:
        the model input (3, H, W) and its data sample."""
        import torch.nn.functional as F
        from mmdet.structures import DetDataSample

        scale, pad_size, pad_value = self._letterbox
        h, w = image.shape[:2]
        factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
        new_w, new_h = int(w * factor + 0.5), int(h * factor + 0.5)  # mmcv's rounding
        preprocessor = self.model.data_preprocessor
        x = to_tensor(image, preprocessor.mean.device).permute(2, 0, 1).float()
        if not getattr(preprocessor, "_channel_conversion", False):
            x = x[[2, 1, 0]]  # the model expects BGR, as cv2 decodes
        x = F.interpolate(x[None], size=(new_h, new_w), mode="bilinear", align_corners=False)
        x = x.round().clamp(0, 255)  # mmcv resizes uint8 images
        pad_h, pad_w = (pad_size[1], pad_size[0]) if pad_size else (new_h, new_w)
        x = F.pad(x, (0, pad_w - new_w, 0, pad_h - new_h), value=pad_value)
        x = (x - preprocessor.mean) / preprocessor.std
        sample = DetDataSample(metainfo=dict(
            img_shape=(new_h, new_w), ori_shape=(h, w), scale_factor=(new_w / w, new_h / h),
            pad_shape=(pad_h, pad_w), batch_input_shape=(pad_h, pad_w),
        ))
        return x[0], sample


def same_shape_groups(arrays: Sequence[PixelArray]) -> list[list[int]]:
    """The indices of ``arrays`` grouped by shape, in first-seen order: the
    inputs one model call can stack."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, array in enumerate(arrays):
        groups.setdefault(tuple(array.shape), []).append(i)
    return list(groups.values())


_TORCHVISION_NMS_CFG = {"iou_threshold", "iou_thr", "offset", "score_threshold", "max_num", "split_thr"}


@contextlib.contextmanager
def torchvision_nms() -> Iterator[None]:
    """mmdet's post-processing on torchvision's NMS instead of mmcv's compiled one.

    mmcv is built with CPU ops only (tools/install.sh), so ``mmcv.ops.nms`` has no
    CUDA kernel; torchvision's ships with torch for every device. mmdet's heads
    bind ``batched_nms`` / ``nms`` by name at import (``from mmcv.ops import
    batched_nms``), so those names are swapped, for the duration of the call only,
    in every loaded mmdet module that holds mmcv's function: nothing is forked,
    and other mmcv users are untouched. Not thread-safe (module globals).
    """
    import sys

    # Recognised by where they were defined, not by identity with mmcv.ops's
    # current attributes, which a test (or another tool) may have replaced.
    swaps = {("mmcv.ops.nms", "batched_nms"): _batched_nms, ("mmcv.ops.nms", "nms"): _nms}
    patched = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("mmdet.") or module is None:
            continue
        for attr in ("batched_nms", "nms"):
            value = getattr(module, attr, None)
            key = (getattr(value, "__module__", None), getattr(value, "__qualname__", None))
            if key in swaps:
                patched.append((module, attr, value))
                setattr(module, attr, swaps[key])
    try:
        yield
    finally:
        for module, attr, value in patched:
            setattr(module, attr, value)


def _batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    nms_cfg: dict | None,
    class_agnostic: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mmcv.ops.batched_nms`` (same arguments, same ``(dets (K, 5), keep)``),
    with the per-class offset trick copied from mmcv so that the boxes NMS sees
    are bit-identical, and the NMS itself from torchvision."""
    from mmcv import ops

    cfg = dict(nms_cfg) if nms_cfg is not None else None
    if cfg is not None:
        class_agnostic = cfg.pop("class_agnostic", class_agnostic)
    # Soft-NMS, rotated boxes or unknown options: only mmcv has them.
    if cfg is not None and (
        cfg.get("type", "nms") != "nms" or boxes.size(-1) != 4 or cfg.get("offset", 0) != 0
        or set(cfg) - {"type"} - _TORCHVISION_NMS_CFG
    ):
        return ops.batched_nms(boxes, scores, idxs, nms_cfg, class_agnostic)
    if cfg is None:  # mmcv: no NMS, only sorted
        scores, inds = scores.sort(descending=True)
        return torch.cat([boxes[inds], scores[:, None]], -1), inds
    cfg.pop("type", None)
    if class_agnostic:
        boxes_for_nms = boxes
    else:
        offsets = idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
        boxes_for_nms = boxes + offsets[:, None]
    split_thr = cfg.pop("split_thr", 10000)
    if boxes_for_nms.shape[0] < split_thr:
        keep = _nms_keep(boxes_for_nms, scores, **cfg)
        boxes, scores = boxes[keep], scores[keep]
    else:  # mmcv's split path: class by class, then sorted by score
        max_num = cfg.pop("max_num", -1)
        total = scores.new_zeros(scores.size(), dtype=torch.bool)
        for value in torch.unique(idxs):
            mask = (idxs == value).nonzero(as_tuple=False).view(-1)
            total[mask[_nms_keep(boxes_for_nms[mask], scores[mask], **cfg)]] = True
        keep = total.nonzero(as_tuple=False).view(-1)
        scores, inds = scores[keep].sort(descending=True)
        keep = keep[inds]
        boxes = boxes[keep]
        if max_num > 0:
            keep, boxes, scores = keep[:max_num], boxes[:max_num], scores[:max_num]
    return torch.cat([boxes, scores[:, None]], -1), keep


def _nms(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, offset: int = 0,
    score_threshold: float = 0, max_num: int = -1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mmcv.ops.nms`` for tensors: ``(dets (K, 5), keep)``."""
    keep = _nms_keep(boxes, scores, iou_threshold, offset, score_threshold, max_num)
    return torch.cat((boxes[keep], scores[keep].reshape(-1, 1)), dim=1), keep


def _nms_keep(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float | None = None, offset: int = 0,
    score_threshold: float = 0, max_num: int = -1, iou_thr: float | None = None,
) -> torch.Tensor:
    """Kept indices, as mmcv's ``NMSop`` (score filter, NMS, then ``max_num``)."""
    import torchvision

    if offset != 0:  # the legacy "+1" box size: torchvision has no such option
        raise ValueError("torchvision NMS supports offset=0 only")
    threshold = iou_threshold if iou_threshold is not None else iou_thr
    valid = None
    if score_threshold > 0:
        valid = torch.nonzero(scores > score_threshold, as_tuple=False).squeeze(1)
        boxes, scores = boxes[valid], scores[valid]
    # Sorted first with mmcv's own call (its kernel sorts the same way): boxes of
    # equal score then come in mmcv's order, and torchvision's stable sort keeps it.
    order = scores.sort(0, descending=True)[1]
    dtype = torch.promote_types(boxes.dtype, scores.dtype)
    # mmcv compares IoUs with a C float threshold: the same value, as a double.
    keep = order[torchvision.ops.nms(boxes[order].to(dtype), scores[order].to(dtype),
                                     float(np.float32(threshold)))]
    if max_num > 0:
        keep = keep[:max_num]
    if valid is not None:
        keep = valid[keep]
    return keep


def _letterbox_spec(cfg) -> tuple[tuple[int, int], tuple[int, int] | None, float] | None:
    """(Resize scale, Pad size, pad value) when the test pipeline is exactly
    load -> Resize(keep_ratio) -> [Pad] -> [annotations] -> pack and the
    preprocessor only normalises; None otherwise (use mmdet's pipeline)."""
    try:
        steps = [dict(t) for t in cfg.test_dataloader.dataset.pipeline]
    except AttributeError:
        return None
    kinds = [t["type"].split(".")[-1] for t in steps]
    kinds = [k for k in kinds if k not in ("LoadImageFromFile", "LoadAnnotations", "PackDetInputs")]
    pre = cfg.model.get("data_preprocessor", {})
    if kinds not in (["Resize", "Pad"], ["Resize"]) or pre.get("batch_augments") or pre.get(
        "pad_size_divisor", 1
    ) != 1:
        return None
    resize = next(t for t in steps if t["type"].endswith("Resize"))
    if not resize.get("keep_ratio") or not isinstance(resize.get("scale"), tuple | list):
        return None
    pad = next((t for t in steps if t["type"].endswith("Pad")), None)
    if pad is not None and ("size" not in pad or pad.get("pad_to_square")):
        return None
    value = pad["pad_val"]["img"] if pad is not None and isinstance(pad.get("pad_val"), dict) else 0
    value = float(value[0] if isinstance(value, tuple | list) else value)
    return tuple(resize["scale"]), (tuple(pad["size"]) if pad is not None else None), value


@DETECTORS.register_module()
class UltralyticsDetector:
    """An Ultralytics YOLO checkpoint (detect, pose or segment task).

    A pose checkpoint (``yolo11n-pose``) also fills ``keypoints`` and
    ``keypoint_scores``; a segment checkpoint fills ``masks``. Needs the
    optional ``ultralytics`` package (``pip install bmp[yolo]``).

    Ultralytics checkpoints pickle whole model objects, so a file loads only
    when its sha256 is registered (``yolo11n``, ``yolo11n-pose``) or it is
    trusted: ``trust_checkpoint=True`` or ``--trust-checkpoint PATH``.
    """

    def __init__(
        self,
        checkpoint: str = "yolo11n-pose",
        device: str = "cpu",
        weights_dirs: Sequence[str] = (),
        imgsz: int = 640,
        score_thr: float = 0.05,
        nms_iou: float = 0.6,
        max_per_img: int = 40,
        person_class: int = 0,
        trust_checkpoint: bool = False,
    ) -> None:
        self.model = load_ultralytics(checkpoint, weights_dirs, device, trusted=trust_checkpoint)
        self.device = device
        self.imgsz = imgsz
        self.score_thr = score_thr
        self.nms_iou = nms_iou
        self.max_per_img = max_per_img
        self.person_class = person_class

    def detect(self, image: np.ndarray) -> Instances:
        return self.detect_batch([image])[0]

    @torch.inference_mode()
    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Instances]:
        """People in every image; images of one shape share a model call (with
        several shapes Ultralytics would pad all to a square, and the answer
        for an image would depend on its batch)."""
        found: list = [None] * len(images)
        for rows in same_shape_groups(images):
            results = predict(
                self.model,
                [np.ascontiguousarray(to_numpy(images[i])[..., ::-1]) for i in rows],
                imgsz=self.imgsz,
                conf=self.score_thr,
                iou=self.nms_iou,
                max_det=self.max_per_img,
                classes=[self.person_class],
                device=self.device,
            )
            for i, result in zip(rows, results, strict=True):
                found[i] = instances_from_ultralytics(result, images[i].shape[:2])
        return found


def instances_from_ultralytics(result, image_size: tuple[int, int]) -> Instances:
    """Convert one ``ultralytics.engine.results.Results`` to :class:`Instances`."""
    boxes = result.boxes.xyxy.float().cpu().numpy()
    scores = result.boxes.conf.float().cpu().numpy()
    fields: dict[str, np.ndarray] = {}
    if result.keypoints is not None and len(boxes):
        kpts = result.keypoints
        fields["keypoints"] = kpts.xy.float().cpu().numpy()
        conf = kpts.conf.float().cpu().numpy() if kpts.conf is not None else None
        if conf is None:
            conf = np.ones(fields["keypoints"].shape[:2], np.float32)
        fields["keypoint_scores"] = conf
        fields["visibility"] = conf
        fields["presence"] = conf
    if result.masks is not None and len(boxes):
        data = result.masks.data.float().cpu().numpy()
        # Ultralytics returns masks at the letterboxed input size: map back.
        if data.shape[1:] != tuple(image_size):
            fields["masks"] = np.stack([_unletterbox(m, image_size) for m in data])
        else:
            fields["masks"] = data > 0.5
    return Instances(image_size, boxes=boxes, det_scores=scores, **fields)


def _unletterbox(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = size
    mh, mw = mask.shape
    gain = min(mh / h, mw / w)
    pad_w, pad_h = (mw - w * gain) / 2, (mh - h * gain) / 2
    top, left = int(round(pad_h - 0.1)), int(round(pad_w - 0.1))
    crop = mask[top : mh - int(round(pad_h + 0.1)), left : mw - int(round(pad_w + 0.1))]
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5


@DETECTORS.register_module()
class GroundTruthDetector:
    """Boxes (and masks) of a COCO-format annotation file, looked up by image
    file name: oracle detection for research, and deterministic input for tests.

    It ignores the masked input image, so every iteration proposes the same
    people; the loop's pose NMS must then remove them as duplicates.
    """

    def __init__(self, ann_file: str, min_area: float = 0.0, with_masks: bool = True) -> None:
        from pycocotools.coco import COCO

        path = Path(ann_file)
        if not path.is_file():
            raise FileNotFoundError(f"annotation file not found: {path}")
        self.coco = COCO(os.fspath(path))
        self.by_name = {Path(i["file_name"]).name: i for i in self.coco.dataset["images"]}
        self.min_area = min_area
        self.with_masks = with_masks
        self.current: str | None = None

    def select(self, file_name: str) -> None:
        """Which image the next ``detect`` calls describe."""
        if Path(file_name).name not in self.by_name:
            raise KeyError(f"{file_name} is not in the annotation file")
        self.current = Path(file_name).name

    def detect(self, image: np.ndarray) -> Instances:
        if self.current is None:
            raise RuntimeError("GroundTruthDetector.select(file_name) must be called first")
        info = self.by_name[self.current]
        anns = [
            a for a in self.coco.imgToAnns[info["id"]]
            if not a.get("iscrowd", 0) and a["area"] >= self.min_area
        ]
        h, w = image.shape[:2]
        boxes = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        masks = None
        if self.with_masks and anns:
            masks = np.stack([self.coco.annToMask(a).astype(bool) for a in anns])
        return Instances((h, w), boxes=boxes, det_scores=np.ones(len(anns), np.float32), masks=masks)
