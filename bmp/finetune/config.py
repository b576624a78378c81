"""The training config: one mmengine Python file, checked into typed sections.

Sections (see ``configs/train_sam_pose2seg.py`` for every key with comments):
``model``, ``data``, ``sampler``, ``loss``, ``optimizer``, ``schedule``,
``checkpoint``, ``val`` and the top-level ``work_dir``, ``device``,
``weights_dirs``, ``seed``. Unknown keys are errors, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..config import ConfigError, read_config
from ..prompts import PromptConfig
from ..safe_names import safe_name
from .samplers import SAMPLERS


@dataclass(frozen=True)
class ModelConfig:
    """SAM 2.1 to start from and which of its modules train.

    - ``config``: sam2 model config, e.g. ``'configs/sam2.1/sam2.1_hiera_b+.yaml'``.
    - ``checkpoint``: registry name or file holding ``{'model': state_dict}``.
    - ``trainable``: module names (prefixes of parameter names) that train;
      everything else, the image encoder included, is frozen.
    """

    config: str
    checkpoint: str
    trainable: tuple[str, ...] = ("sam_prompt_encoder", "sam_mask_decoder")


@dataclass(frozen=True)
class DatasetConfig:
    """One COCO-format dataset with person masks.

    - ``ann_file``: COCO json with ``segmentation`` (polygons or RLE).
    - ``img_dir``: folder of the images named by ``file_name``.
    - ``keypoints``: ``'gt'`` (the annotations' own keypoints, COCO v mapped to
      visibility 2 -> 1.0, 1 -> 0.5, 0 -> 0) or a COCO keypoint *results* json
      (detected poses; per-keypoint ``visibility`` used when present, else the
      keypoint scores), matched to GT people by box IoU >= ``match_iou``.
    """

    ann_file: str
    img_dir: str
    keypoints: str = "gt"
    match_iou: float = 0.5


@dataclass(frozen=True)
class DataConfig:
    """Datasets and batching.

    - ``batch_size``: images per step; ``max_objects``: people per image per
      step (a fresh random subset each epoch).
    - ``min_mask_area``: people whose mask has fewer pixels are skipped.
    - ``flip_prob``: horizontal flip (the only augmentation: it keeps cached
      features valid, one cache entry per side).
    - ``feature_cache``: ``None`` (encode every time), ``'memory'``, or a folder
      for frozen image-encoder features (about 88 MB per image side at 1024).
    """

    train: tuple[DatasetConfig, ...]
    val: tuple[DatasetConfig, ...] = ()
    batch_size: int = 4
    max_objects: int = 8
    min_mask_area: float = 64.0
    flip_prob: float = 0.5
    num_workers: int = 2
    feature_cache: str | None = None


@dataclass(frozen=True)
class SamplerConfig:
    """Interactive point sampling (see :mod:`.samplers`).

    - ``type``: ``'MaskRefine'``, ``'PoseMaskRefine'`` or ``'Pose1MaskRefine'``.
    - ``num_points``: clicks per person and step = decoder passes (1st + corrections).
    - ``multimask_max_points``: up to this many clicks, SAM predicts 3 masks and
      the loss takes the best (SAM 2's ``multimask_max_pt_num``).
    """

    type: str = "PoseMaskRefine"
    num_points: int = 8
    visibility_thr: float = 0.5
    prob_mask_rule: float = 0.1
    prob_from_gt: float = 0.1
    multimask_max_points: int = 1


@dataclass(frozen=True)
class LossConfig:
    """SAM 2's loss weights: ``mask`` (focal), ``dice``, ``iou`` (IoU
    prediction), ``object`` (object score); focal ``alpha`` / ``gamma``;
    ``iou_l1`` (L1 instead of MSE); ``supervise_all_iou`` (IoU loss on every
    multimask output, not only the best)."""

    mask: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    object: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    iou_l1: bool = True
    supervise_all_iou: bool = True


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW; no weight decay on biases and norm layers; gradient norm clipped
    to ``grad_clip`` (<= 0: off)."""

    lr: float = 5e-6
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 0.1


@dataclass(frozen=True)
class ScheduleConfig:
    """Epochs and learning-rate schedule: linear warm-up over ``warmup_steps``,
    then cosine from ``lr`` to ``lr * min_lr_ratio`` at the last step.

    - ``max_steps_per_epoch``: cut epochs short (smoke runs); None = full.
    - ``amp``: mixed precision on CUDA (``amp_dtype`` 'bfloat16' or 'float16').
    - ``log_interval``: steps between lines of ``work_dir/log.jsonl``.
    """

    epochs: int = 15
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    max_steps_per_epoch: int | None = None
    amp: bool = True
    amp_dtype: str = "bfloat16"
    log_interval: int = 20


