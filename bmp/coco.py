"""COCO-format results: conversion, resumable per-image JSONL, atomic JSON."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .masks import encode_rle
from .structures import Instances

PERSON_CATEGORY_ID = 1


def instances_to_coco(people: Instances, image_id: int) -> list[dict[str, Any]]:
    """One COCO result dict per person.

    Standard fields: ``image_id``, ``category_id`` (1, person), ``bbox``
    [x, y, w, h], ``score``, ``keypoints`` [x, y, s] x 17 (s = keypoint score),
    ``segmentation`` (RLE). Extra fields, ignored by pycocotools:
    ``iteration``, ``visibility``, ``presence``, ``det_score``, ``mask_score``.
    """
    out = []
    xywh = people.boxes_xywh()
    for i in range(len(people)):
        kpts = np.concatenate([people.keypoints[i], people.keypoint_scores[i][:, None]], axis=1)
        out.append(
            {
                "image_id": int(image_id),
                "category_id": PERSON_CATEGORY_ID,
                "bbox": [round(float(v), 2) for v in xywh[i]],
                "score": round(float(people.scores[i]), 5),
                "keypoints": [round(float(v), 3) for v in kpts.reshape(-1)],
                "segmentation": encode_rle(people.masks[i]),
                "iteration": int(people.iteration[i]),
                "visibility": [round(float(v), 4) for v in people.visibility[i]],
                "presence": [round(float(v), 4) for v in people.presence[i]],
                "det_score": round(float(people.det_scores[i]), 5),
                "mask_score": round(float(people.mask_scores[i]), 5),
            }
        )
    return out


def image_id_from_name(path: str | os.PathLike, fallback: int) -> int:
    """COCO-style ids from file names (``000000000785.jpg`` -> 785), else ``fallback``."""
    match = re.fullmatch(r"(?:.*_)?0*(\d+)", Path(path).stem)
    return int(match.group(1)) if match else fallback


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON through a temp file and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def scan_jsonl(
    path: Path, valid: Callable[[Any], bool] = lambda record: True, repair: bool = True
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(byte offset, record)`` of each whole line of a JSONL log, in order,
    up to the first torn one (no newline: the write in flight at a crash),
    unparsable one, or one ``valid`` rejects. With ``repair`` the file is then
    truncated there, so the next append starts on a clean line."""
    good = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break
            if not valid(record):
                break
            yield good, record
            good += len(line)
    if repair and good != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good)


class PredictionLog:
    """Per-image records appended to a JSONL file as each image finishes.

    A record is ``{"file": ..., "image_id": ..., "height": ..., "width": ...,
    "results": [...]}`` or, for an image that failed, ``{"file": ..., "error": ...}``.
    Re-opening the log skips the images it already holds (resume); a torn last
    line from a crash is ignored and overwritten. With ``readonly=True`` the file
    is only read, never repaired or appended to: for reading a log that another
    process owns (and may be writing).
    """

    def __init__(self, path: str | os.PathLike, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        for _, record in scan_jsonl(self.path, repair=not self.readonly):
            self.records[record["file"]] = record

    def __contains__(self, file: str) -> bool:
        record = self.records.get(file)
        return record is not None and "error" not in record

    def append(self, record: dict[str, Any]) -> None:
        if self.readonly:
            raise PermissionError(f"{self.path} was opened read-only")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[record["file"]] = record

    def results(self) -> list[dict[str, Any]]:
        """All COCO results of successful images, in log order."""
        return [r for rec in self.records.values() for r in rec.get("results", [])]

    def images(self) -> list[dict[str, Any]]:
        """COCO ``images`` entries of successful images."""
        return [
            {"id": rec["image_id"], "file_name": Path(rec["file"]).name,
             "height": rec["height"], "width": rec["width"]}
            for rec in self.records.values() if "error" not in rec
        ]

    def errors(self) -> Iterator[tuple[str, str]]:
        for rec in self.records.values():
            if "error" in rec:
                yield rec["file"], rec["error"]
