"""A synthetic occlusion benchmark built from any COCO-format person set.

For each target person, a ground-truth-masked person (the donor) is cut from
the set, scaled to the target's size and pasted over the target so that it
hides a controlled share of the target's mask. The ground truth follows the
paste: the donor is added (mask, box, keypoints), and every person it covers
loses those pixels from its mask, area and box, while its keypoints under the
donor become "labelled but not visible" (COCO v = 1). A seed makes the set
exactly reproducible. The images are synthetic (hard-edged pastes), so numbers
measured on them compare methods with each other, not with published tables.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools.coco import COCO

from ..coco import write_json_atomic
from ..masks import encode_rle, resize_mask
from ..structures import mask_region


@dataclass(frozen=True)
class OcclusionSpec:
    """How the set is made.

    - ``occlusion``: the share of a target's mask the donor must hide, (low, high).
    - ``per_target``: pasted variants per target person.
    - ``min_area`` / ``min_keypoints``: which people can be targets and donors.
    - ``scale_jitter``: donor size relative to the target's, (low, high) on sqrt(area).
    - ``tries``: random placements tried per variant before giving up.
    """

    seed: int = 0
    occlusion: tuple[float, float] = (0.3, 0.7)
    per_target: int = 2
    min_area: float = 4000.0
    min_keypoints: int = 8
    scale_jitter: tuple[float, float] = (0.9, 1.2)
    tries: int = 400


def make_occlusion_set(ann_file: str | os.PathLike, image_dir: str | os.PathLike, out_dir: str | os.PathLike,
                       spec: OcclusionSpec = OcclusionSpec()) -> dict[str, Any]:
    """Write ``out_dir/images/*.jpg`` and ``out_dir/annotations.json``; returns the dataset dict."""
    coco = COCO(os.fspath(ann_file))
    rng = np.random.default_rng(spec.seed)
    people = [a for a in sorted(coco.dataset["annotations"], key=lambda a: a["id"])
              if not a.get("iscrowd") and a.get("num_keypoints", 0) >= spec.min_keypoints
              and a["area"] >= spec.min_area]
    if len(people) < 2:
        raise ValueError(f"{ann_file}: fewer than two people with >= {spec.min_keypoints} keypoints "
                         f"and area >= {spec.min_area}: nothing to paste")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    next_ann = 1
    for target in people:
        for variant in range(spec.per_target):
            donor = people[int(rng.choice([i for i, p in enumerate(people) if p["id"] != target["id"]]))]
            made = _paste(coco, image_dir, target, donor, spec, rng)
            if made is None:
                continue
            image, anns = made
            info = coco.imgs[target["image_id"]]
            image_id = len(images) + 1
            name = f"occ_{target['id']:06d}_{variant}.jpg"
            if not cv2.imwrite(str(out / "images" / name), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95]):
                raise OSError(f"cannot write {out / 'images' / name}")
            images.append({"id": image_id, "file_name": name, "height": info["height"],
                           "width": info["width"],
                           "source_image_id": info["id"], "target_id": target["id"], "donor_id": donor["id"]})
            for ann in anns:
                annotations.append({**ann, "id": next_ann, "image_id": image_id})
                next_ann += 1
    dataset = {
        "info": {"description": "synthetic occlusion set (bmp tools/make_occlusion_set.py)",
                 "source": os.fspath(ann_file), "spec": asdict(spec)},
        "images": images, "annotations": annotations, "categories": coco.dataset["categories"],
    }
    write_json_atomic(out / "annotations.json", dataset)
    return dataset


def _paste(coco: COCO, image_dir: str | os.PathLike, target: dict, donor: dict, spec: OcclusionSpec,
           rng: np.random.Generator) -> tuple[np.ndarray, list[dict]] | None:
    info = coco.imgs[target["image_id"]]
    h, w = info["height"], info["width"]
    image = _read(Path(image_dir) / info["file_name"])
    source = _read(Path(image_dir) / coco.imgs[donor["image_id"]]["file_name"])
    target_mask = coco.annToMask(target).astype(bool)
    donor_mask = coco.annToMask(donor).astype(bool)
    x, y, bw, bh = (int(round(v)) for v in donor["bbox"])
    x, y = max(x, 0), max(y, 0)
    crop, crop_mask = source[y:y + bh, x:x + bw], donor_mask[y:y + bh, x:x + bw]
    scale = float(np.sqrt(target["area"] / donor["area"]) * rng.uniform(*spec.scale_jitter))
    size = (max(1, int(round(crop.shape[1] * scale))), max(1, int(round(crop.shape[0] * scale))))
    if size[0] >= w or size[1] >= h:
        return None
    crop = cv2.resize(crop, size, interpolation=cv2.INTER_LINEAR)
    crop_mask = resize_mask(crop_mask, size[::-1])
    tx, ty, tw, th = target["bbox"]
    for _ in range(spec.tries):
        # Donor centre anywhere over the target's box.
        cx, cy = rng.uniform(tx, tx + tw), rng.uniform(ty, ty + th)
        px, py = int(round(cx - size[0] / 2)), int(round(cy - size[1] / 2))
        if px < 0 or py < 0 or px + size[0] > w or py + size[1] > h:
            continue
        pasted = np.zeros((h, w), bool)
        pasted[py:py + size[1], px:px + size[0]] = crop_mask
        hidden = (pasted & target_mask).sum() / max(target_mask.sum(), 1)
        if spec.occlusion[0] <= hidden <= spec.occlusion[1]:
            break
    else:
        return None
    out = image.copy()
    region = out[py:py + size[1], px:px + size[0]]
    region[crop_mask] = crop[crop_mask]
    anns = [_occluded(coco, a, pasted) for a in coco.imgToAnns[target["image_id"]]]
    anns = [a for a in anns if a is not None]
    anns.append(_moved_donor(donor, pasted, scale, (x, y), (px, py), (w, h)))
    return out, anns


def _read(path: Path) -> np.ndarray:
    from ..images import ImageError, load_image

    try:
        return load_image(path)  # the one reader: size limits checked before decoding
    except ImageError as exc:
        raise OSError(str(exc)) from None


def _box(mask: np.ndarray) -> list[float]:
    """COCO [x, y, w, h] of a non-empty mask."""
    rows, cols = mask_region(mask)
    x, y = float(cols.start), float(rows.start)
    return [x, y, float(cols.stop) - x, float(rows.stop) - y]


def _occluded(coco: COCO, ann: dict, pasted: np.ndarray) -> dict | None:
    """``ann`` with the pasted pixels removed; None if nothing of it is left."""
    visible = coco.annToMask(ann).astype(bool) & ~pasted
    if not visible.any():
        return None
    out = {k: v for k, v in ann.items() if k not in ("id", "image_id")}
    out.update(segmentation=encode_rle(visible), area=float(visible.sum()), bbox=_box(visible))
    if "keypoints" in ann:
        kpts = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        h, w = pasted.shape
        xi = np.clip(np.round(kpts[:, 0]).astype(int), 0, w - 1)
        yi = np.clip(np.round(kpts[:, 1]).astype(int), 0, h - 1)
        covered = (kpts[:, 2] > 0) & pasted[yi, xi]
        kpts[covered, 2] = 1  # labelled, not visible
        out["keypoints"] = kpts.reshape(-1).tolist()
    return out


def _moved_donor(donor: dict, pasted: np.ndarray, scale: float, crop_xy: tuple[int, int],
                 paste_xy: tuple[int, int], size: tuple[int, int]) -> dict:
    kpts = np.asarray(donor["keypoints"], np.float64).reshape(-1, 3)
    kpts[:, 0] = (kpts[:, 0] - crop_xy[0]) * scale + paste_xy[0]
    kpts[:, 1] = (kpts[:, 1] - crop_xy[1]) * scale + paste_xy[1]
    w, h = size
    inside = (kpts[:, 0] >= 0) & (kpts[:, 0] < w) & (kpts[:, 1] >= 0) & (kpts[:, 1] < h)
    kpts[~inside] = 0
    kpts[kpts[:, 2] == 0, :2] = 0
    return {"category_id": donor["category_id"], "iscrowd": 0, "segmentation": encode_rle(pasted),
            "area": float(pasted.sum()), "bbox": _box(pasted), "keypoints": kpts.reshape(-1).tolist(),
            "num_keypoints": int((kpts[:, 2] > 0).sum())}
