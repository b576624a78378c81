"""COCO-format person datasets for SAM-pose2seg training and validation.

A dataset is a COCO json with person masks (polygons, or RLE as in OCHuman),
an image folder, and a source of keypoints: the annotations' own (``'gt'``) or
a COCO keypoint results file of detected poses, matched to GT people by box IoU.

Training items are built in the model's input frame, the way
``SAM2ImagePredictor`` sees an image: resized (not letterboxed) to
``S x S`` and normalised by sam2's own transform; masks and keypoints are
scaled the same way.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from ..config import ConfigError
from ..images import load_image
from ..masks import decode_rle, segmentation_to_rle
from .config import DatasetConfig

logger = logging.getLogger(__name__)

NUM_KEYPOINTS = 17
#: COCO left/right keypoint pairs, exchanged by a horizontal flip.
FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
#: COCO keypoint flag v -> visibility: visible 1.0, labelled but occluded 0.5, absent 0.
COCO_VISIBILITY = np.array([0.0, 0.5, 1.0], dtype=np.float32)


@dataclass
class PoseSet:
    """Poses of one image in original pixels, used as prompts.

    - ``keypoints`` (N, 17, 2) float32; ``keypoint_scores`` (N, 17);
      ``visibility`` (N, 17) in [0, 1]; ``scores`` (N,) instance scores;
      ``boxes`` (N, 4) xywh of detected poses (None for GT poses).
    """

    keypoints: np.ndarray
    keypoint_scores: np.ndarray
    visibility: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray | None = None

    @staticmethod
    def empty() -> PoseSet:
        z = np.zeros((0, NUM_KEYPOINTS), np.float32)
        return PoseSet(np.zeros((0, NUM_KEYPOINTS, 2), np.float32), z, z.copy(), np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.keypoints)

    def select(self, keep: np.ndarray) -> PoseSet:
        boxes = None if self.boxes is None else self.boxes[keep]
        return PoseSet(self.keypoints[keep], self.keypoint_scores[keep], self.visibility[keep],
                       self.scores[keep], boxes)


@dataclass
class ImageEntry:
    """One image: its trainable people (GT mask + the pose matched to it) and
    the poses that prompt the validation predictions."""

    image_id: int
    path: Path
    height: int
    width: int
    ann_ids: list[int]
    keypoints: np.ndarray  # (N, 17, 2) pose of each trainable person, original pixels
    visibility: np.ndarray  # (N, 17); all 0 when no pose is available
    prompts: PoseSet = field(default_factory=PoseSet.empty)


class PersonMaskDataset:
    """People with masks (and poses) from one COCO-format dataset.

    People kept: category ``person``, ``iscrowd`` 0, a segmentation, ``area``
    >= ``min_mask_area``. Images without such a person are dropped.

    Raises:
        ConfigError: missing files or folders, missing images, a malformed
            annotation or results file, or no usable person at all.
    """

    def __init__(self, spec: DatasetConfig, min_mask_area: float = 0.0) -> None:
        self.spec = spec
        ann_file, img_dir = Path(spec.ann_file), Path(spec.img_dir)
        if not ann_file.is_file():
            raise ConfigError(f"dataset annotation file not found: {ann_file}")
        if not img_dir.is_dir():
            raise ConfigError(f"dataset image folder not found: {img_dir}")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.coco = COCO(str(ann_file))
        except Exception as exc:
            raise ConfigError(f"cannot read COCO annotations {ann_file}: {exc}") from exc
        self.person_category = _person_category(self.coco, ann_file)
        detections = None if spec.keypoints == "gt" else _load_results(Path(spec.keypoints), self.coco)
        self.images: list[ImageEntry] = []
        unmatched = total = 0
        for image_id in sorted(self.coco.getImgIds()):
            info = self.coco.imgs[image_id]
            anns = [
                a for a in self.coco.imgToAnns.get(image_id, [])
                if a.get("category_id") == self.person_category and not a.get("iscrowd", 0)
                and a.get("segmentation") and float(a.get("area", np.inf)) >= min_mask_area
            ]
            if not anns:
                continue
            gt = _gt_poses(anns)
            if detections is None:
                kpts, vis = gt.keypoints, gt.visibility
                prompts = gt.select(gt.keypoint_scores.max(1) > 0)
            else:
                prompts = detections.get(image_id, PoseSet.empty())
                boxes = [a["bbox"] if "bbox" in a else mask_utils.toBbox(self.coco.annToRLE(a)) for a in anns]
                kpts, vis, n_unmatched = _match(boxes, prompts, spec.match_iou)
                unmatched += n_unmatched
            total += len(anns)
            self.images.append(ImageEntry(
                image_id=int(image_id), path=img_dir / info["file_name"],
                height=int(info["height"]), width=int(info["width"]),
                ann_ids=[int(a["id"]) for a in anns], keypoints=kpts, visibility=vis,
                prompts=prompts,
            ))
        if not self.images:
            raise ConfigError(
                f"{ann_file}: no usable person (category 'person', iscrowd 0, a segmentation, "
                f"area >= {min_mask_area})"
            )
        missing = [str(e.path) for e in self.images if not e.path.is_file()]
        if missing:
            raise ConfigError(
                f"{len(missing)} of {len(self.images)} images of {ann_file} are missing from "
                f"{img_dir}, e.g. {missing[:3]}"
            )
        if detections is not None:
            logger.info("%s: %d of %d people have no detected pose with box IoU >= %.2f",
                        ann_file.name, unmatched, total, spec.match_iou)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_people(self) -> int:
        return sum(len(e.ann_ids) for e in self.images)

    def masks(self, entry: ImageEntry, index: list[int] | np.ndarray | None = None) -> np.ndarray:
        """(N, H, W) bool GT masks of ``entry``'s people (polygons or RLE)."""
        ids = entry.ann_ids if index is None else [entry.ann_ids[i] for i in index]
        out = np.zeros((len(ids), entry.height, entry.width), dtype=bool)
        for row, ann_id in enumerate(ids):
            ann = self.coco.anns[ann_id]
            try:
                out[row] = self._decode(ann, entry)
            except Exception as exc:
                raise ConfigError(
                    f"{self.spec.ann_file}: annotation {ann_id} has an unreadable segmentation: {exc}"
                ) from exc
        return out

    def _decode(self, ann: dict[str, Any], entry: ImageEntry) -> np.ndarray:
        h, w = entry.height, entry.width
        mask = decode_rle(segmentation_to_rle(ann["segmentation"], h, w))
        if mask.shape != (h, w):
            raise ValueError(f"mask is {mask.shape}, image is {(h, w)}")
        return mask


