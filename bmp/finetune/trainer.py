"""Fine-tuning SAM 2.1 into SAM-pose2seg: the training loop.

:class:`Pose2SegTrainer` builds SAM 2.1 from a checkpoint, freezes everything
but the prompt encoder and mask decoder, and trains them with interactive
point sampling (:mod:`.samplers`, :mod:`.interactive`) and SAM 2's losses
(:mod:`.losses`): AdamW, warm-up + cosine learning rate, gradient clipping,
mixed precision on CUDA. After every ``checkpoint.interval`` epochs it
validates (segm AP, :mod:`.evaluate`) and writes a checkpoint that both
resumes training and loads into ``SAM2Segmenter``.
"""

from __future__ import annotations

import json
import logging
import math
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..config import ConfigError
from ..models.sam_features import decoder_features
from ..weights import WeightsError, load_weights, resolve_checkpoint, sha256sum
from .checkpoint import load_training_state, save_atomic, save_epoch
from .config import TrainConfig
from .data import PersonMaskDataset, TrainItem, TrainSamples, collate_items
from .evaluate import validate
from .features import FeatureCache, FrozenEncoder
from .interactive import interactive_forward
from .losses import MultiStepLoss
from .samplers import MaskRefine, Pose, build_sampler

logger = logging.getLogger(__name__)


def pick_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_model(cfg: TrainConfig, device: torch.device) -> tuple[torch.nn.Module, Path]:
    """SAM 2 from ``cfg.model`` with only ``cfg.model.trainable`` left trainable.

    Returns:
        the model on ``device`` and the checkpoint file it was loaded from.
    """
    from sam2.build_sam import build_sam2

    path = resolve_checkpoint(cfg.model.checkpoint, cfg.weights_dirs)
    try:
        model = build_sam2(cfg.model.config, ckpt_path=None, device="cpu", mode="eval")
    except Exception as exc:
        raise ConfigError(f"model.config {cfg.model.config!r}: cannot build SAM 2 ({exc})") from exc
    load_weights(model, path, strict=True)
    names = [n for n, _ in model.named_parameters()]
    for prefix in cfg.model.trainable:
        if not any(n == prefix or n.startswith(prefix + ".") for n in names):
            raise ConfigError(f"model.trainable: {prefix!r} names no parameter of the SAM 2 model")
    for name, param in model.named_parameters():
        param.requires_grad = any(name == p or name.startswith(p + ".") for p in cfg.model.trainable)
    return model.to(device), path


