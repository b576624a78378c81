"""A COCO-format person dataset for evaluation: checked, normalised, with image paths.

Accepts COCO person keypoints, OCHuman (compressed RLE masks, no ``iscrowd``),
CIHP (masks, no keypoints) and CrowdPose (14 keypoints, scored by CrowdPose's
own protocol, :mod:`.crowdpose`). What the annotations cannot support is
skipped with a reason instead of failing inside pycocotools: keypoint AP needs
the 17 COCO keypoints or CrowdPose's 14 with a crowd index on every image,
mask AP needs a segmentation on every person.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from ..masks import segmentation_to_rle
from ..structures import NUM_KEYPOINTS
from .crowdpose import IOU_TYPE as CROWDPOSE_KEYPOINTS
from .crowdpose import is_crowdpose_layout, missing_crowd_index
from .crowdpose_keypoints import CROWDPOSE_KEYPOINT_NAMES
from .validation import DatasetError, check_annotation_file, outside_images

IOU_TYPES = ("bbox", "segm", "keypoints")
#: CrowdPose's files: keypoints scored by CrowdPose's own protocol (:mod:`.crowdpose`).
CROWDPOSE_IOU_TYPES = ("bbox", "segm", CROWDPOSE_KEYPOINTS)

#: OCHuman's occlusion subsets by MaxIoU (the largest box IoU of a person with any
#: other person in its image): [low, high), ``None`` = no upper bound.
SUBSETS: dict[str, tuple[float, float | None]] = {"moderate": (0.5, 0.75), "hard": (0.75, None)}


@dataclass(frozen=True)
class EvalImage:
    """One image of the annotation file; ``path`` is None when the file is missing
    or refused, and ``refused`` then says why it is not read."""

    id: int
    file_name: str
    height: int
    width: int
    path: Path | None
    refused: str | None = None


@dataclass(frozen=True)
class Subset:
    """Ground truth restricted to some persons, evaluated on ``img_ids`` only."""

    name: str
    gt: COCO
    img_ids: frozenset[int]
    num_instances: int
    description: str


class EvalDataset:
    """Person annotations of a COCO-format file plus the images folder.

    Attributes:
        gt: person-only ground truth (one category), ready for COCOeval.
        person_id: the person category id results must carry.
        images: every image of the file, sorted by id.
        iou_types: the iou types these annotations support.
        skipped: iou type -> why it is not evaluated.

    ``category`` picks the category to score as persons (name or id; default: the
    one named person); ``allow_outside`` lets file names leave ``images_dir``.
    """

    def __init__(self, ann_file: str | os.PathLike, images_dir: str | os.PathLike,
                 category: str | None = None, allow_outside: bool = False) -> None:
        self.ann_file = Path(ann_file)
        self.images_dir = Path(images_dir)
        self.allow_outside = allow_outside
        data = _read_json(self.ann_file)
        category = check_annotation_file(data, self.ann_file, category)
        self.person_id = category["id"]
        image_info = {i["id"]: i for i in data["images"]}
        anns = [a for a in data["annotations"] if a["category_id"] == self.person_id]
        if not anns:
            raise DatasetError(
                f"{self.ann_file} has no person annotations (category id {self.person_id})"
            )
        # Ids left out (OCHuman) are numbered after the given ones: never a duplicate.
        next_id = max((a["id"] for a in anns if "id" in a), default=0) + 1
        anns = [_normalise(a, image_info, next_id + n) for n, a in enumerate(anns)]
        self.num_keypoints = _num_keypoints(category, anns)
        #: CrowdPose's 14 keypoints: predictions are mapped to them (:mod:`.crowdpose_keypoints`).
        self.crowdpose = is_crowdpose_layout(category.get("keypoints"), self.num_keypoints)
        if self.crowdpose:
            self.skipped = _crowdpose_unsupported(anns, list(image_info.values()))
            self.iou_types = tuple(t for t in CROWDPOSE_IOU_TYPES if t not in self.skipped)
        else:
            self.skipped = _unsupported(anns, self.num_keypoints)
            self.iou_types = tuple(t for t in IOU_TYPES if t not in self.skipped)
        dataset = {"images": list(image_info.values()), "annotations": anns, "categories": [category]}
        self.gt = _coco_from_dict(dataset)
        self.images = self._resolve_images(image_info)

    # Images ------------------------------------------------------------------

    def _resolve_images(self, image_info: dict[int, dict[str, Any]]) -> list[EvalImage]:
        if not self.images_dir.is_dir():
            raise DatasetError(f"images folder not found: {self.images_dir}")
        images = []
        for image_id in sorted(image_info):
            info = image_info[image_id]
            name = info["file_name"]
            refused = None if self.allow_outside else outside_images(name, self.images_dir)
            # COCO-style names may carry a split folder ("val2017/xxx.jpg").
            candidates = () if refused else (self.images_dir / name, self.images_dir / Path(name).name)
            path = next((c for c in candidates if c.is_file()), None)
            images.append(EvalImage(image_id, name, info["height"], info["width"], path, refused))
        missing = [i for i in images if i.path is None]
        refused = [i for i in missing if i.refused]
        if refused and len(missing) == len(images):
            raise DatasetError(
                f"none of the {len(images)} images of {self.ann_file.name} can be read: "
                f"{refused[0].refused} (use --allow-outside-images to read such names)"
            )
        if images and len(missing) == len(images):
            present = sorted(p.name for p in self.images_dir.iterdir())[:3]
            raise DatasetError(
                f"images folder {self.images_dir} does not match {self.ann_file.name}: none of its "
                f"{len(images)} images is there (expected e.g. {self.images_dir / images[0].file_name}; "
                f"the folder holds {present or 'nothing'})"
            )
        return images

    @property
    def missing_images(self) -> list[EvalImage]:
        return [i for i in self.images if i.path is None]

    # Subsets -----------------------------------------------------------------

    def max_ious(self) -> dict[int, float]:
        """Annotation id -> MaxIoU of its box with the other non-crowd persons of its image."""
        out: dict[int, float] = {}
        for anns in self.gt.imgToAnns.values():
            people = [a for a in anns if not a["iscrowd"]]
            if not people:
                continue
            boxes = [a["bbox"] for a in people]
            iou = np.asarray(mask_utils.iou(boxes, boxes, [0] * len(boxes)), dtype=np.float64)
            iou = iou.reshape(len(people), len(people))
            np.fill_diagonal(iou, 0.0)
            for a, m in zip(people, iou.max(1), strict=True):
                out[a["id"]] = float(m)
        return out

    def subsets(self) -> list[Subset]:
        """All persons, then OCHuman's Moderate and Hard subsets.

        As in OCHuman's own COCO-format subset files, a subset keeps only its
        persons and only the images that hold at least one of them (crowd regions
        of those images stay, as regions to ignore).
        """
        everyone = sum(not a["iscrowd"] for a in self.gt.dataset["annotations"])
        out = [Subset("all", self.gt, frozenset(i.id for i in self.images), everyone, "all persons")]
        max_iou = self.max_ious()
        for name, (low, high) in SUBSETS.items():
            keep = {i for i, m in max_iou.items() if m >= low and (high is None or m < high)}
            anns = self.gt.dataset["annotations"]
            img_ids = {a["image_id"] for a in anns if a["id"] in keep}
            dataset = dict(self.gt.dataset)
            dataset["images"] = [i for i in dataset["images"] if i["id"] in img_ids]
            dataset["annotations"] = [
                a for a in anns if a["image_id"] in img_ids and (a["id"] in keep or a["iscrowd"])
            ]
            bounds = f"MaxIoU in [{low}, {high})" if high is not None else f"MaxIoU >= {low}"
            out.append(Subset(name, _coco_from_dict(dataset), frozenset(img_ids), len(keep), bounds))
        return out


# Loading and normalising ----------------------------------------------------------


def _read_json(path: Path) -> Any:
    """The parsed file, unchecked: :func:`.validation.check_annotation_file` checks it."""
    if not path.is_file():
        raise DatasetError(f"annotation file not found: {path}")
    try:
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise DatasetError(f"{path} is not valid JSON: {str(exc) or 'nested too deeply'}") from None


def _normalise(ann: dict[str, Any], images: dict[int, dict[str, Any]], fallback_id: int) -> dict[str, Any]:
    """Fill the fields COCOeval reads but OCHuman/CIHP-style files may omit
    (the file passed :mod:`.validation`: the image exists, a box or mask is there)."""
    ann = dict(ann)
    info = images[ann["image_id"]]
    ann.setdefault("id", fallback_id)
    ann.setdefault("iscrowd", 0)
    segm = ann.get("segmentation")
    rle = segmentation_to_rle(segm, info["height"], info["width"]) if segm else None
    if not ann.get("bbox"):
        ann["bbox"] = [float(v) for v in mask_utils.toBbox(rle)]
    if "area" not in ann:
        box_area = float(ann["bbox"][2] * ann["bbox"][3])
        ann["area"] = float(mask_utils.area(rle)) if rle is not None else box_area
    if ann.get("keypoints") and "num_keypoints" not in ann:
        ann["num_keypoints"] = int(sum(v > 0 for v in ann["keypoints"][2::3]))
    return ann


def _num_keypoints(category: dict[str, Any], anns: list[dict[str, Any]]) -> int:
    if category.get("keypoints"):
        return len(category["keypoints"])
    with_kpts = [a for a in anns if a.get("keypoints")]
    return len(with_kpts[0]["keypoints"]) // 3 if with_kpts else 0


def _unsupported(anns: list[dict[str, Any]], num_keypoints: int) -> dict[str, str]:
    skipped = {}
    people = [a for a in anns if not a["iscrowd"]]
    if not all(a.get("segmentation") for a in people):
        skipped["segm"] = "not every person has a segmentation: mask AP skipped"
    if not any(a.get("keypoints") for a in people):
        skipped["keypoints"] = "the annotations have no keypoints: keypoint AP skipped"
    elif num_keypoints != NUM_KEYPOINTS:
        skipped["keypoints"] = (
            f"the annotations have {num_keypoints} keypoints per person, the loop predicts the "
            f"{NUM_KEYPOINTS} COCO keypoints: keypoint AP skipped"
        )
    elif not all(len(a.get("keypoints") or ()) == 3 * NUM_KEYPOINTS for a in people):
        skipped["keypoints"] = "not every person has 17 keypoints: keypoint AP skipped"
    return skipped


def _crowdpose_unsupported(anns: list[dict[str, Any]], images: list[dict[str, Any]]) -> dict[str, str]:
    skipped = {}
    people = [a for a in anns if not a["iscrowd"]]
    if not all(a.get("segmentation") for a in people):
        skipped["segm"] = "CrowdPose has no person masks: mask AP skipped"
    if not any(a.get("keypoints") for a in people):
        skipped[CROWDPOSE_KEYPOINTS] = "the annotations have no keypoints: keypoint AP skipped"
    elif not all(len(a.get("keypoints") or ()) == 3 * len(CROWDPOSE_KEYPOINT_NAMES) for a in people):
        skipped[CROWDPOSE_KEYPOINTS] = "not every person has 14 keypoints: CrowdPose keypoint AP skipped"
    elif reason := missing_crowd_index(images):
        skipped[CROWDPOSE_KEYPOINTS] = reason
    return skipped


def _coco_from_dict(dataset: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
