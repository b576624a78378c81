"""Person detectors: mmdet models, Ultralytics YOLO, and ground-truth boxes."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..structures import Instances
from ..weights import resolve_checkpoint
from .base import DETECTORS, resolve_model_config

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
        strict: bool = True,
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
        with DefaultScope.overwrite_default_scope("mmdet"):
            self.model = init_detector(cfg, checkpoint=None, device=device)
        load_or_warn(self.model, path, strict=strict)
        self.model.eval()
        self.person_class = person_class
        self.device = device
        self._pipeline = None

    def _test_pipeline(self):
        from mmcv.transforms import Compose
        from mmdet.utils import get_test_pipeline_cfg

        if self._pipeline is None:
            steps = get_test_pipeline_cfg(self.model.cfg.copy())
            steps[0].type = "mmdet.LoadImageFromNDArray"
            self._pipeline = Compose(steps)
        return self._pipeline

    @torch.inference_mode()
    def detect(self, image: np.ndarray) -> Instances:
        from mmdet.apis import inference_detector
        from mmengine.registry import DefaultScope

        # mmdet models are trained on BGR images (cv2 decoding).
        bgr = np.ascontiguousarray(image[..., ::-1])
        with DefaultScope.overwrite_default_scope("mmdet"):
            result = inference_detector(self.model, bgr, test_pipeline=self._test_pipeline())
        pred = result.pred_instances
        keep = (pred.labels == self.person_class).nonzero().flatten()
        boxes = pred.bboxes[keep].float().cpu().numpy()
        scores = pred.scores[keep].float().cpu().numpy()
        masks = None
        if "masks" in pred and len(keep):
            masks = pred.masks[keep].bool().cpu().numpy()
        return Instances(image.shape[:2], boxes=boxes, det_scores=scores, masks=masks)


@DETECTORS.register_module()
class UltralyticsDetector:
    """An Ultralytics YOLO checkpoint (detect, pose or segment task).

    A pose checkpoint (``yolo11n-pose``) also fills ``keypoints`` and
    ``keypoint_scores``; a segment checkpoint fills ``masks``. Needs the
    optional ``ultralytics`` package (``pip install bmp[yolo]``).
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
    ) -> None:
        self.model = load_ultralytics(checkpoint, weights_dirs, device)
        self.device = device
        self.imgsz = imgsz
        self.score_thr = score_thr
        self.nms_iou = nms_iou
        self.max_per_img = max_per_img
        self.person_class = person_class

    @torch.inference_mode()
    def detect(self, image: np.ndarray) -> Instances:
        result = self.model.predict(
            np.ascontiguousarray(image[..., ::-1]),
            imgsz=self.imgsz,
            conf=self.score_thr,
            iou=self.nms_iou,
            max_det=self.max_per_img,
            classes=[self.person_class],
            device=self.device,
            verbose=False,
        )[0]
        return instances_from_ultralytics(result, image.shape[:2])


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


def load_ultralytics(checkpoint: str, weights_dirs: Sequence[str], device: str):
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        raise ImportError(
            "the Ultralytics backend needs the optional package: pip install 'bmp[yolo]'"
        ) from exc
    from ..weights import CHECKPOINTS, sha256sum

    path = resolve_checkpoint(checkpoint, weights_dirs)
    digest = sha256sum(path)
    if not any(c.matches_digest(digest) for c in CHECKPOINTS.values()):
        # Ultralytics unpickles whole objects from its checkpoints.
        logger.warning(
            "%s is not a registered official checkpoint; Ultralytics will unpickle it. "
            "Load only files you trust.", path
        )
    model = YOLO(str(path))
    model.to(device)
    return model


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
