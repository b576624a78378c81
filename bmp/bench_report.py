"""One JSON and one Markdown table from several ``bmp bench --json`` reports and
a pytest junit file: the summary that ``tools/gpu_acceptance.sh`` writes.

    python -m bmp.bench_report --out DIR [--pytest junit.xml] [--status NAME=RC]... NAME=bench.json...

writes ``DIR/acceptance.json`` and ``DIR/acceptance.md``: issue 21's targets
against what was measured, the cuda tests (each with what it measured), one
row per run, mode and input, where the time goes stage by stage, then the
img/s curves of runs made with ``--batch-size``. A report that is missing (its
run failed) is listed as such rather than stopping the merge, so the summary
always says what ran.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from .bench import describe_curve
from .coco import write_text_atomic

#: Issue 21's GPU targets that a bench report answers (the batch curve's own
#: target is bmp.bench.BATCH_TARGETS').
IMAGES_PER_S_AT_10 = 25.0  # the full config, bf16, 10 people, 2 iterations
SAM_DECODE_MS_AT_40 = 10.0  # SAM's decoder for an image of 40 people (every iteration)
PEAK_CUDA_MB = round(8e9 / 2**20, 1)  # 8 GB
#: A step's status when ``gpu_acceptance.sh --within`` left it no time to run.
NOT_RUN = "not-run"


def _outcome(case: ET.Element) -> tuple[str, str]:
    """A junit testcase's outcome and, unless it passed, the first line of why."""
    for tag in ("failure", "error", "skipped"):
        found = case.find(tag)
        if found is not None:
            why = (found.get("message") or found.text or "").strip().splitlines()
            return {"failure": "failed", "error": "error", "skipped": "skipped"}[tag], why[0] if why else ""
    return "passed", ""


def load_pytest(path: str | Path) -> dict[str, Any] | None:
    """Counts, failed test ids and one row per test (outcome, seconds, and the
    values it recorded with ``record_property``) of a ``--junitxml`` file; None
    if absent."""
    path = Path(path)
    if not path.is_file():
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    tests = []
    for case in root.iter("testcase"):
        if case.get("name") is None:  # what pytest writes for the test it was stopped in
            continue
        outcome, why = _outcome(case)
        tests.append({
            "test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome, "why": why,
            "seconds": float(case.get("time", 0)),
            "measured": {p.get("name", ""): p.get("value", "") for p in case.iter("property")},
        })
    failed = [t["test"] for t in tests if t["outcome"] in ("failed", "error")]
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "failed": failed, "tests": tests}


def pytest_markdown(pytest: dict[str, Any]) -> list[str]:
    """The counts, then one row per test: outcome, seconds, what it measured."""
    lines = [f"pytest -m cuda: {pytest['passed']} passed, {pytest['failures']} failed, "
             f"{pytest['errors']} errors, {pytest['skipped']} skipped"]
    lines += [f"- failed: `{name}`" for name in pytest["failed"]]
    # Whole modules skipped while collecting (a missing optional extra or PyAV): one line, not a row each.
    modules = [t for t in pytest.get("tests", [])
               if t["outcome"] == "skipped" and t["why"] == "collection skipped"]
    if modules:
        lines.append("- skipped at collection: " + ", ".join(f"`{t['test'].strip(':')}`" for t in modules))
    tests = [t for t in pytest.get("tests", []) if t not in modules]
    if tests:
        lines += ["", "| test | outcome | s | measured |", "|---|---|---|---|"]
        for t in tests:
            outcome = f"{t['outcome']}: {t['why']}" if t["why"] else t["outcome"]
            found = "; ".join(f"{k}: {v}" for k, v in t["measured"].items()) or "-"
            cells = (f"`{t['test'].rpartition('::')[2]}`", outcome, f"{t['seconds']:.1f}", found)
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def merge(
    runs: dict[str, dict[str, Any] | None],
    pytest: dict[str, Any] | None = None,
    status: dict[str, int | str] | None = None,
) -> dict[str, Any]:
    """``runs``: run name -> a bench report (None: the run left no report).
    Adds ``rows``, one per run, mode and input, for the table."""
    rows = []
    for name, report in runs.items():
        if report is None:
            continue
        for mode, data in report["modes"].items():
            images = data.get("images")  # absent: the run stopped before this mode's first input
            inputs = [("images", images)] if images and images["runs_timed"] else []
            inputs += [(f"{count} people", row) for count, row in data.get("scaling", {}).items()]
            for label, row in inputs:
                key = "images" if label == "images" else label.split()[0]
                speedup = report.get("speedup", {}).get(key) if mode == "batched" else None
                rows.append({
                    "run": name, "mode": mode, "input": label, "people": row["people"],
                    "total_ms": row["total_ms"], "images_per_s": row["images_per_s"],
                    "speedup_vs_naive": speedup, "peak_cuda_mb": report.get("peak_cuda_mb"),
                    "ms": row.get("ms", {}),
                })
    devices = sorted({r["device"] for r in runs.values() if r is not None})
    batch_rows, curves = batch_tables(runs)
    return {"devices": devices, "status": dict(status or {}), "pytest": pytest, "runs": runs, "rows": rows,
            "batch_rows": batch_rows, "batch_curves": curves, "targets": targets(runs, rows, curves)}


