"""Training Pose2Seg on COCO-format data (images + person keypoints + masks).

Each step takes ``images_per_step`` images, up to ``max_instances`` people from
each (random), aligns them (with random rotation / scale / shift jitter when
``augment``), runs one SegModule batch over all of them and minimises binary
cross-entropy against the ground-truth masks warped into the same windows.
Checkpoints (weights with the templates, optimiser, step, RNG state) are
written atomically to ``work_dir/pose2seg_latest.pth``; a run that finds one
resumes from it.

``freeze_backbone`` trains only the SegModule; with ``cache`` the decoded
samples and their backbone features are kept in memory (small data sets,
overfitting checks).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...images import load_image
from ...masks import mask_iou
from ...weights import load_checkpoint, load_weights, resolve_checkpoint
from .affine_align import invert_affine, sample_affine
from .network import Pose2SegNet, random_jitter

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "pose2seg_latest.pth"


@dataclass
class Sample:
    """The people of one image: ``image`` (H, W, 3) uint8 RGB, ``keypoints``
    (N, 17, 2), ``valid`` (N, 17) bool (COCO v > 0), ``boxes`` (N, 4) xyxy,
    ``masks`` (N, H, W) bool."""

    image_id: int
    image: np.ndarray
    keypoints: np.ndarray
    valid: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray


class CocoPoseMasks:
    """People with keypoints and masks from a COCO-format annotation file.

    Args:
        min_keypoints: people need at least this many labelled keypoints.
    """

    def __init__(self, ann_file: str | os.PathLike, image_dir: str | os.PathLike,
                 min_keypoints: int = 1) -> None:
        from ...evaluation.cocoeval import load_gt

        self.coco = load_gt(ann_file)
        self.image_dir = Path(image_dir)
        self.min_keypoints = min_keypoints
        self.image_ids = [i for i in sorted(self.coco.imgs) if self._annotations(i)]
        if not self.image_ids:
            raise ValueError(f"{ann_file}: no person with keypoints and a mask")

    def _annotations(self, image_id: int) -> list[dict[str, Any]]:
        return [
            a for a in self.coco.imgToAnns[image_id]
            if not a.get("iscrowd", 0) and a.get("segmentation")
            and a.get("num_keypoints", 0) >= self.min_keypoints
        ]

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> Sample:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        anns = self._annotations(image_id)
        kpts = np.array([a["keypoints"] for a in anns], np.float32).reshape(-1, 17, 3)
        boxes = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        masks = np.stack([self.coco.annToMask(a).astype(bool) for a in anns])
        return Sample(image_id, load_image(self.image_dir / info["file_name"]),
                      kpts[..., :2].copy(), kpts[..., 2] > 0, boxes, masks)


@dataclass
class TrainConfig:
    """What ``tools/train_pose2seg_net.py`` runs (see the module docstring)."""

    ann_file: str
    image_dir: str
    work_dir: str
    network: dict[str, Any] = field(default_factory=dict)
    iterations: int = 20000
    lr: float = 1e-3
    weight_decay: float = 1e-4
    images_per_step: int = 1
    max_instances: int = 8
    augment: bool = True
    freeze_backbone: bool = False
    cache: bool = False
    backbone_init: str | None = None
    save_every: int = 1000
    log_every: int = 50
    resume: bool = True
    seed: int = 0
    device: str = "cpu"


def save_checkpoint_atomic(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` through a temp file and rename: a crash never leaves a
    half-written checkpoint under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Trainer:
    """Holds the network, optimiser and data of one training run."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.device = torch.device(cfg.device)
        self.data = CocoPoseMasks(cfg.ann_file, cfg.image_dir)
        self.net = Pose2SegNet(**cfg.network).to(self.device)
        if cfg.backbone_init:
            # A torchvision ImageNet ResNet: its classifier has no place here.
            load_weights(self.net.backbone.body, resolve_checkpoint(cfg.backbone_init),
                         strict=False, ignore_prefixes=("fc.",))
        params = self.net.seg.parameters() if cfg.freeze_backbone else self.net.parameters()
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step = 0
        self.checkpoint = Path(cfg.work_dir) / CHECKPOINT_NAME
        self._samples: dict[int, Sample] = {}
        self._features: dict[int, tuple[torch.Tensor, tuple[float, float]]] = {}
        self._aligned: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._order: list[int] = []
        if cfg.resume and self.checkpoint.is_file():
            self._resume()

    def _resume(self) -> None:
        state = load_checkpoint(self.checkpoint)
        self.net.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.generator.set_state(state["rng"])
        logger.info("resumed %s at step %d", self.checkpoint, self.step)

    def save(self) -> None:
        save_checkpoint_atomic(self.checkpoint, {
            "state_dict": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "rng": self.generator.get_state(),
            "network": _plain(self.cfg.network),
            "train": _plain(asdict(self.cfg)),
        })

    def sample(self, index: int) -> Sample:
        if index in self._samples:
            return self._samples[index]
        sample = self.data[index]
        if self.cfg.cache:
            self._samples[index] = sample
        return sample

    def features(self, index: int, image: np.ndarray) -> tuple[torch.Tensor, tuple[float, float]]:
        """P2 features of one image; computed without gradients (and cached
        when asked) when the backbone is frozen."""
        if index in self._features:
            return self._features[index]
        inputs, scale = self.net.preprocess(image)
        if self.cfg.freeze_backbone:
            self.net.backbone.eval()
            with torch.no_grad():
                feats = self.net.extract_features(inputs)
            if self.cfg.cache:
                self._features[index] = (feats, scale)
            return feats, scale
        return self.net.extract_features(inputs), scale

    def next_index(self) -> int:
        if not self._order:
            self._order = torch.randperm(len(self.data), generator=self.generator).tolist()
        return self._order.pop()

    def train_step(self) -> float:
        """One optimiser step; returns the loss."""
        cfg, net = self.cfg, self.net
        net.train()
        if cfg.freeze_backbone:
            net.backbone.eval()
        inputs, targets = [], []
        for _ in range(cfg.images_per_step):
            index = self.next_index()
            s = self.sample(index)
            pick = torch.randperm(len(s.keypoints), generator=self.generator)[: cfg.max_instances]
            x, target = self.aligned(index, s, np.sort(pick.numpy()))
            inputs.append(x)
            targets.append(target)
        logits = net.seg(torch.cat(inputs))
        loss = F.binary_cross_entropy_with_logits(logits, torch.cat(targets))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    def aligned(self, index: int, s: Sample, pick: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """SegModule input and target of some people of one sample. Without
        gradients through the backbone and without jitter they never change,
        so they are cached with the sample when ``cache`` is set."""
        net, cfg = self.net, self.cfg
        key = (index, tuple(pick.tolist()))
        if key in self._aligned:
            return self._aligned[key]
        feats, scale = self.features(index, s.image)
        jitter = (random_jitter(len(pick), net.align_size, self.generator).to(self.device)
                  if cfg.augment else None)
        x, alignment = net.aligned_inputs(
            feats, scale,
            torch.as_tensor(s.keypoints[pick], device=self.device),
            torch.as_tensor(s.valid[pick], device=self.device),
            torch.as_tensor(s.boxes[pick], device=self.device),
            jitter,
        )
        masks = torch.as_tensor(s.masks[pick], device=self.device)[:, None].float()
        size = (net.align_size, net.align_size)
        target = sample_affine(masks, invert_affine(alignment.to_aligned), size)
        if cfg.cache and cfg.freeze_backbone and not cfg.augment:
            self._aligned[key] = (x, target)
        return x, target

    def run(self) -> Path:
        """Train until ``iterations`` steps, saving every ``save_every``."""
        cfg = self.cfg
        start, last_loss = time.perf_counter(), float("nan")
        while self.step < cfg.iterations:
            last_loss = self.train_step()
            if self.step % cfg.log_every == 0:
                logger.info("step %d/%d loss %.4f (%.1fs)", self.step, cfg.iterations, last_loss,
                            time.perf_counter() - start)
            if self.step % cfg.save_every == 0 or self.step == cfg.iterations:
                self.save()
        if not self.checkpoint.is_file():
            self.save()  # resumed at the end already: still leave a checkpoint
        return self.checkpoint


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) and return the checkpoint path."""
    return Trainer(cfg).run()


def mask_ious(segmenter: Any, data: CocoPoseMasks) -> np.ndarray:
    """IoU of each annotated person's predicted mask (from its ground-truth
    pose) with its ground-truth mask, over every image of ``data``."""
    from ...structures import Instances

    ious = []
    for index in range(len(data)):
        s = data[index]
        vis = s.valid.astype(np.float32)
        people = Instances(s.image.shape[:2], boxes=s.boxes, keypoints=s.keypoints,
                           keypoint_scores=vis, visibility=vis.copy(), presence=vis.copy())
        segmenter.set_image(s.image)
        out = segmenter.segment(people)
        ious.append(np.diag(mask_iou(out.masks, s.masks)))
    return np.concatenate(ious)


def _plain(value: Any) -> Any:
    """Config values as plain lists/dicts (what ``weights_only`` loading accepts)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value
