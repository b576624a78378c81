"""The report's per-image data: compact JSON-ready dicts, and the thumbnails they name.

An entry holds a few numbers per iteration, never pixels or masks, so the page
grows by a few hundred bytes per image whatever the images' resolution:

- ``id``, ``f`` (file name), ``w``, ``h``;
- ``n``: people found up to iteration k; ``new``: people new in iteration k;
- ``th``: the thumbnail of each iteration (relative to the page);
- eval only: ``hit`` / ``fp``: of the people new in k, those matched to a
  ground-truth person and those matched to nobody; ``miss``: ground-truth
  persons not matched after iteration k; ``gt``: ground-truth persons;
  ``ap``: per iou type, the image's AP after each iteration (None: no person
  to find);
- run only: ``tm``: milliseconds per loop stage (None when not logged).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..images import ImageError
from ..safe_names import safe_name
from .matching import FALSE_POSITIVE, IGNORED, MATCHED, PER_IMAGE_IOU_TYPES, ImageMatches, match_images
from .thumbs import FALSE_POSITIVE_COLOR, FOUND_COLOR, NEW_COLOR, View, thumbnail_names, write_thumbnails

logger = logging.getLogger("bmp.report")

Entry = dict[str, Any]


def matching_iou_type(iou_types: Iterable[str]) -> str:
    """The field's standard for "found": keypoint OKS where keypoints are scored, else box IoU."""
    return "keypoints" if "keypoints" in iou_types else "bbox"


def eval_entries(
    dataset: Any, records: Mapping[int, dict[str, Any]], num_iters: int, thumbs: Path, rel: str,
) -> list[Entry]:
    """Entries of ``bmp eval``'s loop records (image id -> record), in image-id order.

    Args:
        dataset: the :class:`~bmp.evaluation.dataset.EvalDataset` (ground truth, image paths).
        thumbs: the thumbnail folder; ``rel`` is its path relative to the page.
    """
    from ..evaluation.records import stage_results

    ids = sorted(records)
    iou_types = [t for t in PER_IMAGE_IOU_TYPES if t in dataset.iou_types]
    people = {
        k: {i: [{**r, "category_id": dataset.person_id} for r in stage_results(records[i], k, "segmenter")]
            for i in ids}
        for k in range(1, num_iters + 1)
    }
    scored: dict[tuple[int, str], dict[int, ImageMatches]] = {
        (k, t): match_images(dataset.gt, people[k], t) for k in people for t in iou_types
    }
    by = matching_iou_type(iou_types)
    paths = {image.id: image.path for image in dataset.images}
    entries = []
    for i in tqdm(ids, desc="report", unit="image", leave=False):
        record = records[i]
        entry: Entry = {"id": i, "f": record["file"], "w": record["width"], "h": record["height"],
                        "n": [], "new": [], "hit": [], "fp": [], "miss": [],
                        "tm": _milliseconds(record.get("times")),
                        "ap": {t: [_round(scored[k, t][i].ap) for k in people] for t in iou_types}}
        views = []
        for k in people:
            match = scored[k, by][i]
            new = [p.get("iteration") == k for p in people[k][i]]
            status = [s if fresh else None for s, fresh in zip(match.people, new, strict=True)]
            entry["n"].append(len(new))
            entry["new"].append(sum(new))
            entry["hit"].append(status.count(MATCHED))
            entry["fp"].append(status.count(FALSE_POSITIVE))
            entry["miss"].append(len(match.missed))
            views.append(View(_drawn(people[k][i]), [_EVAL_COLORS.get(s) if s else None for s in status],
                              match.missed))
        entry["gt"] = scored[num_iters, by][i].num_gt
        key = f"{safe_name(Path(record['file']).stem)}_{i}"
        entry["th"] = _thumbnails(thumbs, rel, key, paths.get(i), views)
        entries.append(entry)
    return entries


#: Highlight of a person new in the iteration shown, by its match (a crowd region's: neutral).
_EVAL_COLORS = {MATCHED: FOUND_COLOR, FALSE_POSITIVE: FALSE_POSITIVE_COLOR, IGNORED: NEW_COLOR}


def run_entries(records: Iterable[dict[str, Any]], num_iters: int, thumbs: Path, rel: str) -> list[Entry]:
    """Entries of ``bmp run``'s logged images (those without an error), in the given order."""
    entries = []
    for record in tqdm(list(records), desc="report", unit="image", leave=False):
        if "error" in record:
            continue
        results = record["results"]
        last = max([num_iters, *(int(r.get("iteration", 1)) for r in results)])
        entry: Entry = {"id": record["image_id"], "f": record["file"], "w": record["width"],
                        "h": record["height"], "n": [], "new": [], "tm": _milliseconds(record.get("times"))}
        views = []
        for k in range(1, last + 1):
            found = [r for r in results if int(r.get("iteration", 1)) <= k]
            new = [int(r.get("iteration", 1)) == k for r in found]
            entry["n"].append(len(found))
            entry["new"].append(sum(new))
            views.append(View(_drawn(found), [NEW_COLOR if fresh else None for fresh in new]))
        key = f"{safe_name(Path(record['file']).stem)}_{record['image_id']}"
        entry["th"] = _thumbnails(thumbs, rel, key, Path(record["file"]), views)
        entries.append(entry)
    return entries


def _thumbnails(thumbs: Path, rel: str, key: str, image: Path | None, views: list[View]) -> list[str | None]:
    """The page's paths of an image's thumbnails, drawn where missing; None for
    each when the image cannot be read any more (its numbers stay in the page)."""
    try:
        if image is None:
            raise ImageError("image file not found")
        names = thumbnail_names(key, image, views)
        write_thumbnails(thumbs, names, image, views)
    except (ImageError, FileNotFoundError) as exc:  # an unwritable report folder stays an error
        logger.warning("report: no thumbnails for %s: %s", image, exc)
        return [None] * len(views)
    return [f"{rel}/{name}" for name in names]


def _drawn(people: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fields a thumbnail draws (the digest of a view covers only these)."""
    keep = ("bbox", "score", "keypoints", "segmentation", "iteration")
    return [{k: p[k] for k in keep if k in p} for p in people]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _milliseconds(times: Mapping[str, float] | None) -> dict[str, float] | None:
    return None if not times else {stage: round(seconds * 1000, 1) for stage, seconds in times.items()}
