"""Ultralytics YOLO checkpoints: loaded once per process, called safely by several stages.

The lite config names one checkpoint (``yolo11n-pose``) for the detector and
for top-down pose. Both stages get the same ``YOLO`` object from
:func:`load_ultralytics`, so the file is unpickled once and Ultralytics keeps
one predictor (and one fused copy of the weights) instead of two.

One ``YOLO`` object serving two stages has one predictor whose arguments each
``predict`` call rewrites, so :func:`predict` (the only way the stages call it)

- passes every argument either stage sets, Ultralytics' defaults included:
  Ultralytics < 8.4 merges a call's arguments into the previous call's (the
  detector's ``iou``/``max_det`` would otherwise stay for the pose crops);
- holds a lock per model for the whole call: the arguments are set outside the
  predictor's own lock, so another thread's call could change them mid-way.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..weights import WeightsError, check_trusted, resolve_checkpoint

logger = logging.getLogger(__name__)

#: Ultralytics' own defaults for the arguments that some stage sets; a call
#: that leaves one out gets it from here rather than from the other stage.
PREDICT_DEFAULTS: dict[str, Any] = {
    "conf": 0.25, "iou": 0.7, "max_det": 300, "classes": None, "rect": True, "verbose": False,
}

# Weak: a model lives as long as some stage holds it, not for the process.
_LOADED: weakref.WeakValueDictionary[tuple, Any] = weakref.WeakValueDictionary()
_PREDICT_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_LOAD_LOCK = threading.Lock()


def load_ultralytics(
    checkpoint: str | os.PathLike, weights_dirs: Sequence[str], device: str, trusted: bool = False
):
    """The Ultralytics ``YOLO`` model of a registry name or file on ``device``,
    shared with every other holder of the same file on the same device.

    ``YOLO(path)`` unpickles the whole file (``weights_only=False``, model
    classes included, so no weights-only pre-check can vouch for it): the
    file must pass :func:`bmp.weights.check_trusted` before Ultralytics sees
    it, for every caller, even when the model is already loaded.
    """
    path = resolve_checkpoint(checkpoint, weights_dirs).resolve()
    why = check_trusted(path, trusted, "Ultralytics checkpoints pickle whole Python objects")
    stat = path.stat()
    # The file's identity is part of the key: a checkpoint rewritten in place is loaded anew.
    key = (str(path), stat.st_size, stat.st_mtime_ns, str(device))
    with _LOAD_LOCK:
        model = _LOADED.get(key)
        if model is not None:
            logger.info("sharing the Ultralytics model already loaded from %s", path)
            return model
        model = _load(path, device, why)
        _LOADED[key] = model
        _PREDICT_LOCKS[model] = threading.Lock()
    return model


def _load(path: Path, device: str, why: str):
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        raise ImportError(
            "the Ultralytics backend needs the optional package: pip install 'bmp[yolo]'"
        ) from exc
    logger.info("loading %s with Ultralytics (%s)", path, why)
    try:
        model = YOLO(str(path))
    except Exception as exc:
        detail = " ".join(str(exc).split())[:200]
        raise WeightsError(
            f"{path} could not be loaded as an Ultralytics checkpoint "
            f"({type(exc).__name__}: {detail})"
        ) from exc
    model.to(device)
    return model


def predict(model, images: Sequence[Any], *, imgsz: int, device: str, **args: Any) -> list:
    """``model.predict(images, ...)`` with every shared argument spelled out
    (:data:`PREDICT_DEFAULTS` under ``args``), under the model's lock."""
    try:
        lock = _PREDICT_LOCKS.get(model)
        if lock is None:  # a model not from load_ultralytics (tests build their own)
            with _LOAD_LOCK:
                lock = _PREDICT_LOCKS.setdefault(model, threading.Lock())
    except TypeError:  # a stand-in that takes no weak reference
        lock = _LOAD_LOCK
    with lock:
        return list(model.predict(list(images), imgsz=imgsz, device=device, **{**PREDICT_DEFAULTS, **args}))
