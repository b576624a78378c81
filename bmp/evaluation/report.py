"""Human-readable views of ``metrics.json``: a Markdown table and an AP-vs-iteration plot.

Numbers are printed as ``COCOeval.summarize()`` prints them (3 decimals); the
only arithmetic here is the loop-gain difference between two of them.
"""

from __future__ import annotations

import os
from typing import Any

from .crowdpose import IOU_TYPE as CROWDPOSE_KEYPOINTS
from .records import GT_KPTS_ROW

#: The AR column per iou type (COCOeval's AR at 100 detections / keypoint AR).
AR_KEY = {"bbox": "AR100", "segm": "AR100", "keypoints": "AR", CROWDPOSE_KEYPOINTS: "AR"}
SHORT = {"bbox": "bbox", "segm": "segm", "keypoints": "kpt", CROWDPOSE_KEYPOINTS: "kpt"}
#: Columns beyond AP and AR: CrowdPose's AP on easy / medium / hard images (by crowd index).
EXTRA_COLUMNS = {CROWDPOSE_KEYPOINTS: (("AP(E)", "AP_easy"), ("AP(M)", "AP_medium"), ("AP(H)", "AP_hard"))}
#: Fixed colour per stage and marker per subset, the same in every panel. Pose and
#: segmenter share boxes and keypoints, so their curves may coincide: the wider
#: marker keeps the one underneath visible.
STAGE_COLOR = {"detector": "C0", "pose": "C1", "segmenter": "C2", "exclusive": "C3"}
SUBSET_STYLE = {"all": ("-", "o", 7), "moderate": ("--", "s", 5), "hard": (":", "^", 5)}
#: Failed images named in the table; metrics.json names every one.
MAX_FAILED_LISTED = 20


def _fmt(stats: dict[str, float] | None, key: str) -> str:
    return "–" if stats is None else f"{stats[key]:0.3f}"


def markdown_table(metrics: dict[str, Any]) -> str:
    """Per subset, one row per (iteration, stage): people found, AP and AR."""
    # Columns only for iou types some stage predicts (GT-pose mode predicts masks only).
    iou_types = [
        t for t in metrics["iou_types"]
        if any(cell[t] is not None for rows in metrics["metrics"].values()
               for stages in rows.values() for cell in stages.values())
    ]
    lines = [f"## bmp eval: {metrics['dataset']['ann']}", ""]
    info = metrics["images"]
    lines.append(
        f"{info['evaluated']} of {info['selected']} images evaluated"
        + (f", {len(info['failed'])} failed" if info["failed"] else "")
        + f"; config `{metrics['config']}`"
        + (f", {metrics['num_iters']} iterations" if metrics["mode"] == "loop" else ", GT poses in")
        + "."
    )
    for iou_type, reason in metrics["skipped"].items():
        lines.append(f"- {iou_type}: {reason}")
    # Every image left out is named with its reason (all of them in metrics.json).
    for failure in info["failed"][:MAX_FAILED_LISTED]:
        lines.append(f"- not evaluated: {failure['file']}: {failure['error']}")
    if len(info["failed"]) > MAX_FAILED_LISTED:
        lines.append(f"- and {len(info['failed']) - MAX_FAILED_LISTED} more not evaluated: see metrics.json")
    header = ["iter", "stage", "results"]
    for t in iou_types:
        header += [f"{SHORT[t]} AP", f"{SHORT[t]} AR"]
        header += [f"{SHORT[t]} {column}" for column, _ in EXTRA_COLUMNS.get(t, ())]
    empty = []
    for name, subset in metrics["subsets"].items():
        title = "All persons" if name == "all" else f"{name.capitalize()} ({subset['description']})"
        if "skipped" in subset:
            empty.append(f"- {title}: {subset['skipped']}")
            continue
        lines += ["", f"### {title}: {subset['images']} images, {subset['instances']} persons", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---:", ":---"] + ["---:"] * (len(header) - 2)) + "|")
        for row, stages in metrics["metrics"][name].items():
            for stage, cell in stages.items():
                label = "GT poses" if row == GT_KPTS_ROW else row
                values = [label, stage, str(cell["num_results"])]
                for t in iou_types:
                    values += [_fmt(cell[t], "AP"), _fmt(cell[t], AR_KEY[t])]
                    values += [_fmt(cell[t], key) for _, key in EXTRA_COLUMNS.get(t, ())]
                lines.append("| " + " | ".join(values) + " |")
        gain = loop_gain(metrics, name)
        if gain:
            lines += ["", gain]
    if empty:
        lines += ["", "Not evaluated:", *empty]
    return "\n".join(lines) + "\n"


def loop_gain(metrics: dict[str, Any], subset: str, stage: str = "segmenter") -> str:
    """``loop gain (iteration 1 -> N, segmenter): bbox AP +0.012, ...``, or ''."""
    rows = metrics["metrics"].get(subset, {})
    keys = [k for k in rows if k != GT_KPTS_ROW]
    if len(keys) < 2:
        return ""
    first, last = rows[keys[0]][stage], rows[keys[-1]][stage]
    parts = [
        f"{SHORT[t]} AP {last[t]['AP'] - first[t]['AP']:+0.3f}"
        for t in metrics["iou_types"] if first[t] is not None and last[t] is not None
    ]
    return f"loop gain (iteration {keys[0]} → {keys[-1]}, {stage}): " + ", ".join(parts)


def plot_ap(metrics: dict[str, Any], path: str | os.PathLike) -> bool:
    """AP vs iteration, one panel per iou type: every stage on all persons
    (solid), the loop's output on the Moderate / Hard subsets (dashed).

    Returns False (and writes nothing) when there is no iteration axis.
    """
    # Figure + Agg canvas, not pyplot: no global backend switch inside a library.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    table = metrics["metrics"]
    if metrics["mode"] != "loop" or "all" not in table:
        return False
    iou_types = metrics["iou_types"]
    fig = Figure(figsize=(4.2 * len(iou_types), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(iou_types), squeeze=False)[0]
    iterations = [int(k) for k in table["all"]]
    for ax, iou_type in zip(axes, iou_types, strict=True):
        curves = [("all", stage) for stage in table["all"][str(iterations[0])]]
        curves += [(s, "segmenter") for s in table if s != "all"]
        for subset, stage in curves:
            values = [table[subset][str(k)][stage][iou_type] for k in iterations]
            if any(v is None or v["AP"] < 0 for v in values):
                continue  # not predicted by this stage, or COCOeval's -1 (no data)
            line, marker, size = SUBSET_STYLE.get(subset, ("-.", "x", 5))
            if stage == "pose":
                size += 3
            label = stage if subset == "all" else f"{stage} ({subset})"
            ax.plot(iterations, [v["AP"] for v in values], line, marker=marker, markersize=size,
                    color=STAGE_COLOR.get(stage), label=label)
        ax.set_title(f"{iou_type} AP")
        ax.set_xlabel("loop iteration")
        ax.set_xticks(iterations)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    from ..coco import atomic_write

    with atomic_write(path, "wb") as f:  # never half a file; a full disk is one line
        fig.savefig(f, format="png", dpi=120)
    return True
