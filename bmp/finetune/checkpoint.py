"""Training checkpoints: written atomically, found again for resuming.

A checkpoint is ``{"model": full SAM 2 state_dict, "optimizer": ...,
"epoch": completed epochs, "step": optimizer steps, "config": ..., "val": ...}``:
the ``model`` entry makes it a regular sam2 checkpoint, so
``SAM2Segmenter(checkpoint=path)`` loads it directly (``bmp.weights`` reads the
``model`` entry and ignores the rest). Everything else is plain data and
tensors, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..weights import WeightsError, load_checkpoint

LAST = "last_checkpoint"
_EPOCH_FILE = re.compile(r"epoch_(\d+)\.pt")


def save_atomic(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """``torch.save`` through a temp file in the same folder, then rename: a
    crash mid-write never leaves a torn file under ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(dict(state), tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_epoch(work_dir: Path, epoch: int, state: Mapping[str, Any], keep_last: int = 0) -> Path:
    """Write ``work_dir/epoch_NNN.pt``, point ``work_dir/last_checkpoint`` at
    it, and delete older epoch files beyond the newest ``keep_last`` (0: keep all)."""
    path = save_atomic(work_dir / f"epoch_{epoch:03d}.pt", state)
    write_text_atomic(work_dir / LAST, path.name + "\n")
    if keep_last > 0:
        epochs = sorted(
            (int(m.group(1)), p) for p in work_dir.glob("epoch_*.pt") if (m := _EPOCH_FILE.fullmatch(p.name))
        )
        for _, old in epochs[:-keep_last]:
            old.unlink(missing_ok=True)
    return path


def latest_checkpoint(work_dir: str | os.PathLike) -> Path | None:
    """The checkpoint ``last_checkpoint`` names, else the highest epoch file, else None."""
    work_dir = Path(work_dir)
    pointer = work_dir / LAST
    if pointer.is_file():
        path = work_dir / pointer.read_text().strip()
        if path.is_file():
            return path
    epochs = sorted(
        (int(m.group(1)), p) for p in work_dir.glob("epoch_*.pt") if (m := _EPOCH_FILE.fullmatch(p.name))
    )
    return epochs[-1][1] if epochs else None


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint written by :func:`save_epoch` (safe unpickling)."""
    state = dict(load_checkpoint(path))
    for key in ("model", "optimizer", "epoch", "step"):
        if key not in state:
            raise WeightsError(f"{path} is not a SAM-pose2seg training checkpoint (no {key!r} entry)")
    return state