def set_train_mode(model: torch.nn.Module, trainable: tuple[str, ...]) -> None:
    """Frozen parts in eval mode (no drop-path), trainable modules in train mode."""
    model.eval()
    for prefix in trainable:
        model.get_submodule(prefix).train()


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters split as SAM 2 does: no weight decay on biases and norm layers."""
    decay, no_decay = [], []
    for module in model.modules():
        is_norm = "Norm" in type(module).__name__
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            (no_decay if is_norm or name.endswith("bias") else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based):
    linear warm-up, then cosine down to ``min_ratio`` at the last step."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - 1 - warmup_steps, 1)
    t = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


class Pose2SegTrainer:
    """Trains SAM 2's prompt encoder and mask decoder on pose prompts.

    Args:
        cfg: the checked training config.
        device: overrides ``cfg.device`` (``None``: config, then CUDA if available).
        work_dir: overrides ``cfg.work_dir``.
    """

    def __init__(self, cfg: TrainConfig, device: str | None = None, work_dir: str | None = None) -> None:
        self.cfg = cfg
        self.device = pick_device(device or cfg.device)
        self.work_dir = Path(work_dir or cfg.work_dir)
        torch.manual_seed(cfg.seed)
        self.model, self.init_checkpoint = build_model(cfg, self.device)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.sampler: MaskRefine = build_sampler(
            cfg.sampler.type, visibility_thr=cfg.sampler.visibility_thr,
            prob_from_gt=cfg.sampler.prob_from_gt, prob_mask_rule=cfg.sampler.prob_mask_rule,
        )
        self.loss_fn = MultiStepLoss(cfg.loss)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, cfg.optimizer.weight_decay),
            lr=cfg.optimizer.lr, betas=tuple(cfg.optimizer.betas),
        )
        self.amp = cfg.schedule.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if cfg.schedule.amp_dtype == "bfloat16" else torch.float16
        # Loss scaling is needed for float16 only; bfloat16 has float32's range.
        self.scaler = torch.amp.GradScaler("cuda") if self.amp and self.amp_dtype == torch.float16 else None
        cache = None
        if cfg.data.feature_cache:
            cache = FeatureCache(cfg.data.feature_cache, {
                "sam2_config": cfg.model.config, "image_size": int(self.model.image_size),
                "checkpoint_sha256": sha256sum(self.init_checkpoint),
            })
        self.encoder = FrozenEncoder(self.model, cache)
        self.train_data = [PersonMaskDataset(s, cfg.data.min_mask_area) for s in cfg.data.train]
        self.val_data = [PersonMaskDataset(s, 0.0) for s in cfg.data.val]
        self.samples = TrainSamples(
            self.train_data, int(self.model.image_size), cfg.data.max_objects, cfg.data.flip_prob, cfg.seed
        )
        self.epoch = 0  # completed epochs
        self.step = 0  # optimizer steps taken
        self.last_val: dict[str, dict[str, float]] | None = None
        set_train_mode(self.model, cfg.model.trainable)

    # ------------------------------------------------------------------ pieces

    def autocast(self) -> AbstractContextManager:
        if self.amp:
            return torch.autocast("cuda", dtype=self.amp_dtype)
        return nullcontext()

    @property
    def steps_per_epoch(self) -> int:
        n = math.ceil(len(self.samples) / self.cfg.data.batch_size)
        cap = self.cfg.schedule.max_steps_per_epoch
        return min(n, cap) if cap else n

    @property
    def total_steps(self) -> int:
        return self.cfg.schedule.epochs * self.steps_per_epoch

    def learning_rate(self, step: int) -> float:
        s = self.cfg.schedule
        return self.cfg.optimizer.lr * lr_factor(step, self.total_steps, s.warmup_steps, s.min_lr_ratio)

    def step_rng(self, step: int) -> np.random.Generator:
        """Click sampling of optimizer step ``step``: a function of (seed, step),
        so a resumed run samples the same clicks as an uninterrupted one."""
        return np.random.default_rng([self.cfg.seed, step, 1])

    def losses(self, batch: list[TrainItem], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """The multi-step losses of one batch (forward only)."""
        keys = [item.input.key for item in batch]
        images = [item.input.image for item in batch]
        with self.autocast():
            features = decoder_features(self.model, self.encoder(keys, images))
            # Row i of the per-person features is the image that person i is in.
            counts = torch.tensor([len(it.masks) for it in batch])
            owner = torch.repeat_interleave(torch.arange(len(batch)), counts)
            gt = torch.cat([item.masks for item in batch]).to(self.device)
            poses = [Pose(k, v) for it in batch for k, v in zip(it.keypoints, it.visibility, strict=True)]
            steps, _ = interactive_forward(
                self.model, features.index(owner.to(self.device)), gt, poses, self.sampler,
                self.cfg.sampler.num_points, rng, self.cfg.sampler.multimask_max_points,
            )
            return self.loss_fn(steps, gt)

    def train_step(self, batch: list[TrainItem], rng: np.random.Generator | None = None) -> dict[str, float]:
        """One optimizer step on ``batch``; returns the loss components, the
        gradient norm (before clipping) and the learning rate used."""
        rng = rng if rng is not None else self.step_rng(self.step)
        lr = self.learning_rate(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        losses = self.losses(batch, rng)
        self.optimizer.zero_grad(set_to_none=True)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {self.step}")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        clip = self.cfg.optimizer.grad_clip
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, clip if clip > 0 else float("inf"))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.step += 1
        out = {k: float(v.detach()) for k, v in losses.items()}
        out.update(grad_norm=float(grad_norm), lr=lr)
        return out

    def loader(self, epoch: int) -> torch.utils.data.DataLoader:
        """The batches of ``epoch``: a shuffle seeded by (seed, epoch)."""
        self.samples.set_epoch(epoch)
        order = np.random.default_rng([self.cfg.seed, epoch]).permutation(len(self.samples)).tolist()
        workers = self.cfg.data.num_workers
        return torch.utils.data.DataLoader(
            self.samples, batch_size=self.cfg.data.batch_size, sampler=order, num_workers=workers,
            collate_fn=collate_items, pin_memory=self.device.type == "cuda", drop_last=False,
        )

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "step": self.step,
            "config": self.cfg.to_dict(),
            "val": self.last_val,
            "meta": {"sam2_config": self.cfg.model.config, "init_checkpoint": str(self.init_checkpoint)},
        }

    def save(self) -> Path:
        """Checkpoint the completed epochs to ``work_dir/epoch_NNN.pt``."""
        return save_epoch(self.work_dir, self.epoch, self.state_dict(), self.cfg.checkpoint.keep_last)

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint: weights, optimizer, epoch and step count."""
        state = load_training_state(path)
        saved_model = (state.get("config") or {}).get("model", {}).get("config")
        if saved_model and saved_model != self.cfg.model.config:
            raise ConfigError(
                f"{path} was trained from {saved_model}, the config builds {self.cfg.model.config}"
            )
        try:
            self.model.load_state_dict(state["model"], strict=True)
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise WeightsError(f"cannot resume from {path}: {exc}") from exc
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.last_val = state.get("val")
        logger.info("resumed from %s: %d epochs, %d steps done", path, self.epoch, self.step)

    # ------------------------------------------------------------------ loop

    def validate(self) -> dict[str, dict[str, float]]:
        """Segm AP on every val dataset (empty dict without val data)."""
        if not self.val_data:
            return {}
        return validate(self.model, self.encoder, self.val_data, self.cfg.val, self.autocast())

    def fit(self) -> dict[str, dict[str, float]] | None:
        """Train the remaining epochs; returns the last validation metrics."""
        cfg = self.cfg
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
        log = self.work_dir / "log.jsonl"
        logger.info(
            "training %d trainable parameters on %d images / %d people, %d steps per epoch, device %s",
            sum(p.numel() for p in self.trainable), len(self.samples),
            sum(d.num_people for d in self.train_data), self.steps_per_epoch, self.device,
        )
        while self.epoch < cfg.schedule.epochs:
            epoch = self.epoch
            bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.schedule.epochs}",
                       unit="step", dynamic_ncols=True)
            for i, batch in enumerate(self.loader(epoch)):
                if i >= self.steps_per_epoch:
                    break
                metrics = self.train_step(batch)
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}")
                if self.step % cfg.schedule.log_interval == 0 or i == 0:
                    _append(log, {"epoch": epoch + 1, "step": self.step, **metrics})
            bar.close()
            self.epoch = epoch + 1
            last = self.epoch == cfg.schedule.epochs
            if self.val_data and (self.epoch % cfg.val.interval == 0 or last):
                self.last_val = self.validate()
                _append(log, {"epoch": self.epoch, "step": self.step, "val": self.last_val})
                for name, stats in self.last_val.items():
                    tqdm.write(f"epoch {self.epoch} val {name}: segm AP {stats['AP']:.4f}")
            if self.epoch % cfg.checkpoint.interval == 0 or last:
                tqdm.write(f"checkpoint: {self.save()}")
        if cfg.checkpoint.export_name:
            path = save_atomic(self.work_dir / cfg.checkpoint.export_name, {"model": self.model.state_dict()})
            tqdm.write(f"weights for SAM2Segmenter: {path}")
        return self.last_val


def _append(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
