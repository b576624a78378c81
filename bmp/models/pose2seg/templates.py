"""Pose templates of Pose2Seg's Affine-Align: K-means over normalised poses.

Every training pose with more than ``min_points`` labelled keypoints is
normalised to the unit square by its box (longer side 1, box centred, aspect
kept) and also added mirrored (x -> 1 - x, left/right labels swapped), so the
templates do not prefer one facing direction. K-means (K = 3 in the paper: a
full body, a full body seen from behind without a face, an upper body) runs
with a masked distance: only keypoints labelled in both the pose and the centre
count. A template keypoint is valid when at least ``vis_threshold`` of its
cluster's poses label it.

The result is a small JSON file that a Pose2Seg network config points to.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: COCO keypoint index of each keypoint's left/right mirror image.
FLIP_PERMUTATION = np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15])


@dataclass
class PoseTemplates:
    """``poses`` (K, 17, 2) in the unit square, ``valid`` (K, 17) bool, ``meta``:
    how they were made (source, seed, counts)."""

    poses: np.ndarray
    valid: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike) -> None:
        poses = np.round(self.poses.astype(np.float64), 5).tolist()
        data = {"poses": poses, "valid": self.valid.tolist(), **self.meta}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> PoseTemplates:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"Pose2Seg templates file not found: {path} "
                "(make one with tools/pose2seg_templates.py)"
            )
        data = json.loads(path.read_text())
        poses = np.asarray(data.pop("poses"), np.float32).reshape(-1, 17, 2)
        valid = np.asarray(data.pop("valid"), bool).reshape(-1, 17)
        return cls(poses, valid, data)


def normalize_poses(keypoints: np.ndarray, boxes_xywh: np.ndarray) -> np.ndarray:
    """(N, 17, 2) keypoints in their box's unit square: the longer box side
    becomes 1 and the box is centred at (0.5, 0.5).

    Args:
        keypoints: (N, 17, 2) pixels. boxes_xywh: (N, 4) COCO boxes.
    """
    boxes = np.asarray(boxes_xywh, np.float64)
    side = np.maximum(boxes[:, 2:].max(1), 1e-6)[:, None, None]
    centre = (boxes[:, :2] + boxes[:, 2:] / 2)[:, None]
    return ((keypoints - centre) / side + 0.5).astype(np.float32)


def mirror_poses(poses: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit-square poses mirrored left-right: x -> 1 - x and labels swapped."""
    mirrored = poses[:, FLIP_PERMUTATION].copy()
    mirrored[..., 0] = 1.0 - mirrored[..., 0]
    return mirrored, valid[:, FLIP_PERMUTATION].copy()


def masked_sq_distances(poses: np.ndarray, valid: np.ndarray, centres: np.ndarray,
                        centre_valid: np.ndarray) -> np.ndarray:
    """(N, K) mean squared keypoint distance over keypoints valid in both."""
    both = valid[:, None] & centre_valid[None]  # (N, K, 17)
    d2 = ((poses[:, None] - centres[None]) ** 2).sum(-1)  # (N, K, 17)
    count = both.sum(-1)
    return np.where(count > 0, (d2 * both).sum(-1) / np.maximum(count, 1), np.inf)


