"""Per-instance records that flow through the BBox-Mask-Pose loop.

One :class:`Instances` holds every person of one image, all fields the same
length ``N``. It supports ``len``, index / boolean selection (``inst[keep]``) and
:meth:`Instances.cat`, which is what detection filtering, OKS-NMS and the merge
across iterations need. Per-person records (boxes, keypoints, scores) are
numpy on the host: they are small, and the loop's decisions on them (NMS,
prompt choice) have data-dependent sizes. ``masks`` (N, H, W), the one large
field, may instead be a torch tensor on the device of the model that made it,
so masks stay on the GPU inside the loop; :meth:`Instances.to_host` makes them
numpy for output. Boxes are always xyxy in pixels of the original image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch

from .keypoints import EXTRA_KEYPOINT_NAMES

NUM_KEYPOINTS = 17
#: Neck and head top (:data:`bmp.keypoints.EXTRA_KEYPOINT_NAMES`).
NUM_EXTRA_KEYPOINTS = len(EXTRA_KEYPOINT_NAMES)

#: (N, H, W) masks: a numpy array, or a torch tensor on a model's device.
MaskArray = np.ndarray | torch.Tensor


def to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A host numpy array of ``x`` (copied from the device when it is a tensor there)."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def to_tensor(x: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """``x`` as a tensor on ``device`` (default: where it is; the CPU for numpy),
    without a copy when it is already there."""
    if isinstance(x, torch.Tensor):
        return x if device is None else x.to(device)
    return torch.from_numpy(np.ascontiguousarray(x)).to(device or "cpu")


def _default(shape_tail: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    return np.zeros((0, *shape_tail), dtype=dtype)


@dataclass
class Instances:
    """People found in one image.

    Shapes (``N`` people, ``K`` = 17 COCO keypoints, ``P`` prompt points):

    - ``boxes`` (N, 4) float32, xyxy pixels
    - ``scores`` (N,) float32: instance score (mean keypoint score after pose)
    - ``det_scores`` (N,) float32: the detector's score
    - ``keypoints`` (N, K, 2) float32, xy pixels
    - ``keypoint_scores`` (N, K) float32
    - ``visibility`` (N, K) float32 in [0, 1]; equals ``keypoint_scores`` when the
      pose model has no visibility head
    - ``presence`` (N, K) float32 in [0, 1]; equals ``keypoint_scores`` when the
      pose model has no presence head
    - ``kpt_oks`` (N, K) float32: expected OKS per keypoint (ProbPose); equals
      ``keypoint_scores`` when the pose model has no such head
    - ``masks`` (N, H, W) bool: final (exclusive) masks; numpy, or a torch
      tensor while the loop runs on a device (see :meth:`to_host`)
    - ``mask_scores`` (N,) float32: the segmenter's predicted IoU
    - ``iteration`` (N,) int32: 1-based loop iteration that found the person
    - ``prompts`` (N, P, 2) float32 and ``prompt_labels`` (N, P) int32: the points
      the segmenter was prompted with; label 1 positive, 0 negative, -1 padding
    - ``track_id`` (N,) int32: identity across video frames (``bmp.track``); -1
      for untracked people and for still images
    - ``extra_keypoints`` (N, 2, 3) float32: x, y, score of the
      :data:`~bmp.keypoints.EXTRA_KEYPOINT_NAMES` (neck, head top) where the pose
      model predicts them (MaskPose / PMPose layouts), else all 0
    """

    image_size: tuple[int, int]  # (height, width)
    boxes: np.ndarray = field(default_factory=lambda: _default((4,), np.float32))
    scores: np.ndarray = field(default_factory=lambda: _default((), np.float32))
    det_scores: np.ndarray = field(default_factory=lambda: _default((), np.float32))
    keypoints: np.ndarray = field(
        default_factory=lambda: _default((NUM_KEYPOINTS, 2), np.float32)
    )
    keypoint_scores: np.ndarray = field(
        default_factory=lambda: _default((NUM_KEYPOINTS,), np.float32)
    )
    visibility: np.ndarray = field(
        default_factory=lambda: _default((NUM_KEYPOINTS,), np.float32)
    )
    presence: np.ndarray = field(default_factory=lambda: _default((NUM_KEYPOINTS,), np.float32))
    kpt_oks: np.ndarray = field(default_factory=lambda: _default((NUM_KEYPOINTS,), np.float32))
    masks: MaskArray | None = None
    mask_scores: np.ndarray = field(default_factory=lambda: _default((), np.float32))
    iteration: np.ndarray = field(default_factory=lambda: _default((), np.int32))
    prompts: np.ndarray = field(default_factory=lambda: _default((0, 2), np.float32))
    prompt_labels: np.ndarray = field(default_factory=lambda: _default((0,), np.int32))
    track_id: np.ndarray = field(default_factory=lambda: _default((), np.int32))
    extra_keypoints: np.ndarray = field(
        default_factory=lambda: _default((NUM_EXTRA_KEYPOINTS, 3), np.float32)
    )

    def __post_init__(self) -> None:
        h, w = self.image_size
        self.image_size = (int(h), int(w))
        if self.masks is None:
            self.masks = np.zeros((0, h, w), dtype=bool)
        n = len(self.boxes)
        # Fields a producer did not fill get neutral values of the right length,
        # so every stage can rely on all fields existing.
        if len(self.masks) == 0 and n:
            self.masks = np.zeros((n, h, w), dtype=bool)
        for name, tail, dtype, fill in (
            ("scores", (), np.float32, 0.0),
            ("det_scores", (), np.float32, 0.0),
            ("keypoints", (NUM_KEYPOINTS, 2), np.float32, 0.0),
            ("keypoint_scores", (NUM_KEYPOINTS,), np.float32, 0.0),
            ("visibility", (NUM_KEYPOINTS,), np.float32, 0.0),
            ("presence", (NUM_KEYPOINTS,), np.float32, 0.0),
            ("kpt_oks", (NUM_KEYPOINTS,), np.float32, 0.0),
            ("mask_scores", (), np.float32, 0.0),
            ("iteration", (), np.int32, 0),
            ("track_id", (), np.int32, -1),
            ("extra_keypoints", (NUM_EXTRA_KEYPOINTS, 3), np.float32, 0.0),
        ):
            if len(getattr(self, name)) == 0 and n:
                setattr(self, name, np.full((n, *tail), fill, dtype=dtype))
        if len(self.prompts) == 0 and n:
            self.prompts = np.zeros((n, 0, 2), np.float32)
            self.prompt_labels = np.zeros((n, 0), np.int32)
        self._check()

    def _check(self) -> None:
        n = len(self.boxes)
        for f in fields(self):
            if f.name == "image_size":
                continue
            value = getattr(self, f.name)
            if len(value) != n:
                raise ValueError(f"Instances.{f.name} has {len(value)} rows, boxes has {n}")
        if self.masks.shape[1:] != self.image_size:
            raise ValueError(
                f"Instances.masks are {self.masks.shape[1:]}, image is {self.image_size}"
            )

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: int | slice | np.ndarray | Sequence[int]) -> Instances:
        if isinstance(index, int | np.integer):
            index = [int(index)]
        index = np.asarray(index) if not isinstance(index, slice) else index
        values = {
            f.name: getattr(self, f.name)[index]
            for f in fields(self) if f.name not in ("image_size", "masks")
        }
        masks = self.masks
        if isinstance(masks, torch.Tensor):
            if not isinstance(index, slice):
                index = torch.from_numpy(index if index.dtype == bool else index.astype(np.int64))
                index = index.to(masks.device)
            return Instances(image_size=self.image_size, masks=masks[index], **values)
        rows = np.arange(len(masks))[index]
        return Instances(image_size=self.image_size, masks=copy_masks([masks], [rows]), **values)

    def replace(self, **changes: np.ndarray) -> Instances:
        """A copy with some fields replaced (validated)."""
        return replace(self, **changes)

    @staticmethod
    def cat(items: Sequence[Instances]) -> Instances:
        """Concatenate records of the same image."""
        if not items:
            raise ValueError("Instances.cat needs at least one Instances")
        size = items[0].image_size
        if any(i.image_size != size for i in items):
            raise ValueError("Instances.cat: all items must share one image size")
        width = max(i.prompts.shape[1] for i in items)
        values = {}
        for f in fields(Instances):
            if f.name == "image_size":
                continue
            parts = [getattr(i, f.name) for i in items]
            if f.name in ("prompts", "prompt_labels"):
                parts = [_pad_prompts(p, width, f.name) for p in parts]
            if f.name == "masks" and any(isinstance(p, torch.Tensor) for p in parts):
                # Stay where the tensors are: host masks join them there.
                device = next(p.device for p in parts if isinstance(p, torch.Tensor))
                values[f.name] = torch.cat([torch.as_tensor(p, device=device).bool() for p in parts])
                continue
            if f.name == "masks":
                values[f.name] = copy_masks(parts, [np.arange(len(p)) for p in parts])
                continue
            values[f.name] = np.concatenate(parts, axis=0)
        return Instances(image_size=size, **values)

    def to_host(self) -> Instances:
        """These people with ``masks`` as a numpy array (a copy from the
        device when they are a tensor; ``self`` when they are numpy already)."""
        if not isinstance(self.masks, torch.Tensor):
            return self
        return self.replace(masks=to_numpy(self.masks.bool()))

    @property
    def areas(self) -> np.ndarray:
        """(N,) box areas in pixels²."""
        wh = np.clip(self.boxes[:, 2:] - self.boxes[:, :2], 0, None)
        return wh[:, 0] * wh[:, 1]

    def boxes_xywh(self) -> np.ndarray:
        """(N, 4) boxes as COCO [x, y, w, h]."""
        out = self.boxes.copy()
        out[:, 2:] -= out[:, :2]
        return out

    def up_to_iteration(self, k: int) -> Instances:
        """The people found in iterations 1..k."""
        return self[self.iteration <= k]

    def to_supervision(self, kpt_thr: float = 0.3) -> tuple[Any, Any]:
        """These people as supervision's ``(Detections, KeyPoints)``; see
        :func:`bmp.supervision_interop.to_supervision` (needs ``bmp[supervision]``)."""
        from .supervision_interop import to_supervision

        return to_supervision(self, kpt_thr)

    @classmethod
    def from_supervision(
        cls,
        detections: Any,
        image_size: tuple[int, int] | None = None,
        keypoints: Any = None,
        class_id: int | None = None,
    ) -> Instances:
        """People from supervision ``Detections`` (and ``KeyPoints``); see
        :func:`bmp.supervision_interop.from_supervision`."""
        from .supervision_interop import from_supervision

        return from_supervision(detections, image_size, keypoints, class_id)

    def __repr__(self) -> str:
        its = ", ".join(f"{i}:{int((self.iteration == i).sum())}" for i in np.unique(self.iteration))
        return f"Instances(num={len(self)}, image_size={self.image_size}, per_iteration={{{its}}})"


def _pad_prompts(array: np.ndarray, width: int, name: str) -> np.ndarray:
    extra = width - array.shape[1]
    if extra <= 0:
        return array
    pad = [(0, 0), (0, extra)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, constant_values=-1 if name == "prompt_labels" else 0)


def mask_region(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding (rows, cols) slices of a host (H, W) mask, None if empty."""
    ys = np.flatnonzero(mask.any(1))
    if not len(ys):
        return None
    y0, y1 = ys[0], ys[-1] + 1
    xs = np.flatnonzero(mask[y0:y1].any(0))
    return slice(y0, y1), slice(xs[0], xs[-1] + 1)


def copy_masks(sources: Sequence[np.ndarray], rows: Sequence[np.ndarray]) -> np.ndarray:
    """Host masks ``sources[k][rows[k]]``, stacked, copying only each mask's
    bounding region into a fresh ``np.zeros``.

    ``np.zeros`` pages that are never written take no memory, so a stack of
    people's masks costs about people x box area rather than people x image,
    and copies made while selecting and merging people cost the same; a plain
    fancy-index copy would touch every page of every mask (N x H x W bytes:
    ~1 GB for 20 people on a 48 MP photo). Reading a mask to find its extent
    touches its zero pages only for reading, which maps no memory."""
    h, w = sources[0].shape[1:]
    out = np.zeros((sum(len(r) for r in rows), h, w), dtype=bool)
    j = 0
    for source, picks in zip(sources, rows, strict=True):
        for i in picks:  # a few people, each a memory-bound copy of its own region
            region = mask_region(source[i])
            if region is not None:
                out[(j, *region)] = source[(i, *region)]
            j += 1
    return out
