"""The three interfaces of the loop and their registries."""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mmengine.registry import Registry

from ..config import ConfigError, describe_type, matches_type
from ..images import PixelArray
from ..structures import Instances

DETECTORS = Registry("bmp detector")
POSE_ESTIMATORS = Registry("bmp pose estimator")
SEGMENTERS = Registry("bmp segmenter")


# Image arguments below are (H, W, 3) uint8 RGB host arrays, unless the class
# sets ``takes_device_image = True``: then the loop passes the same image as a
# tensor on the loop's device (uploaded once per image). Returned ``masks`` may
# be numpy or a device tensor (see :class:`~bmp.structures.Instances`).


@runtime_checkable
class Detector(Protocol):
    """Finds people. ``detect`` takes an image and returns person
    ``Instances`` with ``boxes`` and ``det_scores`` (and ``masks``,
    ``keypoints`` when the model predicts them)."""

    def detect(self, image: PixelArray) -> Instances: ...


@runtime_checkable
class PoseEstimator(Protocol):
    """Top-down pose: fills ``keypoints``, ``keypoint_scores``, ``visibility``
    and ``presence`` of the given people, looking at ``image`` (the original,
    never the masked one)."""

    def estimate(self, image: PixelArray, people: Instances) -> Instances: ...


@runtime_checkable
class Segmenter(Protocol):
    """Pose-to-mask. ``set_image`` does the costly per-image work once;
    ``segment`` fills ``masks``, ``mask_scores`` and ``prompts`` of the given
    people and may be called many times per image. A ``segment`` that also
    accepts ``others`` (the people found in earlier iterations) gets them, for
    negative prompts or joint partitions."""

    def set_image(self, image: PixelArray) -> None: ...

    def segment(self, people: Instances) -> Instances: ...


def compile_in_place(module: Any, backend: str, dynamic: bool | None = None) -> None:
    """``module.compile(...)``, after turning numpy scalar attributes of its
    submodules into Python numbers: dynamo wraps such scalars (mmpretrain's
    ``DropPath.drop_prob``) as tensors whose guards then fail under
    ``torch.inference_mode`` ("Guard failed on the same frame it was created")."""
    import numpy as np

    for sub in module.modules():
        for name, value in list(vars(sub).items()):
            if isinstance(value, np.generic):
                setattr(sub, name, value.item())
    module.compile(backend=backend, dynamic=dynamic)


def build_component(registry: Registry, cfg: dict[str, Any], section: str, **defaults: Any) -> Any:
    """Build ``cfg`` from ``registry`` with clear errors for an unknown type or key.

    ``defaults`` (device, weights dirs) are passed only to constructors that
    accept them. ``trust_checkpoint`` is a key of every block whose type loads
    a checkpoint (see :func:`bmp.weights.check_trusted`).
    """
    cls, cfg, params, accepts_any = _checked(registry, cfg, section)
    for key, value in defaults.items():
        if (key in params or accepts_any) and key not in cfg:
            cfg[key] = value
    return cls(**cfg)


def checkpoint_spec(registry: Registry, cfg: dict[str, Any], section: str) -> str | None:
    """The checkpoint a block will load: its ``checkpoint`` key, else the
    type's default one; None when the type loads none. Validates the block
    like :func:`build_component`, so config errors come first."""
    cls, cfg, params, _ = _checked(registry, cfg, section)
    if "checkpoint" in cfg:
        return cfg["checkpoint"]
    default = params["checkpoint"].default if "checkpoint" in params else None
    return None if default is inspect.Parameter.empty else default


def _checked(
    registry: Registry, cfg: dict[str, Any], section: str
) -> tuple[type, dict[str, Any], Mapping[str, inspect.Parameter], bool]:
    """(class, keyword arguments, constructor parameters, takes **kwargs) of a block."""
    cfg = dict(cfg)
    type_name = cfg.pop("type", None)
    if type_name is None:
        raise ConfigError(f"{section}: missing 'type' (one of {sorted(registry.module_dict)})")
    cls = registry.get(type_name)
    if cls is None:
        raise ConfigError(
            f"{section}: unknown type {type_name!r}; registered: {sorted(registry.module_dict)}"
        )
    params = {} if cls.__init__ is object.__init__ else inspect.signature(cls.__init__).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    allowed = [n for n in params if n != "self"]
    unknown = [k for k in cfg if k not in params] if not accepts_any else []
    if unknown:
        hint = (" (trust_checkpoint applies only to types that load a checkpoint)"
                if "trust_checkpoint" in unknown else "")
        raise ConfigError(
            f"{section} ({type_name}): unknown key(s) {unknown}; accepted: {allowed}{hint}"
        )
    # An opt-in to run code from a file must be a deliberate True, not any truthy value.
    if "trust_checkpoint" in cfg and not isinstance(cfg["trust_checkpoint"], bool):
        raise ConfigError(
            f"{section} ({type_name}): trust_checkpoint must be True or False, "
            f"got {cfg['trust_checkpoint']!r}"
        )
    check_argument_types(cls, cfg, f"{section} ({type_name})")
    return cls, cfg, params, accepts_any


def check_argument_types(cls: Any, cfg: dict[str, Any], where: str) -> None:
    """Refuse config values that do not fit the constructor's type hints, naming
    the key and the type, before any model is loaded (``imgsz="big"`` would
    otherwise fail deep inside the model, after the weights have loaded)."""
    hints = _init_hints(cls)
    for key, value in cfg.items():
        if key in hints and not matches_type(value, hints[key]):
            raise ConfigError(
                f"{where}: {key} must be {describe_type(hints[key])}, "
                f"got {value!r} ({type(value).__name__})"
            )


def _init_hints(cls: Any) -> dict[str, Any]:
    """The constructor's resolved type hints; a hint naming something the module
    imports only for type checkers is left out instead of failing the build."""
    init = getattr(cls, "__init__", None)
    if init is None or init is object.__init__:
        return {}
    try:
        return typing.get_type_hints(init)
    except Exception:
        hints = {}
        namespace = getattr(init, "__globals__", {})
        for name, annotation in getattr(init, "__annotations__", {}).items():
            try:  # what get_type_hints does, one annotation at a time
                hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
            except Exception:
                continue
        return hints


def resolve_model_config(path: str) -> str:
    """A model config path; ``'mmdet::rtmdet/x.py'`` names a config shipped
    inside the installed package (``mmdet``, ``mmpose``, ``mmpretrain``). A
    relative path is tried from the working directory, then from the bmp
    checkout (so ``configs/pose/pmpose-b.py`` works from anywhere)."""
    if "::" not in path:
        candidates = [Path(path)]
        if not Path(path).is_absolute():
            candidates.append(Path(__file__).resolve().parents[2] / path)
        for candidate in candidates:
            if candidate.is_file():
                return str(candidate)
        raise ConfigError(f"model config file not found: {path}")
    scope, rel = path.split("::", 1)
    try:
        package = importlib.import_module(scope)
    except ImportError as exc:
        raise ConfigError(f"{path}: package {scope!r} is not installed") from exc
    full = Path(package.__file__).parent / ".mim" / "configs" / rel
    if not full.is_file():
        raise ConfigError(f"{path}: no such config in {scope} ({full})")
    return str(full)
