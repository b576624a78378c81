"""Running a predictor over the images of one rank, one JSONL line per image.

Each rank appends to its own ``predictions.rank{R}.jsonl`` (fsync per image), so
a crash loses at most the image in flight and no two processes write one file.
Re-running skips every image any rank's log already holds. A failing image is
logged and counted; only a predictor that fails on every image it tries is fatal.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from ..coco import PredictionLog
from ..images import ImageError
from .dataset import EvalImage
from .distributed import Distributed
from .gt_poses import check_size
from .records import loop_record

logger = logging.getLogger("bmp.eval")

LOG_GLOB = "predictions.rank*.jsonl"

#: Consecutive failures, with no success yet, after which the run stops: every
#: image failing means a broken setup, not bad images.
MAX_FAILURES_BEFORE_SUCCESS = 5


class ImagePredictor(Protocol):
    """Turns one dataset image into the payload of its record."""

    def __call__(self, image: EvalImage) -> dict[str, Any]: ...

    def progress(self) -> str:
        """A short status of the last image for the progress bar."""
        ...


class LoopPredictor:
    """The BBox-Mask-Pose loop with its per-iteration history."""

    def __init__(self, bmp: Any) -> None:
        self.bmp = bmp
        self.last: str = ""

    def __call__(self, image: EvalImage) -> dict[str, Any]:
        history = self.bmp.predict_iterations(image.path)
        check_size(history[0].detect_input, image)
        people = history[-1].people
        per_iter = Counter(int(i) for i in people.iteration)
        self.last = "+".join(str(per_iter[k]) for k in sorted(per_iter)) or "0"
        return loop_record(history, image.id)

    def progress(self) -> str:
        return f"{self.last} people | {self.bmp.times.summary()}"


def log_path(out: Path, rank: int) -> Path:
    return out / f"predictions.rank{rank}.jsonl"


def read_logs(out: Path) -> dict[str, dict[str, Any]]:
    """Every record of every rank's log, by file name; a success beats an error.

    Logs are opened read-only: another rank may still be appending to its own.
    """
    merged: dict[str, dict[str, Any]] = {}
    for path in sorted(out.glob(LOG_GLOB)):
        for name, record in PredictionLog(path, readonly=True).records.items():
            if name not in merged or "error" in merged[name]:
                merged[name] = record
    return merged


def done_files(out: Path) -> set[str]:
    return {name for name, record in read_logs(out).items() if "error" not in record}


def run_shard(
    images: Iterable[EvalImage], predictor_factory: Any, out: Path, dist: Distributed
) -> list[str]:
    """Predict this rank's images into its log.

    Args:
        images: this rank's images still to do.
        predictor_factory: builds the predictor (loads models) only when there is work.
    Returns:
        The file names of the images this call predicted successfully.
    """
    images = list(images)
    if not images:
        return []
    predictor: ImagePredictor = predictor_factory()
    log = PredictionLog(log_path(out, dist.rank))
    desc = "bmp eval" + (f" [rank {dist.rank}/{dist.world_size}]" if dist.world_size > 1 else "")
    # One bar per node is readable; shards are balanced, so rank 0's ETA is the run's.
    bar = tqdm(images, desc=desc, unit="img", dynamic_ncols=True, disable=dist.local_rank != 0)
    done: list[str] = []
    failed = 0
    for image in bar:
        base = {"file": image.file_name, "image_id": image.id,
                "height": image.height, "width": image.width}
        try:
            if image.path is None:
                raise ImageError(f"image file not found: {image.file_name}")
            payload = predictor(image)
        except ImageError as exc:
            error = str(exc)
        except Exception as exc:  # one bad image must not end a day-long run
            error = f"{type(exc).__name__}: {exc}"
            logger.debug("image %s failed", image.file_name, exc_info=True)
            if not done and failed + 1 >= MAX_FAILURES_BEFORE_SUCCESS:
                raise
        else:
            log.append({**base, **payload})
            done.append(image.file_name)
            bar.set_postfix_str(predictor.progress())
            continue
        failed += 1
        log.append({"file": image.file_name, "image_id": image.id, "error": error})
        tqdm.write(f"skipped {image.file_name}: {error}")
    bar.close()
    return done


def build_loop_predictor(
    config: str, device: str | None, weights_dirs: list[str], num_iters: int
) -> LoopPredictor:
    from ..loop import BMP

    return LoopPredictor(BMP.from_config(config, device=device, weights_dirs=weights_dirs,
                                         num_iters=num_iters))
