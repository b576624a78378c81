"""Loading and checking run configs (mmengine Python config files)."""

from __future__ import annotations

import numbers
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mmengine.config import Config

#: Top-level keys a bmp config may hold.
#: ``video`` is read only by ``bmp video`` / ``bmp.track`` (bmp.video.config);
#: ``images`` (input size limits) only by the commands (bmp.input_limits).
TOP_LEVEL_KEYS = ("detector", "pose", "segmenter", "loop", "device", "weights_dirs", "video", "images")


class ConfigError(ValueError):
    """A config file is missing, malformed or has an unknown key."""


@dataclass(frozen=True)
class LoopConfig:
    """Thresholds of the loop itself (BMP_NOTES, "The loop").

    - ``num_iters``: loop iterations.
    - ``det_score_thr``: keep detections with score > this.
    - ``det_nms_iou``: greedy box NMS among an iteration's detections.
    - ``oks_nms_thr``: pose NMS drops one of a pair with OKS > this.
    - ``oks_kpt_thr``: only keypoints with score > this count in OKS.
    - ``oks_nms_prefer``: which of two duplicates survives: ``'confident'``
      (more confident keypoints, BMP's rule) or ``'earlier'`` (the earlier
      iteration's, useful when masks cover people only partly).
    - ``redetected_iou``: a detection whose box overlaps the box of a person
      found before (an earlier iteration, or a video prior) at IoU >= this is
      that person detected again through what their mask left visible, and is
      dropped before pose (None: every detection is posed and left to
      pose-NMS, as in the reference).
    - ``exclusive_masks``: give overlapping pixels to the best-scoring mask.
    - ``person_score``: a person's score: ``'keypoints'`` (the mean keypoint
      score, BMP's rule) or ``'detector'`` (the detection score; the ranking a
      one-stage pose detector such as YOLO-pose was trained to give).
    - ``precision``: ``'fp32'``, ``'bf16'`` or ``'fp16'`` autocast of the models
      on the loop's device (CPU autocast too: bf16 needs a CPU with bf16 support to be fast).
    - ``naive``: the reference implementation's schedule, kept for comparison:
      SAM's image encoder once per iteration, pose and SAM decoding once per person.
    - ``compile``: ``torch.compile`` the models' heavy parts: ``'off'``,
      ``'inductor'`` (generated kernels; the first images of each new shape
      are slow while it compiles) or ``'eager'`` (graph capture only, to check
      that a model traces).
    """

    num_iters: int = 2
    det_score_thr: float = 0.3
    det_nms_iou: float = 0.3
    oks_nms_thr: float = 0.8
    oks_kpt_thr: float = 0.3
    oks_nms_prefer: str = "confident"
    redetected_iou: float | None = None
    exclusive_masks: bool = True
    person_score: str = "keypoints"
    precision: str = "fp32"
    naive: bool = False
    compile: str = "off"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LoopConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"loop: unknown key(s) {unknown}; accepted: {sorted(known)}")
        hints = typing.get_type_hints(cls)
        for key, value in values.items():
            if not matches_type(value, hints[key]):
                raise ConfigError(
                    f"loop.{key} must be {describe_type(hints[key])}, "
                    f"got {value!r} ({type(value).__name__})"
                )
        cfg = cls(**values)
        if cfg.num_iters < 1:
            raise ConfigError(f"loop.num_iters must be >= 1, got {cfg.num_iters}")
        if cfg.oks_nms_prefer not in ("confident", "earlier"):
            raise ConfigError(
                f"loop.oks_nms_prefer must be 'confident' or 'earlier', got {cfg.oks_nms_prefer!r}"
            )
        if cfg.redetected_iou is not None and not 0.0 < cfg.redetected_iou <= 1.0:
            raise ConfigError(f"loop.redetected_iou must be in (0, 1] or None, got {cfg.redetected_iou}")
        if cfg.person_score not in ("keypoints", "detector"):
            raise ConfigError(
                f"loop.person_score must be 'keypoints' or 'detector', got {cfg.person_score!r}"
            )
        if cfg.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"loop.precision must be 'fp32', 'bf16' or 'fp16', got {cfg.precision!r}")
        if cfg.compile not in COMPILE_BACKENDS:
            raise ConfigError(f"loop.compile must be one of {COMPILE_BACKENDS}, got {cfg.compile!r}")
        return cfg


COMPILE_BACKENDS = ("off", "inductor", "eager")

_SEQUENCE_ORIGINS = (list, tuple, set, frozenset)


def matches_type(value: Any, hint: Any) -> bool:
    """Whether a config value fits a type hint (``int``, ``float | None``,
    ``Sequence[str]``, ``dict[str, Any]``, ``Literal[...]``...).

    Config files are Python, so a quoted number or ``"no"`` for a flag is easy
    to write and would otherwise fail much later, deep inside a model (or, for
    a flag, silently count as true). ``bool`` is not an ``int`` here, an ``int``
    is a ``float``, and a string is not a sequence of strings. Hints it does
    not know accept anything.
    """
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(matches_type(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    container = origin or hint
    if container is tuple and args and args[-1] is not Ellipsis:
        return (isinstance(value, list | tuple) and len(value) == len(args)
                and all(matches_type(v, a) for v, a in zip(value, args, strict=True)))
    if container in _SEQUENCE_ORIGINS or container is Sequence:
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple | set | frozenset):
            return False
        return not args or all(matches_type(v, args[0]) for v in value)
    if container is dict or container is Mapping:
        return isinstance(value, Mapping)
    if isinstance(container, type):
        return isinstance(value, container)
    return True


def describe_type(hint: Any) -> str:
    """A type hint as a config author reads it: ``int``, ``float | None``, ``Sequence[str]``."""
    if isinstance(hint, type) and not typing.get_args(hint):
        return "None" if hint is type(None) else hint.__name__
    return str(hint).replace("collections.abc.", "").replace("typing.", "").replace("NoneType", "None")


def describe_changes(previous: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """``"num_iters 2 → 1, config a.py → b.py"``: the keys of a saved run
    signature whose values differ from this run's."""
    def show(value: Any) -> str:
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."

    keys = sorted(set(previous) | set(current))
    return ", ".join(
        f"{k} {show(previous.get(k))} → {show(current.get(k))}"
        for k in keys if previous.get(k) != current.get(k)
    )


def read_config(config: str | os.PathLike | dict | Config) -> Config:
    """An mmengine Config from a file path, a dict or a Config; a missing or
    unparsable file is a :class:`ConfigError`."""
    if isinstance(config, Config):
        return config
    if isinstance(config, dict):
        return Config(config)
    path = Path(config)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return Config.fromfile(str(path))
    except Exception as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc


def load_config(config: str | os.PathLike | dict | Config) -> Config:
    """Read a loop config (file, dict or Config) and check its top-level keys."""
    cfg = read_config(config)
    unknown = sorted(k for k in cfg if k not in TOP_LEVEL_KEYS and not k.startswith("_"))
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {unknown}; accepted: {list(TOP_LEVEL_KEYS)}")
    for section in ("detector", "pose", "segmenter"):
        if section not in cfg:
            raise ConfigError(f"config has no {section!r} section")
    return cfg


def checkpoint_dirs(cfg: Config, weights_dirs: Sequence[str | os.PathLike] = ()) -> list[str]:
    """The folders searched for a config's checkpoints before the cache:
    ``weights_dirs`` (the caller's, e.g. ``--weights-dir``), then the config's own."""
    return [os.fspath(d) for d in weights_dirs] + list(cfg.get("weights_dirs") or [])