@dataclass
class ModelInput:
    """One image in the model input frame (``S x S``).

    - ``key``: feature-cache key (image file and flip side)
    - ``image``: (3, S, S) float32, normalised as sam2 does
    - ``orig_hw``: (H, W) of the original image
    """

    key: str
    image: torch.Tensor
    orig_hw: tuple[int, int]


def load_model_input(entry: ImageEntry, image_size: int, flip: bool = False) -> ModelInput:
    """Read ``entry``'s image and transform it exactly as ``SAM2ImagePredictor.set_image``."""
    rgb = load_image(entry.path)
    if rgb.shape[:2] != (entry.height, entry.width):
        raise ConfigError(
            f"{entry.path} is {rgb.shape[1]}x{rgb.shape[0]}, the annotations say "
            f"{entry.width}x{entry.height}"
        )
    if flip:
        rgb = np.ascontiguousarray(rgb[:, ::-1])
    image = _sam2_transform(image_size)(rgb)
    return ModelInput(f"{entry.path.resolve()}|{'flip' if flip else 'orig'}", image, rgb.shape[:2])


def _sam2_transform(image_size: int) -> Any:
    # Built per process on first use: the scripted module does not pickle into workers.
    cached = _TRANSFORMS.get(image_size)
    if cached is None:
        from sam2.utils.transforms import SAM2Transforms

        cached = _TRANSFORMS[image_size] = SAM2Transforms(image_size, mask_threshold=0.0)
    return cached


