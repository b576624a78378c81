"""Top-down pose estimators: mmpose models and Ultralytics YOLO-pose."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..structures import NUM_KEYPOINTS, Instances
from ..weights import resolve_checkpoint
from .base import POSE_ESTIMATORS, resolve_model_config
from .detectors import load_ultralytics


@POSE_ESTIMATORS.register_module()
class MMPoseTopDown:
    """Any mmpose top-down model (config + checkpoint), all boxes of an
    iteration in one forward pass.

    Crops follow the model's own test pipeline (BMP: box padding 1.25, UDP
    affine to 192x256). Models without visibility/presence heads report their
    keypoint scores in those fields.
    """

    def __init__(
        self,
        config: str,
        checkpoint: str,
        device: str = "cpu",
        weights_dirs: Sequence[str] = (),
        flip_test: bool = True,
        strict: bool = True,
    ) -> None:
        from mmengine.config import Config
        from mmengine.registry import DefaultScope
        from mmpose.apis import init_model

        from ..weights import load_weights

        cfg = Config.fromfile(resolve_model_config(config))
        cfg.model.setdefault("test_cfg", {})["flip_test"] = flip_test
        path = resolve_checkpoint(checkpoint, weights_dirs)
        with DefaultScope.overwrite_default_scope("mmpose"):
            self.model = init_model(cfg, checkpoint=None, device=device)
        load_weights(self.model, path, strict=strict)
        self.model.eval()
        self.device = device

    @torch.inference_mode()
    def estimate(self, image: np.ndarray, people: Instances) -> Instances:
        if len(people) == 0:
            return people
        from mmengine.registry import DefaultScope
        from mmpose.apis import inference_topdown

        bgr = np.ascontiguousarray(image[..., ::-1])
        with DefaultScope.overwrite_default_scope("mmpose"):
            samples = inference_topdown(self.model, bgr, people.boxes, bbox_format="xyxy")
        kpts = np.concatenate([s.pred_instances.keypoints for s in samples])[:, :NUM_KEYPOINTS]
        scores = np.concatenate([s.pred_instances.keypoint_scores for s in samples])
        scores = scores[:, :NUM_KEYPOINTS].astype(np.float32)
        visibility = _optional_field(samples, "keypoints_visible", scores)
        presence = _optional_field(samples, "keypoints_presence", scores)
        return people.replace(
            keypoints=kpts.astype(np.float32),
            keypoint_scores=scores,
            visibility=visibility,
            presence=presence,
        )


def _optional_field(samples, name: str, fallback: np.ndarray) -> np.ndarray:
    values = [getattr(s.pred_instances, name, None) for s in samples]
    if any(v is None for v in values):
        return fallback.copy()
    out = np.concatenate([np.asarray(v, dtype=np.float32) for v in values])[:, :NUM_KEYPOINTS]
    # mmpose fills keypoints_visible with the keypoint scores when no head
    # predicts it; either way the values are probabilities.
    return np.clip(out.reshape(fallback.shape), 0.0, 1.0)


@POSE_ESTIMATORS.register_module()
class UltralyticsTopDown:
    """YOLO-pose used top-down: every box is cropped from the original image
    (padded by ``padding``), the crops go through the model as one batch, and
    the pose whose box best overlaps the query box is kept.

    This keeps BMP's rule that pose looks at the original image, not the
    masked detector input, with the only pose weights available offline.
    """

    def __init__(
        self,
        checkpoint: str = "yolo11n-pose",
        device: str = "cpu",
        weights_dirs: Sequence[str] = (),
        imgsz: int = 320,
        padding: float = 1.25,
        score_thr: float = 0.05,
    ) -> None:
        self.model = load_ultralytics(checkpoint, weights_dirs, device)
        self.device = device
        self.imgsz = imgsz
        self.padding = padding
        self.score_thr = score_thr

    @torch.inference_mode()
    def estimate(self, image: np.ndarray, people: Instances) -> Instances:
        n = len(people)
        if n == 0:
            return people
        h, w = image.shape[:2]
        crops, origins, query = [], [], []
        for box in people.boxes:
            cx, cy = (box[:2] + box[2:]) / 2
            half = (box[2:] - box[:2]) * self.padding / 2
            x0, y0 = int(max(0, np.floor(cx - half[0]))), int(max(0, np.floor(cy - half[1])))
            x1, y1 = int(min(w, np.ceil(cx + half[0]))), int(min(h, np.ceil(cy + half[1])))
            x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
            crops.append(np.ascontiguousarray(image[y0:y1, x0:x1, ::-1]))
            origins.append((x0, y0))
            query.append(box - np.array([x0, y0, x0, y0], np.float32))
        results = self.model.predict(
            crops, imgsz=self.imgsz, conf=self.score_thr, classes=[0],
            device=self.device, verbose=False,
        )
        kpts = np.zeros((n, NUM_KEYPOINTS, 2), np.float32)
        scores = np.zeros((n, NUM_KEYPOINTS), np.float32)
        for i, result in enumerate(results):
            if result.keypoints is None or len(result.boxes) == 0:
                # Nothing found in the crop: keep an all-zero-score pose at the box centre.
                kpts[i] = (people.boxes[i, :2] + people.boxes[i, 2:]) / 2
                continue
            boxes = result.boxes.xyxy.float().cpu().numpy()
            best = int(np.argmax(_iou(query[i], boxes) + 1e-3 * result.boxes.conf.cpu().numpy()))
            kpts[i] = result.keypoints.xy[best].float().cpu().numpy() + np.array(origins[i])
            if result.keypoints.conf is not None:
                scores[i] = result.keypoints.conf[best].float().cpu().numpy()
        return people.replace(
            keypoints=kpts, keypoint_scores=scores, visibility=scores.copy(), presence=scores.copy()
        )


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


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / np.maximum(area + areas - inter, 1e-9)
