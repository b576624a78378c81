"""Per-frame JSONL records of a video run, and back.

A record is what :class:`bmp.coco.PredictionLog` stores for an image, plus the
frame's index and time::

    {"file": "clip.mp4/000012", "frame": 12, "time": 0.48, "image_id": 12,
     "height": 540, "width": 960, "results": [<COCO result + "track_id">, ...]}

:func:`record_to_instances` inverts :func:`frame_record` exactly up to the
rounding the record applies, so everything after a frame (tracker state,
overlay, temporal prior) is computed from the record. That is what makes a
resumed run, which rebuilds its state from the log, identical to one full run.

:class:`FrameLog` is the log itself: the same file format and torn-line rules
as :class:`bmp.coco.PredictionLog`, but it keeps only byte offsets in memory
and reads records back one at a time, so an hour of video does not hold every
frame's masks in RAM.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..coco import atomic_write, coco_to_instances, instances_to_coco, is_log_record, scan_jsonl, writing
from ..structures import Instances


def frame_key(video_name: str, index: int) -> str:
    """The log key of a frame (``PredictionLog`` keys records by ``file``)."""
    return f"{video_name}/{index:06d}"


def frame_record(
    people: Instances, video_name: str, index: int, time: float | None
) -> dict[str, Any]:
    """The JSONL record of one processed frame; ``image_id`` is the frame index."""
    results = instances_to_coco(people, index)
    for result, track_id in zip(results, people.track_id, strict=True):
        result["track_id"] = int(track_id)
    h, w = people.image_size
    return {
        "file": frame_key(video_name, index), "frame": int(index),
        "time": None if time is None else round(float(time), 6),
        "image_id": int(index), "height": h, "width": w, "results": results,
    }


def record_to_instances(record: dict[str, Any]) -> Instances:
    """The people of a frame record (prompts are not logged and come back empty)."""
    return coco_to_instances(record["results"], (int(record["height"]), int(record["width"])))


class FrameLog:
    """Per-frame records appended to a JSONL file, resumable, memory-bounded.

    Opening an existing log indexes it (key -> byte offset), truncates a torn
    last line left by a crash and drops corrupt lines elsewhere with a warning
    (:func:`bmp.coco.scan_jsonl`); :meth:`get` reads one record back.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.offsets: dict[str, int] = {}
        if self.path.exists():
            self._index()

    def _index(self) -> None:
        for offset, record in scan_jsonl(self.path, valid=is_log_record):
            self.offsets[record["file"]] = offset

    def __contains__(self, key: str) -> bool:
        return key in self.offsets

    def __len__(self) -> int:
        return len(self.offsets)

    def get(self, key: str) -> dict[str, Any]:
        with open(self.path, "rb") as f:
            f.seek(self.offsets[key])
            return json.loads(f.readline())

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and fsync it, so a crash loses at most the frame in flight."""
        line = (json.dumps(record) + "\n").encode()
        with writing(self.path, "append to"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:
                offset = f.tell()
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        self.offsets[record["file"]] = offset

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record, in frame order, streamed (a frame recomputed after a
        corrupt line was dropped sits at the end of the file, not in its place)."""
        if not self.offsets:
            return
        # Keys share the video name and zero-padded index: (length, text) is frame order.
        with open(self.path, "rb") as f:
            for key in sorted(self.offsets, key=lambda k: (len(k), k)):
                f.seek(self.offsets[key])
                yield json.loads(f.readline())

    def write_results(self, path: str | os.PathLike) -> int:
        """All frames' COCO results as one JSON list, streamed to a temp file and
        renamed into place (atomic); returns how many were written."""
        count = 0
        with atomic_write(path) as f:
            f.write("[")
            for record in self.records():
                for result in record.get("results", []):
                    f.write((", " if count else "") + json.dumps(result))
                    count += 1
            f.write("]")
        return count
