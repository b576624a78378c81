"""COCO-format results: conversion, resumable per-image JSONL, atomic files, output folders."""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from .masks import decode_rle, encode_rle, resize_mask
from .structures import NUM_EXTRA_KEYPOINTS, NUM_KEYPOINTS, Instances

logger = logging.getLogger("bmp")

PERSON_CATEGORY_ID = 1


def instances_to_coco(people: Instances, image_id: int) -> list[dict[str, Any]]:
    """One COCO result dict per person.

    Standard fields: ``image_id``, ``category_id`` (1, person), ``bbox``
    [x, y, w, h], ``score``, ``keypoints`` [x, y, s] x 17 (s = keypoint score),
    ``segmentation`` (RLE). Extra fields, ignored by pycocotools:
    ``iteration``, ``visibility``, ``presence``, ``det_score``, ``mask_score``,
    and ``extra_keypoints`` [x, y, s] x 2 (neck, head top) where the pose model
    predicts them (CrowdPose evaluation reads them).
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
        if people.extra_keypoints[i, :, 2].any():  # absent, not zeros, for 17-point models
            out[-1]["extra_keypoints"] = [round(float(v), 3) for v in people.extra_keypoints[i].reshape(-1)]
    return out


def coco_to_instances(
    results: Sequence[Mapping[str, Any]], image_size: tuple[int, int], scale: float = 1.0
) -> Instances:
    """The people of one image's COCO results: the inverse of
    :func:`instances_to_coco` up to its rounding (prompts are not written and
    come back empty), plus ``track_id`` where a video record has it.

    Results from other tools may carry only ``bbox``: a field a result lacks
    comes back neutral (zero keypoints and scores, an empty mask, iteration 1,
    track -1), so their people can still be drawn and counted.

    ``scale`` maps the results' pixels into an image of ``image_size`` (a
    thumbnail, say): boxes and keypoints (the extra ones too) are multiplied by
    it and each mask is resized to ``image_size`` (nearest neighbour).
    """
    h, w = image_size
    n = len(results)
    if n == 0:
        return Instances((h, w))

    def column(key: str, shape: tuple[int, ...], dtype: type, fill: float) -> np.ndarray:
        missing = np.full(shape, fill, dtype)
        values = [r[key] if r.get(key) is not None else missing for r in results]
        return np.array(values, dtype).reshape(n, *shape)

    xywh = column("bbox", (4,), np.float32, 0.0)
    kpts = column("keypoints", (NUM_KEYPOINTS * 3,), np.float32, 0.0).reshape(n, NUM_KEYPOINTS, 3)
    masks = np.zeros((n, h, w), bool)
    for i, result in enumerate(results):
        if result.get("segmentation"):
            # Resized one at a time, as soon as decoded: a crowd of full-size
            # masks at once would take gigabytes for a large photo.
            mask = decode_rle(result["segmentation"])
            masks[i] = mask if scale == 1.0 else resize_mask(mask, (h, w))
    return Instances(
        (h, w),
        boxes=np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1) * np.float32(scale),
        scores=column("score", (), np.float32, 0.0),
        det_scores=column("det_score", (), np.float32, 0.0),
        keypoints=np.ascontiguousarray(kpts[..., :2]) * np.float32(scale),
        keypoint_scores=np.ascontiguousarray(kpts[..., 2]),
        visibility=column("visibility", (NUM_KEYPOINTS,), np.float32, 0.0),
        presence=column("presence", (NUM_KEYPOINTS,), np.float32, 0.0),
        kpt_oks=column("kpt_oks", (NUM_KEYPOINTS,), np.float32, 0.0),
        masks=masks,
        mask_scores=column("mask_score", (), np.float32, 0.0),
        iteration=column("iteration", (), np.int32, 1),
        track_id=column("track_id", (), np.int32, -1),
        extra_keypoints=column("extra_keypoints", (NUM_EXTRA_KEYPOINTS * 3,), np.float32, 0.0).reshape(
            n, NUM_EXTRA_KEYPOINTS, 3) * np.array([scale, scale, 1], np.float32),
    )


def image_id_from_name(path: str | os.PathLike, fallback: int) -> int:
    """COCO-style ids from file names (``000000000785.jpg`` -> 785), else ``fallback``."""
    match = re.fullmatch(r"(?:.*_)?0*(\d+)", Path(path).stem)
    return int(match.group(1)) if match else fallback


class OutputError(OSError):
    """An output folder or file that cannot be created or written (an OSError,
    so callers that handle those keep working)."""


@contextmanager
def writing(
    path: str | os.PathLike, action: str = "write", errors: tuple[type[Exception], ...] = ()
) -> Iterator[None]:
    """An OSError in the block (a full disk, a folder gone or made read-only), or
    one of ``errors`` (a library's own write errors), as one :class:`OutputError`
    naming ``path``: how every writer reports a failed write."""
    try:
        yield
    except OutputError:
        raise
    except (OSError, *errors) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise OutputError(f"cannot {action} {path}: {reason}") from None


def output_folder(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` as a folder that exists and takes new files, else :class:`OutputError`
    naming ``option``: checked before any work, so a long run cannot end unable
    to save what it computed."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path} is an existing file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        # Permission bits do not tell (root, ACLs, read-only mounts): try a write.
        fd, probe = tempfile.mkstemp(dir=path, prefix=".bmp-write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{option} {path} cannot be written to: {exc.strerror or exc}") from None
    return path


def _new_file_mode() -> int:
    """The mode ``open(path, 'w')`` would give a new file (0o666 less the umask).
    Python 3.11 has no ``os.getumask``: setting and restoring it is the portable read."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file next to ``path`` and rename it onto ``path`` when the block
    ends without an error, so readers never see half a file.

    The file gets the permissions a plain ``open`` would give it (mkstemp alone
    makes it 0600): an existing file's mode, else 0o666 less the umask. A
    failing write (unwritable folder, full disk) is an :class:`OutputError`
    naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            file_mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            file_mode = _new_file_mode()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON through :func:`atomic_write`."""
    with atomic_write(path) as f:
        json.dump(data, f)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text through :func:`atomic_write`."""
    with atomic_write(path) as f:
        f.write(text)


#: (file, line number, line) of the corrupt log lines already reported by this
#: process: a log read several times in one run warns once per line.
_reported_lines: set[tuple[str, int, bytes]] = set()


def scan_jsonl(
    path: Path, valid: Callable[[Any], bool] = lambda record: True, repair: bool = True
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(byte offset, record)`` of each good line of a JSONL log, in order.

    A last line without a newline is the write in flight at a crash: it ends the
    scan. A whole line that does not parse, or that ``valid`` rejects, is skipped
    with a warning naming the file and line number; the records after it still
    count. With ``repair``, once the scan has run to its end the file is cut
    back to its good lines (a torn tail is truncated; corrupt lines are dropped
    by rewriting the file atomically), so the next append starts on a clean
    line, and the yielded offsets are those of the repaired file.
    """
    good = 0  # bytes of good lines so far: a line's offset once bad ones are dropped
    end = 0  # bytes of whole lines read: a line's offset in the file as it is
    bad: list[int] = []  # 1-based numbers of the skipped lines
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                break
            offset = good if repair else end
            end += len(line)
            try:
                record = json.loads(line)
                reason = None if valid(record) else "not a record of this log"
            except json.JSONDecodeError as exc:  # its own "line 1" would mislead: give the column
                reason = f"not JSON: {exc.msg} (column {exc.colno})"
            except UnicodeDecodeError:
                reason = "not UTF-8 text"
            if reason is not None:
                bad.append(number)
                _report_corrupt(path, number, line, reason)
                continue
            yield offset, record
            good += len(line)
    if not repair:
        return
    if bad:
        _drop_lines(path, set(bad), end)
    elif end != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(end)


def _report_corrupt(path: Path, number: int, line: bytes, reason: str) -> None:
    key = (os.fspath(Path(path).resolve()), number, line)
    if key not in _reported_lines:
        _reported_lines.add(key)
        logger.warning("%s, line %d: corrupt record skipped (%s); it will be recomputed",
                       path, number, reason)


def _drop_lines(path: Path, bad: set[int], end: int) -> None:
    """Rewrite ``path`` without the lines numbered in ``bad`` and without what
    follows byte ``end`` (a torn tail)."""
    with open(path, "rb") as src, atomic_write(path, "wb") as dst:
        done = 0
        for number, line in enumerate(src, start=1):
            if done + len(line) > end:
                break
            done += len(line)
            if number not in bad:
                dst.write(line)


def is_log_record(record: Any) -> bool:
    """What every line of a per-image or per-frame log is: an object keyed by ``file``."""
    return isinstance(record, dict) and isinstance(record.get("file"), str)


class PredictionLog:
    """Per-image records appended to a JSONL file as each image finishes.

    A record is ``{"file": ..., "image_id": ..., "height": ..., "width": ...,
    "results": [...]}`` or, for an image that failed, ``{"file": ..., "error": ...}``.
    Re-opening the log skips the images it already holds (resume); a torn last
    line from a crash is ignored and overwritten, a corrupt line elsewhere is
    skipped with a warning (see :func:`scan_jsonl`). With ``readonly=True`` the file
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
        for _, record in scan_jsonl(self.path, valid=is_log_record, repair=not self.readonly):
            self.records[record["file"]] = record

    def __contains__(self, file: str) -> bool:
        record = self.records.get(file)
        return record is not None and "error" not in record

    def append(self, record: dict[str, Any]) -> None:
        if self.readonly:
            raise PermissionError(f"{self.path} was opened read-only")
        line = json.dumps(record) + "\n"
        with writing(self.path, "append to"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(line)
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