def kmeans_templates(
    poses: np.ndarray,
    valid: np.ndarray,
    k: int = 3,
    seed: int = 0,
    iterations: int = 100,
    restarts: int = 5,
    vis_threshold: float = 0.4,
) -> tuple[np.ndarray, np.ndarray]:
    """Masked K-means with k-means++ seeding; the best of ``restarts`` runs.

    Deterministic for a given ``seed``; clusters are returned largest first
    (ties: by the centre's coordinates), so the order does not depend on the
    initialisation.

    Args:
        poses: (N, 17, 2) unit-square poses. valid: (N, 17) bool.
    Returns:
        ``centres`` (K, 17, 2) and ``centre_valid`` (K, 17).
    """
    if len(poses) < k:
        raise ValueError(f"K-means needs at least k={k} poses, got {len(poses)}")
    # Unlabelled COCO keypoints sit at (0, 0); park them at the centre instead
    # (they are masked everywhere, this only keeps the numbers tidy).
    poses = np.where(valid[..., None], poses, 0.5)
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(restarts):
        result = _kmeans_once(poses, valid, k, rng, iterations)
        if best is None or result[2] < best[2] - 1e-12:
            best = result
    centres, labels, _ = best
    sizes = np.bincount(labels, minlength=k)
    fraction = np.stack([valid[labels == c].mean(0) if sizes[c] else np.zeros(17) for c in range(k)])
    centre_valid = fraction >= vis_threshold
    order = sorted(range(k), key=lambda c: (-sizes[c], *np.round(centres[c].ravel(), 6)))
    return centres[order].astype(np.float32), centre_valid[order]


def _kmeans_once(
    poses: np.ndarray, valid: np.ndarray, k: int, rng: np.random.Generator, iterations: int
) -> tuple[np.ndarray, np.ndarray, float]:
    n = len(poses)
    first = int(rng.integers(n))
    chosen = [first]
    for _ in range(1, k):  # k-means++: far poses are likelier seeds
        d2 = masked_sq_distances(poses, valid, poses[chosen], valid[chosen]).min(1)
        d2 = np.where(np.isfinite(d2), d2, 0.0)
        d2[chosen] = 0.0
        prob = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
        chosen.append(int(rng.choice(n, p=prob)))
    centres = poses[chosen].astype(np.float64)
    centre_valid = valid[chosen].copy()
    labels = np.full(n, -1)
    for _ in range(iterations):
        d2 = masked_sq_distances(poses, valid, centres, centre_valid)
        new_labels = d2.argmin(1)
        if (new_labels == labels).all():
            break
        labels = new_labels
        for c in range(k):
            member = labels == c
            if not member.any():
                continue  # keep an empty cluster's centre where it was
            w = valid[member][..., None]
            count = w.sum(0)
            centres[c] = np.where(count > 0, (poses[member] * w).sum(0) / np.maximum(count, 1),
                                  centres[c])
            centre_valid[c] = count[:, 0] > 0
    d2 = masked_sq_distances(poses, valid, centres, centre_valid)
    d2 = np.where(np.isfinite(d2), d2, 1e6)  # a pose sharing no keypoint with its centre
    return centres, labels, float(d2[np.arange(n), labels].sum())


def templates_from_coco(
    ann_file: str | os.PathLike,
    k: int = 3,
    seed: int = 0,
    min_points: int = 8,
    vis_threshold: float = 0.4,
    mirror: bool = True,
) -> PoseTemplates:
    """Pose templates from the person keypoints of a COCO-format annotation file.

    Args:
        min_points: poses need more than this many labelled keypoints (paper: 8).
        mirror: also cluster every pose mirrored left-right.
    """
    data = json.loads(Path(ann_file).read_text())
    anns = [a for a in data["annotations"]
            if not a.get("iscrowd", 0) and len(a.get("keypoints", [])) == 51]
    kpts = np.array([a["keypoints"] for a in anns], np.float32).reshape(-1, 17, 3)
    boxes = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
    keep = (kpts[..., 2] > 0).sum(1) > min_points
    poses = normalize_poses(kpts[keep, :, :2], boxes[keep])
    valid = kpts[keep, :, 2] > 0
    if mirror:
        flipped, flipped_valid = mirror_poses(poses, valid)
        poses, valid = np.concatenate([poses, flipped]), np.concatenate([valid, flipped_valid])
    centres, centre_valid = kmeans_templates(poses, valid, k, seed, vis_threshold=vis_threshold)
    meta = {"source": Path(ann_file).name, "k": k, "seed": seed, "min_points": min_points,
            "vis_threshold": vis_threshold, "mirror": mirror, "num_poses": int(len(poses))}
    return PoseTemplates(centres, centre_valid, meta)