_TRANSFORMS: dict[int, Any] = {}


@dataclass
class TrainItem:
    """One training image with its sampled people, in the input frame.

    - ``masks`` (N, S, S) bool; ``keypoints`` (N, 17, 2) float32;
      ``visibility`` (N, 17) float32
    """

    input: ModelInput
    masks: torch.Tensor
    keypoints: np.ndarray
    visibility: np.ndarray


class TrainSamples(torch.utils.data.Dataset):
    """Training images of several datasets; each item draws up to
    ``max_objects`` people and a flip from a generator seeded by
    (seed, epoch, index), so an epoch is the same with any number of workers
    and after a resume. Call :meth:`set_epoch` before iterating."""

    def __init__(
        self,
        datasets: list[PersonMaskDataset],
        image_size: int,
        max_objects: int,
        flip_prob: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.datasets = datasets
        self.index = [(d, i) for d, ds in enumerate(datasets) for i in range(len(ds))]
        self.image_size = image_size
        self.max_objects = max_objects
        self.flip_prob = flip_prob
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> TrainItem:
        d, j = self.index[i]
        dataset = self.datasets[d]
        entry = dataset.images[j]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        people = np.arange(len(entry.ann_ids))
        if len(people) > self.max_objects:
            people = np.sort(rng.choice(people, self.max_objects, replace=False))
        flip = self.flip_prob > 0 and rng.random() < self.flip_prob
        return make_train_item(dataset, entry, people, self.image_size, flip)


def make_train_item(
    dataset: PersonMaskDataset, entry: ImageEntry, people: np.ndarray, image_size: int, flip: bool
) -> TrainItem:
    """The input-frame image, masks and poses of ``people`` (indices into ``entry``)."""
    model_input = load_model_input(entry, image_size, flip)
    masks = dataset.masks(entry, people)
    kpts = entry.keypoints[people].astype(np.float32).copy()
    vis = entry.visibility[people].astype(np.float32).copy()
    if flip:
        masks = masks[:, :, ::-1]
        kpts[..., 0] = entry.width - kpts[..., 0]
        for a, b in FLIP_PAIRS:
            kpts[:, [a, b]] = kpts[:, [b, a]]
            vis[:, [a, b]] = vis[:, [b, a]]
    kpts[..., 0] *= image_size / entry.width
    kpts[..., 1] *= image_size / entry.height
    resized = np.stack([
        cv2.resize(m.astype(np.float32), (image_size, image_size), interpolation=cv2.INTER_LINEAR) >= 0.5
        for m in masks
    ])
    return TrainItem(model_input, torch.from_numpy(resized), kpts, vis)


def collate_items(items: list[TrainItem]) -> list[TrainItem]:
    """Batches stay lists: images carry different numbers of people."""
    return items


# ----------------------------------------------------------------------------- helpers


def _person_category(coco: COCO, ann_file: Path) -> int:
    cats = coco.loadCats(coco.getCatIds())
    person = [c["id"] for c in cats if c.get("name") == "person"]
    if person:
        return int(person[0])
    if len(cats) == 1:
        return int(cats[0]["id"])
    raise ConfigError(f"{ann_file}: no category named 'person' among {[c.get('name') for c in cats]}")


def _gt_poses(anns: list[dict[str, Any]]) -> PoseSet:
    n = len(anns)
    raw = np.zeros((n, NUM_KEYPOINTS, 3), dtype=np.float32)
    for i, ann in enumerate(anns):
        values = ann.get("keypoints") or []
        if len(values) >= NUM_KEYPOINTS * 3:
            raw[i] = np.asarray(values[: NUM_KEYPOINTS * 3], dtype=np.float32).reshape(-1, 3)
    flags = np.clip(raw[..., 2], 0, 2).astype(np.int64)
    return PoseSet(
        keypoints=raw[..., :2].copy(),
        keypoint_scores=(flags > 0).astype(np.float32),
        visibility=COCO_VISIBILITY[flags],
        scores=np.ones(n, np.float32),
    )


def _load_results(path: Path, coco: COCO) -> dict[int, PoseSet]:
    """Detected poses per image id from a COCO keypoint results file."""
    if not path.is_file():
        raise ConfigError(f"keypoint results file not found: {path} (or use keypoints='gt')")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if isinstance(results, dict) and "annotations" in results:
        results = results["annotations"]
    if not isinstance(results, list):
        raise ConfigError(f"{path}: expected a list of COCO keypoint results")
    grouped: dict[int, list[dict[str, Any]]] = {}
    for i, r in enumerate(results):
        if not isinstance(r, dict) or "image_id" not in r or len(r.get("keypoints") or []) < 51:
            raise ConfigError(f"{path}: result {i} lacks image_id or 17 keypoints [x, y, s]")
        if r["image_id"] in coco.imgs:
            grouped.setdefault(int(r["image_id"]), []).append(r)
    out = {}
    for image_id, rows in grouped.items():
        raw = np.asarray([r["keypoints"][:51] for r in rows], dtype=np.float32).reshape(-1, 17, 3)
        vis = np.asarray(
            [r["visibility"][:17] if len(r.get("visibility") or []) >= 17 else r["keypoints"][2:51:3]
             for r in rows], dtype=np.float32,
        )
        out[image_id] = PoseSet(
            keypoints=raw[..., :2].copy(), keypoint_scores=raw[..., 2].copy(),
            visibility=np.clip(vis, 0.0, 1.0),
            scores=np.asarray([float(r.get("score", 1.0)) for r in rows], dtype=np.float32),
            boxes=np.asarray([_result_box(r) for r in rows], dtype=np.float64),
        )
    return out


def _result_box(result: dict[str, Any]) -> list[float]:
    """xywh: the result's own box, else the extent of its scored keypoints."""
    if result.get("bbox") and len(result["bbox"]) == 4:
        return [float(v) for v in result["bbox"]]
    kpts = np.asarray(result["keypoints"][:51], dtype=np.float64).reshape(17, 3)
    pts = kpts[kpts[:, 2] > 0, :2] if (kpts[:, 2] > 0).any() else kpts[:, :2]
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    return [x0, y0, x1 - x0, y1 - y0]


def _match(
    gt_boxes: list[Any], detections: PoseSet, min_iou: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """The detected pose of each GT person (xywh ``gt_boxes``): greedy
    one-to-one by box IoU, highest IoU first.

    Returns:
        keypoints (N, 17, 2), visibility (N, 17) (zeros when unmatched) and the
        number of unmatched people.
    """
    n = len(gt_boxes)
    kpts = np.zeros((n, NUM_KEYPOINTS, 2), np.float32)
    vis = np.zeros((n, NUM_KEYPOINTS), np.float32)
    if len(detections) == 0:
        return kpts, vis, n
    gt = [[float(v) for v in box] for box in gt_boxes]
    iou = mask_utils.iou(detections.boxes.tolist(), gt, [0] * n)  # (D, N)
    iou = np.asarray(iou, dtype=np.float64).reshape(len(detections), n)
    matched = 0
    while iou.size and iou.max() >= min_iou:
        d, g = np.unravel_index(np.argmax(iou), iou.shape)
        kpts[g], vis[g] = detections.keypoints[d], detections.visibility[d]
        iou[d, :] = -1.0
        iou[:, g] = -1.0
        matched += 1
    return kpts, vis, n - matched
