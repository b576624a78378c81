"""Decoding image files in background workers, in input order, in batches.

``bmp run`` and ``bmp eval`` feed the loop from here: a torch ``DataLoader`` over
the files with ``workers`` processes decodes the next batches while the model
works on the current one. A file that cannot be decoded does not stop the
loader: its :class:`~bmp.images.ImageError` comes back as data, and the caller
decides what to log.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from .config import ConfigError
from .termination import ignore_in_worker

T = TypeVar("T")

#: Images decoded ahead per worker: enough to keep a GPU fed, few enough that
#: memory stays at a handful of batches.
PREFETCH_BATCHES = 2


def default_batching(device: str) -> tuple[int, int]:
    """(batch size, decoding workers) for ``device`` when the command line says nothing.

    On the CPU the model calls are the bottleneck and share the cores a worker
    would take, so images go one at a time with no worker processes. A GPU waits
    for the host otherwise: batches of 8 and up to 4 decoding processes.
    """
    if str(device).startswith("cuda"):
        return 8, min(4, os.cpu_count() or 1)
    return 1, 0


def add_batching_arguments(parser: argparse.ArgumentParser) -> None:
    """``--batch-size`` and ``--workers``, shared by ``bmp run`` and ``bmp eval``."""
    parser.add_argument(
        "--batch-size", type=int, default=None, metavar="B",
        help="images per loop call (default: 8 on CUDA, 1 on the CPU)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, metavar="W",
        help="background processes decoding images (default: min(4, cores) on CUDA, 0 on the CPU)",
    )


def resolve_batching(batch_size: int | None, workers: int | None, device: str | None) -> tuple[int, int]:
    """The command line's ``--batch-size`` / ``--workers``, None meaning "by device".

    Args:
        device: ``--device`` as given; None: the loop's own choice (CUDA when available).
    Raises:
        ConfigError: a batch size below 1 or a negative number of workers.
    """
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if workers is not None and workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {workers}")
    if device is None:
        from .loop import default_device

        device = default_device()
    default_size, default_workers = default_batching(device)
    return (default_size if batch_size is None else batch_size,
            default_workers if workers is None else workers)


@dataclass
class Decoded(Generic[T]):
    """One input item with its decoded RGB image, or why there is none.

    ``image`` and ``error`` are both None when the loader was asked not to decode.
    """

    item: T
    image: np.ndarray | None = None
    error: str | None = None


class _Files:
    """The map-style dataset the ``DataLoader`` workers index: file i -> its pixels.

    Returns a tensor, not an array, so that worker processes hand the pixels over
    in shared memory instead of pickling them through a pipe.
    """

    def __init__(self, paths: Sequence[Path | None], decode: bool) -> None:
        from .images import image_limits

        self.paths = list(paths)
        self.decode = decode
        # Taken along to the workers, which need not share this process's settings.
        self.limits = image_limits()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, Any, str | None]:
        import torch

        from .images import ImageError, load_image

        path = self.paths[index]
        if not self.decode:
            return index, None, None
        if path is None:
            return index, None, "no image file"
        try:
            return index, torch.from_numpy(load_image(path, limits=self.limits)), None
        except ImageError as exc:  # data, not an exception: it would end the whole loader
            return index, None, str(exc)


def _keep_as_list(batch: list[Any]) -> list[Any]:
    # Images differ in size: the default collate would try to stack them.
    return batch


def decoded_batches(
    items: Sequence[T],
    paths: Sequence[Path | None],
    batch_size: int,
    workers: int,
    decode: bool = True,
) -> Iterator[list[Decoded[T]]]:
    """``items`` in order, ``batch_size`` at a time, with the images at ``paths``
    decoded (``paths[i]`` belongs to ``items[i]``; None: the item has no file).

    Args:
        workers: decoding processes; 0 decodes in the calling thread.
        decode: False yields the items without reading any file (for callers that
            predict each item from its path).
    """
    from torch.utils.data import DataLoader

    if len(items) != len(paths):
        raise ValueError(f"{len(items)} items but {len(paths)} paths")
    if not items:
        return
    workers = workers if decode else 0  # nothing to do in the background
    loader = DataLoader(
        _Files(paths, decode), batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=_keep_as_list, prefetch_factor=PREFETCH_BATCHES if workers > 0 else None,
        worker_init_fn=ignore_in_worker,
    )
    for batch in loader:
        yield [
            Decoded(items[index], None if pixels is None else pixels.numpy(), error)
            for index, pixels, error in batch
        ]