@dataclass(frozen=True)
class CheckpointConfig:
    """Checkpoints ``work_dir/epoch_NNN.pt`` every ``interval`` epochs (and
    after the last), keeping the newest ``keep_last`` (0 = all). At the end
    the weights alone are written to ``work_dir/<export_name>`` (the name the
    ``sam-pose2seg-hiera-b+`` registry entry looks for in ``--weights-dir``)."""

    interval: int = 1
    keep_last: int = 0
    export_name: str | None = "SAM-pose2seg_hiera_b+.pt"


@dataclass(frozen=True)
class ValConfig:
    """Validation: segm AP (pycocotools) of masks predicted exactly as the
    loop's ``SAM2Segmenter`` would, from each val person's pose with
    ``prompts`` (a :class:`~bmp.prompts.PromptConfig`)."""

    interval: int = 1
    prompts: dict[str, Any] = field(
        default_factory=lambda: dict(method="max_vis", num_points=3, visibility_thr=0.5)
    )
    mask_threshold: float = 0.0
    max_hole_area: int = 10
    max_sprinkle_area: int = 50


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig
    data: DataConfig
    sampler: SamplerConfig = SamplerConfig()
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    val: ValConfig = field(default_factory=ValConfig)
    work_dir: str = "work_dirs/sam_pose2seg"
    device: str | None = None
    weights_dirs: tuple[str, ...] = ()
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts, numbers, strings): stored in checkpoints."""
        return _plain(asdict(self))


def load_train_config(
    config: str | os.PathLike | dict[str, Any], options: dict[str, Any] | None = None
) -> TrainConfig:
    """Read a training config file (or dict), apply ``key.sub=value`` options
    (as ``--cfg-options`` gives them) and check every section.

    Raises:
        ConfigError: missing file, unknown or missing keys, bad values.
    """
    cfg = read_config(config)
    if options:
        cfg.merge_from_dict(options, allow_list_keys=True)
    values = {k: v for k, v in cfg.to_dict().items() if not k.startswith("_")}
    train = _section(TrainConfig, values, "config")
    _check(train)
    return train


def _section(cls: type, values: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a dict, recursing into nested sections."""
    if isinstance(values, cls):
        return values
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a dict, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; accepted: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _convert(hints[name], value, f"{where}.{name}" if where != "config" else name)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
        return _section(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(options[0], value, where) if len(options) == 1 else value
    if origin is tuple:
        if isinstance(value, str | dict) or not isinstance(value, list | tuple):
            value = [value]
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    return value


def _check(cfg: TrainConfig) -> None:
    """Value checks that the types alone do not catch."""
    problems = []
    if not cfg.data.train:
        problems.append("data.train needs at least one dataset")
    if cfg.sampler.type not in SAMPLERS:
        problems.append(f"sampler.type must be one of {sorted(SAMPLERS)}, got {cfg.sampler.type!r}")
    for name in ("prob_mask_rule", "prob_from_gt", "visibility_thr"):
        if not 0.0 <= getattr(cfg.sampler, name) <= 1.0:
            problems.append(f"sampler.{name} must be in [0, 1]")
    if not 0.0 <= cfg.data.flip_prob <= 1.0:
        problems.append("data.flip_prob must be in [0, 1]")
    for name, value in (
        ("sampler.num_points", cfg.sampler.num_points),
        ("data.batch_size", cfg.data.batch_size),
        ("data.max_objects", cfg.data.max_objects),
        ("schedule.epochs", cfg.schedule.epochs),
        ("checkpoint.interval", cfg.checkpoint.interval),
        ("val.interval", cfg.val.interval),
    ):
        if value < 1:
            problems.append(f"{name} must be >= 1, got {value}")
    if cfg.optimizer.lr <= 0:
        problems.append(f"optimizer.lr must be > 0, got {cfg.optimizer.lr}")
    if cfg.schedule.amp_dtype not in ("bfloat16", "float16"):
        problems.append(f"schedule.amp_dtype must be 'bfloat16' or 'float16', got {cfg.schedule.amp_dtype!r}")
    if not cfg.model.trainable:
        problems.append("model.trainable names no module")
    export = cfg.checkpoint.export_name
    if export is not None and safe_name(export) != export:
        # It is written into work_dir: a path or '..' would put it elsewhere.
        problems.append(f"checkpoint.export_name must be a plain file name, got {export!r}")
    try:
        PromptConfig(**cfg.val.prompts)
    except (TypeError, ValueError) as exc:
        problems.append(f"val.prompts: {exc}")
    if problems:
        raise ConfigError("bad training config:\n  " + "\n  ".join(problems))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
