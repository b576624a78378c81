"""One rank's pass over its images: decoded in the background, predicted in
batches, handed back one by one in input order.

Shared by ``bmp run`` and ``bmp eval``; what to log for each image is theirs.
A batch the model cannot take is predicted again one image at a time, so one bad
image is isolated and reported exactly as a one-image run would report it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from tqdm import tqdm

from .distributed import Distributed
from .image_loader import Decoded, decoded_batches
from .termination import StopRequest

logger = logging.getLogger("bmp")

T = TypeVar("T")


class ItemPredictor(Protocol):
    """Predicts one item (an image path, a dataset image) from its own file."""

    def __call__(self, item: Any) -> Any: ...

    def progress(self) -> str:
        """A short status of the last prediction, for the progress bar."""
        ...


class BatchPredictor(ItemPredictor, Protocol):
    """An :class:`ItemPredictor` that also takes several decoded images in one call."""

    def predict_batch(self, items: list[Any], images: list[np.ndarray]) -> list[Any]:
        """What ``self(item)`` gives for each item, ``images`` being their RGB pixels."""
        ...


def people_per_iteration(people: Any) -> str:
    """``3+1``: the people found in each loop iteration, for the progress bar."""
    per_iter = Counter(int(i) for i in people.iteration)
    return "+".join(str(per_iter[k]) for k in sorted(per_iter)) or "0"


def predictions(
    items: Sequence[T],
    paths: Sequence[Path | None],
    predictor: ItemPredictor | BatchPredictor,
    batch_size: int,
    workers: int,
    command: str,
    dist: Distributed,
    stop: StopRequest | None = None,
) -> Iterator[tuple[T, Any]]:
    """``(item, output)`` for every item, in order; ``output`` is what the
    predictor returned, or the Exception its per-item call raised (the caller
    decides which ones end the run).

    Args:
        paths: the image file of each item (None: it has none).
        workers: decoding processes (0: decode in this thread).
        command: the progress bar's label (``bmp run``); the bar counts images.
        stop: once requested (SIGTERM, Ctrl-C), no further batch starts; the
            items of the batch in flight still come out.
    """
    # A batch of one gains nothing, so items go through the per-item call, which
    # reads its own file: decoding them here as well would read every file twice.
    decode = batch_size > 1 and hasattr(predictor, "predict_batch")
    desc = command + (f" [rank {dist.rank}/{dist.world_size}]" if dist.world_size > 1 else "")
    # One bar per node is readable; shards are balanced, so rank 0's ETA is the run's.
    bar = tqdm(total=len(items), desc=desc, unit="img", dynamic_ncols=True, disable=dist.local_rank != 0)
    try:
        # Closed here, not when collected: a stopped run ends its decoding workers before it exits.
        with closing(decoded_batches(items, paths, batch_size, workers, decode=decode)) as batches:
            for item, output in _in_order(batches, predictor, stop):
                yield item, output
                bar.update(1)
                if not isinstance(output, Exception):
                    bar.set_postfix_str(predictor.progress())
    finally:
        bar.close()


def _in_order(
    batches: Iterable[list[Decoded[T]]], predictor: Any, stop: StopRequest | None
) -> Iterator[tuple[T, Any]]:
    for batch in batches:
        if stop is not None and stop.requested:
            return
        decoded = [i for i, entry in enumerate(batch) if entry.image is not None]
        outputs: dict[int, Any] = {}
        if len(decoded) > 1:
            try:
                results = predictor.predict_batch([batch[i].item for i in decoded],
                                                  [batch[i].image for i in decoded])
                outputs = dict(zip(decoded, results, strict=True))
            except Exception as exc:  # the per-image calls below find (and report) the culprit
                logger.warning("a batch of %d images failed (%s: %s); predicting them one at a time",
                               len(decoded), type(exc).__name__, exc)
                logger.debug("batch failure", exc_info=True)
        for i, entry in enumerate(batch):
            if i in outputs:
                yield entry.item, outputs[i]
                continue
            # Files the workers could not decode come here too: the per-item call
            # gives the same error a one-image run logs, and a passing read error
            # gets a second chance.
            try:
                output = predictor(entry.item)
            except Exception as exc:  # handed to the caller, which decides what ends the run
                output = exc
            yield entry.item, output
