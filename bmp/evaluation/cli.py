"""``bmp eval``: the loop on a COCO-format benchmark, scored with COCOeval after
every iteration and stage, on all persons and on OCHuman's occlusion subsets.

    bmp eval --config CFG --ann ANN.json --images DIR --out DIR [--iters N] [--gt-kpts] [--limit K]
    torchrun --nproc_per_node=K -m bmp eval ...        # sharded over K processes

``--batch-size B`` images go through the loop together, decoded by ``--workers W``
background processes (defaults by device: see :func:`bmp.image_loader.default_batching`).

Writes to OUT: ``predictions.rank{R}.jsonl`` (per-image records, resumable),
``metrics.json``, ``metrics.md`` (the printed table), ``results_iter{k}.json``
(COCO results after iteration k; ``results_gt_kpts.json`` with ``--gt-kpts``;
keypoints in the file's layout: CrowdPose's 14 for a CrowdPose file),
``ap_vs_iteration.png`` and, with ``--report``, ``report.html`` (:mod:`bmp.html_report`).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..output_lock import OutputLocks
    from ..sharding import ShardLogs
    from ..termination import StopRequest

logger = logging.getLogger("bmp.eval")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..image_loader import add_batching_arguments
    from ..input_limits import add_limit_arguments
    from ..weights import add_trust_argument

    parser.add_argument("--config", required=True, help="loop config, e.g. configs/bmp_lite.py")
    parser.add_argument("--ann", required=True,
                        help="COCO-format annotation file (COCO, OCHuman, CIHP, CrowdPose)")
    parser.add_argument("--images", required=True, help="folder with the annotated images")
    parser.add_argument("--out", required=True, help="output folder (re-run to resume)")
    parser.add_argument("--iters", type=int, default=None, help="loop iterations (default: config)")
    parser.add_argument(
        "--gt-kpts", action="store_true",
        help="ground-truth poses in, masks out: segment every GT pose and report mask AP",
    )
    parser.add_argument("--limit", type=int, default=None, metavar="K",
                        help="only the first K images (by image id), for quick runs")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: auto)")
    parser.add_argument(
        "--weights-dir", action="append", default=[], metavar="DIR",
        help="folder with checkpoint files, searched before the cache (repeatable)",
    )
    parser.add_argument("--category", default=None, metavar="NAME|ID",
                        help="the annotation category to score as persons (default: the one named person)")
    parser.add_argument("--allow-outside-images", action="store_true",
                        help="read file names that leave --images (absolute, '..', links to other folders)")
    add_trust_argument(parser)
    add_batching_arguments(parser)
    add_limit_arguments(parser)
    parser.add_argument("--overwrite", action="store_true",
                        help="start over instead of resuming from OUT/predictions.rank*.jsonl")
    parser.add_argument("--report", action="store_true",
                        help="also write OUT/report.html: metrics, per-image AP and a gallery of every "
                             "iteration (self-contained, thumbnails in OUT/report_files/)")


def run(args: argparse.Namespace) -> int:
    from ..distributed import process_group
    from ..output_lock import OutputLocks
    from ..termination import stop_after_batch

    with process_group(args.device) as (dist, device), OutputLocks() as locks, \
            stop_after_batch() as stop:
        return _evaluate(args, dist, device, locks, stop)


def _evaluate(args: argparse.Namespace, dist: Any, device: str | None, locks: OutputLocks,
              stop: StopRequest) -> int:
    from ..coco import output_folder
    from ..config import ConfigError
    from ..image_loader import resolve_batching
    from ..input_limits import apply_limits
    from ..sharding import ShardLogs, merged_records
    from .dataset import DatasetError, EvalDataset
    from .inference import run_shard

    if args.gt_kpts and args.iters is not None:
        raise ConfigError("--iters has no effect with --gt-kpts (no loop runs)")
    if args.gt_kpts and args.report:
        raise ConfigError("--report shows the loop's iterations, and --gt-kpts runs no loop")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    batch_size, workers = resolve_batching(args.batch_size, args.workers, device)
    apply_limits(args)
    # Before any output or model: a wrong annotation file fails in a second.
    dataset = EvalDataset(args.ann, args.images, args.category, args.allow_outside_images)
    if args.gt_kpts:
        for needed in ("keypoints", "segm"):
            if needed in dataset.skipped:
                raise DatasetError(f"--gt-kpts needs 17 keypoints and masks: {dataset.skipped[needed]}")
    num_iters = None if args.gt_kpts else _num_iters(args.config, args.iters)
    out = Path(args.out)
    logs = ShardLogs(out)
    signature = _signature(args, num_iters)
    output_folder(out)  # every rank (and node) must be able to write its log there
    locks.shared(out, dist, logs.path(dist))  # before anything in the folder is read or changed
    _check_previous_run(out, signature, args.overwrite)  # every rank: all fail alike
    dist.barrier()
    if dist.is_main:
        _prepare_out(logs, signature, args.overwrite)
    dist.barrier()

    selected = dataset.images[: args.limit]
    refused = [i for i in selected if i.refused]
    if refused and dist.is_main:
        logger.warning("%d of %d images are refused (e.g. %s); they count as failed",
                       len(refused), len(selected), refused[0].refused)
    missing = [i for i in selected if i.path is None and not i.refused]
    if missing and dist.is_main:
        logger.warning("%d of %d images are missing from %s (e.g. %s); they count as failed",
                       len(missing), len(selected), dataset.images_dir, missing[0].file_name)
    done = logs.done()
    todo = [i for i in selected if i.file_name not in done]
    if dist.is_main and len(todo) < len(selected):
        logger.info("resuming: %d of %d images already done", len(selected) - len(todo), len(selected))

    # Every rank builds the models while any rank has work, even one whose shard is
    # empty: libraries may synchronise the ranks while loading (Ultralytics' settings
    # take a barrier on import), and a rank that skipped it would pair its later
    # barriers with the wrong ones and hang.
    predictor = _build_predictor(args, dataset, device, num_iters) if todo else None
    finished = run_shard(dist.shard(todo), predictor, logs, dist, batch_size, workers, stop)
    # Stopped: the logs hold every finished image; metrics of a part would pass for the whole.
    stop.raise_if_stopped(stop.of_any_rank(dist))
    records = merged_records(logs, dist, finished)
    if records is None:  # not rank 0: rank 0 reports
        return 0
    return _report(args, dataset, selected, records, num_iters)


def _build_predictor(args: argparse.Namespace, dataset: Any, device: str | None,
                     num_iters: int | None) -> Any:
    """The GT-pose segmenter (``--gt-kpts``) or the loop: loads the models."""
    if args.gt_kpts:
        from .gt_poses import GTPosePredictor, build_segmenter

        return GTPosePredictor(build_segmenter(args.config, device, args.weights_dir), dataset)
    from .inference import build_loop_predictor

    return build_loop_predictor(args.config, device, args.weights_dir, num_iters)


def _report(
    args: argparse.Namespace, dataset: Any, selected: list, records: dict[str, dict[str, Any]],
    num_iters: int | None,
) -> int:
    from ..coco import write_json_atomic, write_text_atomic
    from .evaluate import collect_results, evaluate_records, result_converter
    from .records import GT_KPTS_ROW, GT_KPTS_STAGES, LOOP_STAGES
    from .report import markdown_table, plot_ap

    out = Path(args.out)
    ok = {r["image_id"]: r for r in (records.get(i.file_name) for i in selected)
          if r is not None and "error" not in r}
    # An image with no record at all is listed too: nothing selected goes unnamed.
    failed = []
    for image in selected:
        record = records.get(image.file_name)
        if record is None or "error" in record:
            error = "not run" if record is None else record["error"]
            failed.append({"file": image.file_name, "error": error})
    if not ok:
        logger.error("no image could be processed; nothing to evaluate")
        return 1
    rows = [GT_KPTS_ROW] if args.gt_kpts else list(range(1, num_iters + 1))
    stages = GT_KPTS_STAGES if args.gt_kpts else LOOP_STAGES
    metrics: dict[str, Any] = {
        "mode": "gt_kpts" if args.gt_kpts else "loop",
        "config": str(args.config),
        "num_iters": num_iters,
        "dataset": {"ann": str(args.ann), "images": str(args.images)},
        "iou_types": list(dataset.iou_types),
        "skipped": dataset.skipped,
        "images": {"selected": len(selected), "evaluated": len(ok), "failed": failed},
        **evaluate_records(dataset, ok, rows, stages),
    }
    write_json_atomic(out / "metrics.json", metrics)
    ids = sorted(ok)
    for row in rows:
        name = "results_gt_kpts.json" if row == GT_KPTS_ROW else f"results_iter{row}.json"
        write_json_atomic(out / name, collect_results(ok, ids, row, "segmenter", dataset.person_id,
                                                      result_converter(dataset)))
    table = markdown_table(metrics)
    write_text_atomic(out / "metrics.md", table)
    print(table)
    if plot_ap(metrics, out / "ap_vs_iteration.png"):
        print(f"plot: {out / 'ap_vs_iteration.png'}")
    if args.report:
        from ..html_report import write_eval_report

        print(f"report: {write_eval_report(out, metrics, dataset, ok, num_iters, table)}")
    print(f"metrics: {out / 'metrics.json'}  table: {out / 'metrics.md'}")
    return 0


def _num_iters(config: str, iters: int | None) -> int:
    from ..config import LoopConfig, load_config

    values = dict(load_config(config).get("loop") or {})
    if iters is not None:
        values["num_iters"] = iters
    return LoopConfig.from_dict(values).num_iters


def _signature(args: argparse.Namespace, num_iters: int | None) -> dict[str, Any]:
    """What the saved predictions depend on (not --limit, --images or --device:
    images are keyed by their annotated file name)."""
    config = Path(args.config)
    return {
        "mode": "gt_kpts" if args.gt_kpts else "loop",
        "config": os.fspath(config.resolve()),
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None,
        "num_iters": num_iters,
        "ann": os.fspath(Path(args.ann).resolve()),
    }


def _check_previous_run(out: Path, signature: dict[str, Any], overwrite: bool) -> None:
    import json

    from ..config import ConfigError, describe_changes

    path = out / "run.json"
    if overwrite or not path.is_file():
        return
    try:
        previous = json.loads(path.read_text())
    except ValueError:
        raise ConfigError(f"{path} is corrupt; use --overwrite or another --out") from None
    if previous != signature:
        changed = describe_changes(previous, signature)
        raise ConfigError(
            f"{out} holds predictions of a different run (changed: {changed}); "
            "use --overwrite or another --out"
        )


def _prepare_out(logs: ShardLogs, signature: dict[str, Any], overwrite: bool) -> None:
    from ..coco import write_json_atomic

    logs.out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        logs.remove()
    write_json_atomic(logs.out / "run.json", signature)
