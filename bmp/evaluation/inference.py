"""Running a predictor over the images of one rank, one JSONL line per image.

The logs, their merging and resume are :mod:`bmp.sharding`'s; decoding and
batching are :mod:`bmp.batch_prediction`'s. What is eval's own: the records
(every iteration of the loop, or GT-pose masks), and the rule that a failing
image is logged and counted, while a predictor that fails on every image it
tries is fatal.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from tqdm import tqdm

from ..background_writer import BackgroundWriter
from ..batch_prediction import people_per_iteration, predictions
from ..coco import PredictionLog
from ..distributed import Distributed
from ..images import ImageError
from ..sharding import ShardLogs
from ..termination import StopRequest
from .dataset import EvalImage
from .gt_poses import check_size
from .records import loop_record

if TYPE_CHECKING:
    from ..loop import IterationRecord

logger = logging.getLogger("bmp.eval")

#: Consecutive failures, with no success yet, after which the run stops: every
#: image failing means a broken setup, not bad images.
MAX_FAILURES_BEFORE_SUCCESS = 5


class ImagePredictor(Protocol):
    """Predicts one dataset image; may also have ``predict_batch`` (see
    :class:`bmp.batch_prediction.BatchPredictor`)."""

    def __call__(self, image: EvalImage) -> Any: ...

    def to_record(self, output: Any, image: EvalImage) -> dict[str, Any]:
        """The payload of the image's record (run in the writer thread: RLE and JSON
        work stays off the model's thread)."""
        ...

    def progress(self) -> str:
        """A short status of the last image for the progress bar."""
        ...


@dataclass
class LoopOutput:
    """One image's loop history and the seconds per loop stage it took."""

    history: list[IterationRecord]
    times: dict[str, float]


class LoopPredictor:
    """The BBox-Mask-Pose loop with its per-iteration history."""

    def __init__(self, bmp: Any) -> None:
        self.bmp = bmp
        self.last: str = ""

    def __call__(self, image: EvalImage) -> LoopOutput:
        history = self.bmp.predict_iterations(image.path)
        check_size(history[0].detect_input, image)
        self._found(history)
        return LoopOutput(history, self.bmp.times.per_image(1))

    def predict_batch(self, images: list[EvalImage], arrays: list[np.ndarray]) -> list[LoopOutput]:
        """The histories of several images, the loop running on them together."""
        for image, array in zip(images, arrays, strict=True):
            check_size(array, image)  # before the model: no batch is run for nothing
        histories = self.bmp.predict_iterations_batch(arrays, names=[str(i.path) for i in images])
        self._found(histories[-1])
        times = self.bmp.times.per_image(len(images))
        return [LoopOutput(history, times) for history in histories]

    def to_record(self, output: LoopOutput, image: EvalImage) -> dict[str, Any]:
        # The times are for `bmp eval --report`; the metrics never read them.
        return {**loop_record(output.history, image.id), "times": output.times}

    def _found(self, history: list[Any]) -> None:
        self.last = people_per_iteration(history[-1].people)

    def progress(self) -> str:
        return f"{self.last} people | {self.bmp.times.summary()}"


class _FileRequired:
    """A predictor that refuses an image whose file is missing or refused before
    any model runs; every other attribute (``predict_batch``, ``progress``) is the predictor's."""

    def __init__(self, predictor: ImagePredictor) -> None:
        self.predictor = predictor

    def __call__(self, image: EvalImage) -> Any:
        if image.refused:
            raise ImageError(f"refused: {image.refused} (--allow-outside-images reads it)")
        if image.path is None:
            raise ImageError(f"image file not found: {image.file_name}")
        return self.predictor(image)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.predictor, name)


def run_shard(
    images: Iterable[EvalImage], predictor: ImagePredictor | None, logs: ShardLogs, dist: Distributed,
    batch_size: int = 1, workers: int = 0, stop: StopRequest | None = None,
) -> list[str]:
    """Predict this rank's images into its log.

    Args:
        images: this rank's images still to do.
        predictor: None when no rank has anything to do.
        batch_size, workers: images per loop call and decoding processes.
        stop: once requested, the batch in flight is logged and no other starts.
    Returns:
        The file names of the images this call predicted successfully.
    """
    images = list(images)
    if not images or predictor is None:
        return []
    predictor = _FileRequired(predictor)
    log = PredictionLog(logs.path(dist))
    done: list[str] = []
    failed = 0
    outputs = predictions(images, [i.path for i in images], predictor, batch_size, workers, "bmp eval", dist,
                          stop)
    with BackgroundWriter(threaded=workers > 0) as writer, closing(outputs):
        for image, output in outputs:
            if not isinstance(output, Exception):
                writer.submit(_append_record, log, predictor, image, output)
                done.append(image.file_name)
                continue
            if isinstance(output, ImageError):
                error = str(output)
            else:  # one bad image must not end a day-long run
                error = f"{type(output).__name__}: {output}"
                logger.debug("image %s failed", image.file_name, exc_info=output)
                if not done and failed + 1 >= MAX_FAILURES_BEFORE_SUCCESS:
                    raise output
            failed += 1
            writer.submit(log.append, {"file": image.file_name, "image_id": image.id, "error": error})
            tqdm.write(f"skipped {image.file_name}: {error}")
    return done


def _append_record(log: PredictionLog, predictor: ImagePredictor, image: EvalImage, output: Any) -> None:
    base = {"file": image.file_name, "image_id": image.id, "height": image.height, "width": image.width}
    log.append({**base, **predictor.to_record(output, image)})


def build_loop_predictor(
    config: str, device: str | None, weights_dirs: list[str], num_iters: int
) -> LoopPredictor:
    from ..loop import BMP

    return LoopPredictor(BMP.from_config(config, device=device, weights_dirs=weights_dirs,
                                         num_iters=num_iters))