def targets(runs: dict[str, dict[str, Any] | None], rows: list[dict[str, Any]],
            curves: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target with what every run that measured it found (``rows``: the
    merged table's); a target no run measured gets one row with ``measured``
    None."""
    def batched(people: int) -> dict[str, dict[str, Any]]:
        return {r["run"]: r for r in rows if r["mode"] == "batched" and r["input"] == f"{people} people"}

    checks = [
        (f">= {IMAGES_PER_S_AT_10:g} img/s at 10 people, 2 iterations",
         {run: r["images_per_s"] for run, r in batched(10).items()}, lambda v: v >= IMAGES_PER_S_AT_10),
        (f"SAM decode for 40 people < {SAM_DECODE_MS_AT_40:g} ms",
         {run: r["ms"].get("sam_decode") for run, r in batched(40).items()},
         lambda v: v < SAM_DECODE_MS_AT_40),
        (f"peak CUDA memory < 8 GB ({PEAK_CUDA_MB:g} MiB)",
         {run: report.get("peak_cuda_mb") for run, report in runs.items() if report is not None},
         lambda v: v < PEAK_CUDA_MB),
    ]
    found = []
    for target, values, meets in checks:
        measured = {run: value for run, value in values.items() if value is not None}
        found += [{"target": target, "run": run, "measured": value, "met": meets(value)}
                  for run, value in measured.items()]
        if not measured:
            found.append({"target": target, "run": "-", "measured": None, "met": False})
    for curve in curves:
        if curve["target"]:
            found.append({"target": curve["target"]["rule"], "run": f"{curve['run']}, {curve['input']}",
                          "measured": curve["target"]["ratio"], "met": curve["target"]["met"]})
    return found


def batch_tables(runs: dict[str, dict[str, Any] | None]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The runs' batch curves (``bmp bench --batch-size``): one row per run,
    input and batch size, and one summary line per run and input."""
    rows, curves = [], []
    for name, report in runs.items():
        for label, curve in ((report or {}).get("batch") or {}).get("inputs", {}).items():
            for r in curve["rows"]:
                rows.append({
                    "run": name, "input": label, "batch_size": r["batch_size"], "people": r.get("people"),
                    "images_per_s": r.get("images_per_s"), "ratio": r.get("ratio"), "error": r.get("error"),
                    "peak_cuda_mb": r.get("peak_cuda_mb"), "rss_growth_mb": r.get("rss_growth_mb"),
                })
            curves.append({"run": name, "input": label, "base_batch_size": curve["base_batch_size"],
                           "flattens_at": curve["flattens_at"], "target": curve["target"],
                           "summary": describe_curve(curve)})
    return rows, curves


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _step_status(rc: int | str) -> str:
    if rc == NOT_RUN:
        return "NOT RUN (no time left in the call)"
    # 124/137: tools/gpu_acceptance.sh's `timeout` stopped the step at its time budget.
    if rc in (124, 137):
        return f"TIMED OUT ({rc})"
    return "ok" if rc == 0 else f"FAILED ({rc})"


def batch_markdown(merged: dict[str, Any]) -> list[str]:
    """The batch-curve table and, per curve, where it flattens and the target."""
    if not merged.get("batch_rows"):
        return []
    lines = ["", "| run | input | batch | people | img/s | x smallest batch | peak CUDA MB | peak RSS +MB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in merged["batch_rows"]:
        rate = r["images_per_s"] if r["error"] is None else r["error"]
        cells = (r["run"], r["input"], r["batch_size"], r["people"], rate, r["ratio"], r["peak_cuda_mb"],
                 r["rss_growth_mb"])
        lines.append("| " + " | ".join(_cell(v) for v in cells) + " |")
    lines.append("")
    lines += [f"- batch curve `{c['run']}`, {c['input']}: {c['summary']}" for c in merged["batch_curves"]]
    return lines


def targets_markdown(merged: dict[str, Any]) -> list[str]:
    if not merged.get("targets"):
        return []
    lines = ["| target | run | measured | |", "|---|---|---|---|"]
    for t in merged["targets"]:
        verdict = "not measured" if t["measured"] is None else ("met" if t["met"] else "NOT met")
        lines.append(f"| {t['target']} | {t['run']} | {_cell(t['measured'])} | {verdict} |")
    return [*lines, ""]


def stages_markdown(merged: dict[str, Any]) -> list[str]:
    """Where the time goes: ms per stage for every run, mode and input; "other"
    is the wall time no stage timer covers (Python, host transfers)."""
    stages: list[str] = []
    for row in merged["rows"]:
        stages += [s for s in row["ms"] if s not in stages]
    if not stages:
        return []
    lines = ["", "Where the time goes (ms per image):", "",
             "| run | mode | input | " + " | ".join(stages) + " | other | total |",
             "|---" * (len(stages) + 5) + "|"]
    for row in merged["rows"]:
        ms = row["ms"]
        other = row["total_ms"] - sum(ms.values())
        cells = [row["run"], row["mode"], row["input"], *(ms.get(s, 0.0) for s in stages), round(other, 2),
                 row["total_ms"]]
        lines.append("| " + " | ".join(_cell(v) for v in cells) + " |")
    return lines


def markdown(merged: dict[str, Any]) -> str:
    lines = ["# GPU acceptance", ""]
    if merged["devices"]:
        lines += [f"Device: {', '.join(merged['devices'])}", ""]
    lines += targets_markdown(merged)
    if merged["status"]:
        lines += ["| step | exit status |", "|---|---|"]
        for step, rc in merged["status"].items():
            lines.append(f"| {step} | {_step_status(rc)} |")
        lines.append("")
    pytest = merged["pytest"]
    if pytest is not None:
        lines += [*pytest_markdown(pytest), ""]
    missing = [name for name, report in merged["runs"].items() if report is None]
    lines += [f"bench `{name}`: no report (the run failed)" for name in missing]
    # `bmp bench --json` rewrites its report after every finished input.
    partial = [name for name, report in merged["runs"].items() if report and not report.get("complete", True)]
    lines += [f"bench `{name}`: stopped before the end; below is what it finished" for name in partial]
    if missing or partial:
        lines.append("")
    if merged["rows"]:
        lines += ["| run | mode | input | people | total ms | img/s | batched speed-up | peak CUDA MB |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in merged["rows"]:
            lines.append("| " + " | ".join(_cell(r[k]) for k in (
                "run", "mode", "input", "people", "total_ms", "images_per_s", "speedup_vs_naive",
                "peak_cuda_mb")) + " |")
    lines += stages_markdown(merged)
    lines += batch_markdown(merged)
    return "\n".join(lines) + "\n"


def write(out: str | Path, merged: dict[str, Any]) -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "acceptance.json", out / "acceptance.md"
    write_text_atomic(json_path, json.dumps(merged, indent=1))
    write_text_atomic(md_path, markdown(merged))
    return json_path, md_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bmp.bench_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for acceptance.json and acceptance.md")
    parser.add_argument("--pytest", default=None, help="a pytest --junitxml file")
    parser.add_argument("--status", action="append", default=[], metavar="NAME=RC",
                        help=f"a step's exit status (or {NOT_RUN}), repeatable")
    parser.add_argument("runs", nargs="*", metavar="NAME=JSON", help="bench reports (bmp bench --json)")
    args = parser.parse_args(argv)
    runs: dict[str, dict[str, Any] | None] = {}
    for item in args.runs:
        name, _, path = item.partition("=")
        file = Path(path)
        runs[name] = json.loads(file.read_text()) if file.is_file() else None
    status = {}
    for item in args.status:
        name, _, rc = item.partition("=")
        status[name] = rc if rc == NOT_RUN else int(rc)
    merged = merge(runs, load_pytest(args.pytest) if args.pytest else None, status)
    json_path, md_path = write(args.out, merged)
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
