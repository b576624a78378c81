"""``report.html``: one self-contained page per ``bmp eval --report`` / ``bmp run --report``.

The page (``OUT/report.html``) and its thumbnails (``OUT/report_files/``) can be
zipped together and opened anywhere: no network resources, images by relative
path. Every file is written atomically and thumbnails are reused across runs,
so an interrupted report is finished by running the command again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..coco import output_folder, write_text_atomic
from .entries import Entry, eval_entries, matching_iou_type, run_entries
from .page import (
    IOU_LABELS,
    added_summary,
    eval_legend,
    markdown_html,
    render_page,
    run_legend,
    stage_summary,
    stage_times,
)

__all__ = ["REPORT", "THUMBS", "write_eval_report", "write_run_report"]

logger = logging.getLogger("bmp.report")

REPORT = "report.html"
#: The thumbnail folder, next to the page.
THUMBS = "report_files"


def write_eval_report(
    out: Path, metrics: dict[str, Any], dataset: Any, records: Mapping[int, dict[str, Any]], num_iters: int,
    markdown: str,
) -> Path:
    """``OUT/report.html`` of a loop-mode ``bmp eval``: its metrics table (``markdown``),
    the AP plot, and every evaluated image (``records``: image id -> record)."""
    thumbs = output_folder(out / THUMBS, "report folder")
    entries = eval_entries(dataset, records, num_iters, thumbs, THUMBS)
    iou_types = sorted({t for e in entries for t in e["ap"]}, key=list(IOU_LABELS).index)
    primary = next((t for t in ("keypoints", "segm", "bbox") if t in iou_types), "bbox")
    plot = out / "ap_vs_iteration.png"
    sections = [f"<section id=\"metrics\">{markdown_html(markdown)}</section>"]
    if plot.is_file():
        sections.append(f"<section class=\"plot\"><h2>AP vs iteration</h2><img src=\"{plot.name}\" "
                        f"alt=\"AP vs loop iteration\"></section>")
    sections.append(added_summary(entries, num_iters, primary))
    if times := stage_times(entries):  # records of an older bmp have none
        sections.append(f"<section id=\"times\"><h2>Time per loop stage</h2>{times}</section>")
    page = render_page(
        "bmp eval report",
        f"{metrics['dataset']['ann']} · config {metrics['config']} · {num_iters} iterations",
        entries, {"mode": "eval", "iters": num_iters, "primary": primary, "iou": iou_types},
        sections, eval_legend(matching_iou_type(iou_types)),
    )
    return _publish(out, thumbs, entries, page)


def write_run_report(out: Path, records: Iterable[dict[str, Any]], num_iters: int, config: str) -> Path:
    """``OUT/report.html`` of ``bmp run``: every logged image (``records`` in input
    order), its people per iteration and per-stage times."""
    thumbs = output_folder(out / THUMBS, "report folder")
    entries = run_entries(records, num_iters, thumbs, THUMBS)
    iters = max([num_iters, *(len(e["n"]) for e in entries)])
    people = sum(e["n"][-1] for e in entries if e["n"])
    stages = sorted({s for e in entries for s in (e["tm"] or {})})
    page = render_page(
        "bmp run report", f"config {config} · {iters} iterations · {len(entries)} images · {people} people",
        entries, {"mode": "run", "iters": iters, "primary": None, "iou": [], "stages": stages},
        [stage_summary(entries)], run_legend(),
    )
    return _publish(out, thumbs, entries, page)


def _publish(out: Path, thumbs: Path, entries: Sequence[Entry], page: str) -> Path:
    """Write the page last (atomically), then drop thumbnails no page names any more."""
    path = out / REPORT
    write_text_atomic(path, page)
    used = {Path(t).name for e in entries for t in e["th"] if t}
    for stale in thumbs.glob("*_it*_*.jpg"):
        if stale.name not in used:
            stale.unlink(missing_ok=True)
    logger.info("report: %s (%d images)", path, len(entries))
    return path
