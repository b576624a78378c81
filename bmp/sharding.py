"""Per-rank prediction logs of ``bmp run`` and ``bmp eval``, and merging them.

Each rank appends to its own ``predictions.rank{R}.jsonl`` (fsync per image), so a
crash loses at most the images in flight and no two processes write one file.
Re-running skips every image that any rank's log holds as a success, however
many processes wrote the folder before; rank 0 merges every log at the end.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .coco import PredictionLog
from .config import ConfigError
from .distributed import Distributed

T = TypeVar("T")

RANK_LOG_GLOB = "predictions.rank*.jsonl"
_RANK = re.compile(r"predictions\.rank(\d+)\.jsonl")


@dataclass(frozen=True)
class ShardLogs:
    """The prediction logs of one output folder.

    Attributes:
        out: the output folder, shared by every rank (and node).
        single: the log name a one-process run uses instead of ``predictions.rank0.jsonl``
            (``bmp run`` keeps the ``predictions.jsonl`` of folders written before it
            could shard); None: every run writes rank logs.
    """

    out: Path
    single: str | None = None

    def path(self, dist: Distributed) -> Path:
        """The log this rank appends to."""
        if self.single is not None and dist.world_size == 1:
            return self.out / self.single
        return self.out / f"predictions.rank{dist.rank}.jsonl"

    def paths(self) -> list[Path]:
        """Every log in the folder: the one-process log first, then by rank."""
        ranks = sorted(
            (p for p in self.out.glob(RANK_LOG_GLOB) if _RANK.fullmatch(p.name)),
            key=lambda p: int(_RANK.fullmatch(p.name).group(1)),
        )
        single = [self.out / self.single] if self.single and (self.out / self.single).is_file() else []
        return single + ranks

    def exist(self) -> bool:
        return bool(self.paths())

    def read(self) -> dict[str, dict[str, Any]]:
        """Every record of every log, by file, in log order; a success beats an error.

        Logs are opened read-only: another rank may still be appending to its own.
        """
        merged: dict[str, dict[str, Any]] = {}
        for path in self.paths():
            for name, record in PredictionLog(path, readonly=True).records.items():
                if name not in merged or "error" in merged[name]:
                    merged[name] = record
        return merged

    def done(self) -> set[str]:
        """The files some log holds a success for: what a re-run skips."""
        return succeeded(self.read())

    def remove(self) -> None:
        """Delete every log (``--overwrite``)."""
        for path in self.paths():
            path.unlink(missing_ok=True)


def succeeded(records: dict[str, dict[str, Any]]) -> set[str]:
    """The files of ``records`` that hold a success (not an error)."""
    return {name for name, record in records.items() if "error" not in record}


def log_view(records: dict[str, dict[str, Any]]) -> PredictionLog:
    """A read-only :class:`PredictionLog` holding ``records`` (merged from several
    logs), for its ``results()``, ``images()`` and ``errors()``."""
    view = PredictionLog(os.devnull, readonly=True)  # reads as an empty log
    view.records = dict(records)
    return view


def decided_by_main(dist: Distributed, decide: Callable[[], T]) -> T:
    """``decide()`` run on rank 0 only, its result handed to every rank.

    For what must be decided once (image ids, clearing the folder). An exception
    in ``decide`` is raised on every rank, so that a refusal stops them all alike
    instead of leaving the others waiting at the next barrier.
    """
    result: T | None = None
    error: Exception | None = None
    if dist.is_main:
        try:
            result = decide()
        except Exception as exc:  # re-raised below, on every rank
            error = exc
    result, error = dist.all_gather((result, error))[0]
    if error is not None:
        raise error
    return result  # type: ignore[return-value]


def merged_records(
    logs: ShardLogs, dist: Distributed, finished: list[str]
) -> dict[str, dict[str, Any]] | None:
    """Every rank's records, on rank 0 once all ranks are done; None on the other ranks.

    Args:
        finished: the files this rank predicted successfully.
    Raises:
        ConfigError: rank 0 cannot see records that other ranks wrote (an output
            folder that is not shared between nodes).
    """
    dist.barrier()
    finished_everywhere = [name for names in dist.all_gather(finished) for name in names]
    if not dist.is_main:
        return None
    records = logs.read()
    unseen = [n for n in finished_everywhere if "error" in records.get(n, {"error": ""})]
    if unseen:
        raise ConfigError(
            f"rank 0 cannot read the results of {len(unseen)} images other ranks wrote "
            f"(e.g. {unseen[0]}): --out must be a folder shared by all nodes"
        )
    return records
