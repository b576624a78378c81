"""The ``bmp`` command line: ``bmp run`` and ``bmp weights``.

``bmp run`` shards its images over the processes of ``torchrun --nproc-per-node G
-m bmp run ...`` as ``bmp eval`` does (:mod:`bmp.sharding`); rank 0 decides the
image ids and writes the merged results.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import os
import sys
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from .coco import (
    OutputError,
    PredictionLog,
    image_id_from_name,
    instances_to_coco,
    output_folder,
    write_json_atomic,
)
from .config import ConfigError, describe_changes
from .image_loader import add_batching_arguments
from .images import ImageError, expand_inputs
from .input_limits import add_limit_arguments, apply_limits
from .termination import report as report_stop
from .termination import signals_handled
from .weights import CHECKPOINTS, WeightsError, add_trust_argument, cache_dir

if TYPE_CHECKING:
    from .distributed import Distributed
    from .output_lock import OutputLocks
    from .sharding import ShardLogs
    from .structures import Instances
    from .termination import StopRequest

logger = logging.getLogger("bmp")

#: Subcommands that live in their own modules: name -> (module, help). Each module
#: defines ``add_arguments(parser)`` and ``run(args) -> int`` (exit code) and
#: imports heavy libraries only inside ``run``.
COMMAND_MODULES: dict[str, tuple[str, str]] = {
    "train-pose2seg": ("bmp.finetune.cli", "fine-tune SAM 2.1 on pose prompts (SAM-pose2seg)"),
    "eval": ("bmp.evaluation.cli", "COCOeval of every loop iteration and stage on a COCO-format dataset"),
    "video": ("bmp.video.cli", "run the loop over a video: annotated MP4, per-frame JSONL, track ids"),
    "bench": ("bmp.bench", "per-stage timing, throughput, memory and scaling with the number of people"),
    "demo": ("bmp.demo.cli", "interactive web demo (Gradio, pip install 'bmp[demo]')"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bmp", description="BBox-Mask-Pose: people detection, pose and segmentation"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the loop on images, folders or globs")
    run.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    run.add_argument("--config", required=True, help="config file, e.g. configs/bmp_lite.py")
    run.add_argument("--out", required=True, help="output folder")
    run.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: auto)")
    run.add_argument("--iters", type=int, default=None, help="loop iterations (default: config)")
    run.add_argument("--vis", action="store_true", help="write overlays to OUT/vis/")
    run.add_argument(
        "--weights-dir", action="append", default=[], metavar="DIR",
        help="folder with checkpoint files, searched before the cache (repeatable)",
    )
    add_trust_argument(run)
    run.add_argument(
        "--ann", default=None,
        help="COCO annotation file whose image ids the results should use",
    )
    run.add_argument(
        "--boxes", default=None, metavar="FILE.json",
        help="COCO detection results (image_id, bbox [x,y,w,h], score) of people you already have: "
             "the loop's iteration 0, used unchanged; later iterations find the people they miss. "
             "Image ids as in the results (--ann, else numeric file names); images without boxes "
             "get the plain loop",
    )
    run.add_argument(
        "--overwrite", action="store_true",
        help="start over instead of resuming from OUT/predictions.jsonl",
    )
    run.add_argument(
        "--report", action="store_true",
        help="also write OUT/report.html: a gallery stepping through every iteration, people per "
             "iteration and per-stage times (self-contained, thumbnails in OUT/report_files/)",
    )
    add_batching_arguments(run)
    add_limit_arguments(run)

    weights = sub.add_parser("weights", help="list the registered official checkpoints")
    weights.add_argument("--urls", action="store_true", help="print download URLs")

    for name, (module, help_text) in COMMAND_MODULES.items():
        command = sub.add_parser(name, help=help_text)
        importlib.import_module(module).add_arguments(command)
        command.set_defaults(module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Libraries (sam2) log chatty INFO lines to the root logger: only bmp's own show.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("bmp").setLevel(logging.INFO)
    try:
        with signals_handled():  # SIGTERM stops a command as cleanly as Ctrl-C
            if args.command == "run":
                return run(args)
            if args.command == "weights":
                return list_weights(args)
            return importlib.import_module(args.module).run(args)
    except (ConfigError, WeightsError, ImageError, OutputError, FileNotFoundError) as exc:
        print(f"bmp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        return report_stop(exc)


def list_weights(args: argparse.Namespace) -> int:
    print(f"cache: {cache_dir()}  (set $BMP_HOME to move it)")
    for c in CHECKPOINTS.values():
        here = "cached" if (cache_dir() / c.filename).is_file() else "-"
        line = f"{c.name:24s} {here:7s} {c.filename}"
        print(line + (f"\n    {c.url}" if args.urls else ""))
    return 0


#: The output folder's file -> image id map: what keeps ids stable across runs
#: that resume into the same folder with other inputs.
IMAGE_IDS = "image_ids.json"


def _read_json_option(file: str, option: str, what: str) -> Any:
    """The JSON in the file an option names; a missing or invalid file in one line."""
    path = Path(file)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{option} {path} is not valid JSON: {exc}") from None


def _read_ann_ids(ann: str) -> dict[str, int]:
    """File name -> image id of a COCO annotation file."""
    path = Path(ann)
    data = _read_json_option(ann, "--ann", "annotation file")
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise ConfigError(f"--ann {path} is not a COCO annotation file (it has no 'images' list)")
    by_name: dict[str, int] = {}
    for info in images:
        try:
            name, image_id = Path(info["file_name"]).name, int(info["id"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                f"--ann {path}: an image entry without file_name and id: {info!r:.200}"
            ) from None
        if by_name.setdefault(name, image_id) != image_id:
            raise ConfigError(f"--ann {path} has two images named {name} (ids {by_name[name]}, {image_id})")
    return by_name


#: Per image id, the people of a ``--boxes`` file: (N, 4) xyxy boxes and (N,) scores.
GivenBoxes = dict[int, tuple[np.ndarray, np.ndarray]]


def _read_boxes(file: str) -> GivenBoxes:
    """The people of a COCO detection results file (``--boxes``), per image id,
    in file order. ``category_id`` and ``score`` may be absent (person, 1)."""
    path = Path(file)
    entries = _read_json_option(file, "--boxes", "boxes file")
    if not isinstance(entries, list):
        raise ConfigError(f"--boxes {path} is not a list of COCO detection results "
                          f"(it is a JSON {type(entries).__name__})")
    people: dict[int, list[tuple[list[float], float]]] = {}
    for n, entry in enumerate(entries):
        where = f"--boxes {path}: entry {n}"
        if not isinstance(entry, dict) or "image_id" not in entry or "bbox" not in entry:
            raise ConfigError(f"{where} is not a detection with image_id and bbox: {entry!r:.200}")
        image_id, bbox = entry["image_id"], entry["bbox"]
        score, category = entry.get("score", 1.0), entry.get("category_id", 1)
        if isinstance(image_id, bool) or not isinstance(image_id, int):
            raise ConfigError(f"{where} has image_id {image_id!r:.50}, not an integer")
        numbers = isinstance(bbox, list) and len(bbox) == 4 and all(
            isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) for v in bbox
        )
        if not numbers or bbox[2] <= 0 or bbox[3] <= 0:
            raise ConfigError(f"{where} has bbox {bbox!r:.100}; it must be [x, y, w, h] with w, h > 0")
        if category != 1:
            raise ConfigError(f"{where} has category_id {category!r:.50}; only people (1) can be posed")
        if isinstance(score, bool) or not isinstance(score, int | float) or not np.isfinite(score):
            raise ConfigError(f"{where} has score {score!r:.50}, not a finite number")
        x, y, w, h = (float(v) for v in bbox)
        people.setdefault(image_id, []).append(([x, y, x + w, y + h], float(score)))
    return {
        image_id: (np.array([b for b, _ in found], np.float32), np.array([s for _, s in found], np.float32))
        for image_id, found in people.items()
    }


def _boxes_per_file(given: GivenBoxes, ids: dict[Path, int], file: str) -> dict[Path, tuple]:
    """The ``--boxes`` people of each input image; an id no input has is an error
    (most likely ids that do not follow the file names: give ``--ann``)."""
    unknown = sorted(set(given) - set(ids.values()))
    if unknown:
        raise ConfigError(
            f"--boxes {file}: {len(unknown)} image ids match no input image: {unknown[:5]} "
            "(image ids come from --ann, else from numeric file names)"
        )
    return {path: given[image_id] for path, image_id in ids.items() if image_id in given}


def assign_image_ids(
    paths: list[Path], known: dict[str, int], ann_ids: dict[str, int] | None = None,
    ann: str | None = None,
) -> dict[Path, int]:
    """Image ids that stay with their file and never collide.

    A file keeps the id it was given before (``known``: the output folder's map
    and log). A new file takes its id from ``ann_ids`` (``--ann``), else from a
    numeric name (``000000000785.jpg`` -> 785) unless another file holds that
    id, else the next unused id. Two files that ``--ann`` gives the same id
    cannot be told apart: a :class:`ConfigError`.
    """
    owner: dict[int, str] = {}
    for file, image_id in known.items():
        if owner.setdefault(image_id, file) != file:
            raise ConfigError(
                f"the output folder gives image id {image_id} to both {owner[image_id]} and {file}; "
                "use --overwrite or another --out"
            )
    ids: dict[Path, int] = {}

    def claim(path: Path, image_id: int) -> bool:
        if owner.setdefault(image_id, str(path)) != str(path):
            return False
        ids[path] = image_id
        return True

    if ann_ids is not None:
        missing = [p.name for p in paths if p.name not in ann_ids]
        if missing:
            raise ConfigError(f"{len(missing)} input images are not in {ann}: {missing[:5]}")
        for path in paths:
            if not claim(path, ann_ids[path.name]):
                raise ConfigError(
                    f"{path} and {owner[ann_ids[path.name]]} both get image id {ann_ids[path.name]} "
                    f"from {ann} (same file name); give them different names or run them separately"
                )
        return ids
    new = [p for p in paths if not (str(p) in known and claim(p, known[str(p)]))]
    # Numeric names first, so a file without one cannot take an id a name carries.
    unnumbered = []
    for path in new:
        number = image_id_from_name(path, -1)
        if number < 0:
            unnumbered.append(path)
        elif not claim(path, number):
            unnumbered.append(path)
            logger.warning("%s: image id %d from its name is taken by %s; it gets a new id",
                           path, number, owner[number])
    next_id = max(owner, default=0) + 1
    for path in unnumbered:
        claim(path, next_id)
        next_id += 1
    return ids


def _known_image_ids(out: Path, records: dict[str, dict[str, Any]]) -> dict[str, int]:
    """File -> id of every image this output folder has seen (map, then logs)."""
    known: dict[str, int] = {}
    path = out / IMAGE_IDS
    if path.is_file():
        try:
            known = {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
        except (ValueError, AttributeError, TypeError):
            raise ConfigError(f"{path} is corrupt; use --overwrite to start over") from None
    for file, record in records.items():
        if "image_id" in record:
            known[file] = int(record["image_id"])
    return known


def _run_signature(args: argparse.Namespace) -> dict[str, Any]:
    """What the logged predictions depend on, in effective values: a path as
    the absolute file it names, ``--iters`` as the iterations that will run."""
    from .config import LoopConfig, load_config

    config = Path(args.config)
    if not config.is_file():
        raise ConfigError(f"config file not found: {config}")
    loop = dict(load_config(config).get("loop") or {})
    if args.iters is not None:
        loop["num_iters"] = args.iters
    return {
        "config": os.fspath(config.resolve()),
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest(),
        "iters": LoopConfig.from_dict(loop).num_iters,
        "ann": os.fspath(Path(args.ann).resolve()) if args.ann else None,
        # Only when given, so that folders written before --boxes existed still resume.
        **({"boxes_sha256": hashlib.sha256(Path(args.boxes).read_bytes()).hexdigest()}
           if args.boxes and Path(args.boxes).is_file() else {}),
    }


def _check_previous_run(out: Path, signature: dict[str, Any]) -> None:
    path = out / "run.json"
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # no (readable) signature: nothing to compare with
    if previous != signature:
        changed = describe_changes(previous, signature)
        raise ConfigError(
            f"{out} holds results of a different run (changed: {changed}); "
            "use --overwrite or another --out"
        )


def overlay_path(vis_dir: Path, path: Path, image_id: int) -> Path:
    """``vis/<stem>.jpg`` when the stem is the image id's number (COCO names),
    else ``vis/<stem>_<id>.jpg``: two inputs of the same name in different
    folders have different ids, so their overlays cannot overwrite each other.
    The stem is made a safe file name first: no input name leaves ``vis_dir``."""
    from .safe_names import safe_name

    stem = safe_name(path.stem)
    if image_id_from_name(path, -1) == image_id:
        return vis_dir / f"{stem}.jpg"
    return vis_dir / f"{stem}_{image_id}.jpg"


def _redraw_overlay(record: dict[str, Any], path: Path, target: Path) -> None:
    """The overlay of a logged image, from its record: no model run. (Prompts
    are not logged, so this overlay has no prompt points.)"""
    from .images import load_image
    from .video.records import record_to_instances
    from .vis import draw_instances, write_image

    write_image(target, draw_instances(load_image(path), record_to_instances(record), show_prompts=False))


#: The log of a one-process run; the ranks of a sharded run write
#: ``predictions.rank{R}.jsonl`` next to it (see :class:`bmp.sharding.ShardLogs`).
RUN_LOG = "predictions.jsonl"


class _LoopOnFiles:
    """``bmp run``'s predictor: the people of one image file, or of a batch of
    decoded images, each with the picture its overlay is drawn on (None without
    ``--vis``). ``boxes``: each file's ``--boxes`` people (boxes, scores)."""

    def __init__(self, bmp: Any, vis: bool, boxes: dict[Path, tuple] | None = None) -> None:
        self.bmp = bmp
        self.vis = vis
        self.boxes = boxes or {}
        self.last: Instances | None = None

    def __call__(self, path: Path) -> tuple[Instances, np.ndarray | None, dict[str, float]]:
        people = self.bmp.predict(path, **self._given([path], single=True))
        self.last = people
        return people, self.bmp.detector_inputs[0] if self.vis else None, self.bmp.times.per_image(1)

    def predict_batch(
        self, paths: list[Path], images: list[np.ndarray]
    ) -> list[tuple[Instances, np.ndarray | None, dict[str, float]]]:
        people = self.bmp.predict_batch(images, names=[str(p) for p in paths], **self._given(paths))
        self.last = people[-1]
        times = self.bmp.times.per_image(len(paths))
        # An image's first detector input is the image itself: no copy of the loop's is needed.
        pictures = images if self.vis else [None] * len(images)
        return [(found, picture, times) for found, picture in zip(people, pictures, strict=True)]

    def _given(self, paths: list[Path], single: bool = False) -> dict[str, Any]:
        """The ``boxes``/``box_scores`` arguments for these files; none at all
        when no file has ``--boxes`` people, so the plain loop is called as before."""
        if not any(p in self.boxes for p in paths):
            return {}
        given = [self.boxes.get(p, (None, None)) for p in paths]
        if single:
            return {"boxes": given[0][0], "box_scores": given[0][1]}
        return {"boxes": [b for b, _ in given], "box_scores": [s for _, s in given]}

    def progress(self) -> str:
        from .batch_prediction import people_per_iteration

        found = people_per_iteration(self.last) if self.last is not None else "0"
        return f"{found} people | {self.bmp.times.summary()}"


def run(args: argparse.Namespace) -> int:
    from .distributed import process_group
    from .output_lock import OutputLocks
    from .termination import stop_after_batch

    with process_group(args.device) as (dist, device), OutputLocks() as locks, \
            stop_after_batch() as stop:
        return _run(args, dist, device, locks, stop)


def _run(args: argparse.Namespace, dist: Distributed, device: str | None, locks: OutputLocks,
         stop: StopRequest) -> int:
    from .image_loader import resolve_batching
    from .sharding import ShardLogs, decided_by_main, merged_records, succeeded

    batch_size, workers = resolve_batching(args.batch_size, args.workers, device)
    apply_limits(args)
    paths = expand_inputs(args.inputs)
    out = output_folder(args.out)
    logs = ShardLogs(out, single=RUN_LOG)
    locks.shared(out, dist, logs.path(dist))  # before anything in the folder is read or changed
    signature = _run_signature(args)
    given = _read_boxes(args.boxes) if args.boxes else None
    if not args.overwrite and logs.exist():
        _check_previous_run(out, signature)  # on every rank: all refuse alike
    vis_dir = output_folder(out / "vis", "--vis folder") if args.vis else None
    dist.barrier()
    ids = decided_by_main(dist, lambda: _prepare_out(args, logs, paths, signature))
    boxes = _boxes_per_file(given, ids, args.boxes) if given is not None else None

    records = logs.read()
    done = succeeded(records)
    todo = [p for p in paths if str(p) not in done]
    if dist.is_main and len(todo) < len(paths):
        logger.info("resuming: %d of %d images already done", len(paths) - len(todo), len(paths))
    if vis_dir is not None:
        _redraw_missing_overlays(dist.shard([p for p in paths if str(p) in done]), records, ids, vis_dir)

    bmp = None
    if todo:
        from .loop import BMP

        # On every rank while any rank has work, even one whose shard is empty: libraries
        # may synchronise the ranks while loading (Ultralytics' settings take a barrier on
        # import), and a rank that skipped it would pair its later barriers wrongly and hang.
        bmp = BMP.from_config(args.config, device=device, weights_dirs=args.weights_dir,
                              num_iters=args.iters)
    finished = _predict_shard(bmp, dist.shard(todo), ids, logs.path(dist), dist, vis_dir,
                              batch_size, workers, stop, boxes)
    stopped = stop.of_any_rank(dist)
    records = merged_records(logs, dist, finished)
    # Rank 0 writes the results, also of a stopped run: what is logged is complete.
    code = 0 if records is None else _write_results(out, paths, records, vis_dir)
    if records is not None and args.report and code == 0:
        _write_report(out, paths, records, args.config, signature["iters"])
    stop.raise_if_stopped(stopped)
    return code


def _prepare_out(
    args: argparse.Namespace, logs: ShardLogs, paths: list[Path], signature: dict[str, Any]
) -> dict[Path, int]:
    """Rank 0's part before any prediction: clear the folder on ``--overwrite``,
    record the run's signature, and decide every input's image id."""
    ids_path = logs.out / IMAGE_IDS
    if args.overwrite:
        logs.remove()
        ids_path.unlink(missing_ok=True)
    ann_ids = _read_ann_ids(args.ann) if args.ann else None
    known = _known_image_ids(logs.out, logs.read())
    ids = assign_image_ids(paths, known, ann_ids, args.ann)
    write_json_atomic(logs.out / "run.json", signature)
    all_ids = {**known, **{str(p): i for p, i in ids.items()}}
    if all_ids != known or not ids_path.exists():
        write_json_atomic(ids_path, all_ids)
    return ids


def _redraw_missing_overlays(
    logged: list[Path], records: dict[str, dict[str, Any]], ids: dict[Path, int], vis_dir: Path
) -> None:
    missing = [p for p in logged if not overlay_path(vis_dir, p, ids[p]).is_file()]
    if missing:
        logger.info("drawing %d missing overlays from the log", len(missing))
    for path in missing:
        try:
            _redraw_overlay(records[str(path)], path, overlay_path(vis_dir, path, ids[path]))
        except ImageError as exc:
            raise OutputError(f"cannot draw the overlay of {path}: {exc}") from None


def _predict_shard(
    bmp: Any, paths: list[Path], ids: dict[Path, int], log_path: Path, dist: Distributed,
    vis_dir: Path | None, batch_size: int, workers: int, stop: StopRequest | None = None,
    boxes: dict[Path, tuple] | None = None,
) -> list[str]:
    """Predict this rank's images into its log; returns the files that succeeded.
    ``boxes``: each file's ``--boxes`` people."""
    if not paths:
        return []
    from .background_writer import BackgroundWriter
    from .batch_prediction import predictions

    log = PredictionLog(log_path)
    finished: list[str] = []
    outputs = predictions(paths, paths, _LoopOnFiles(bmp, vis_dir is not None, boxes), batch_size, workers,
                          "bmp run", dist, stop)
    # Without decoding workers the run stays single-threaded; with them, RLE, JSON and
    # overlays overlap the next batch's model calls.
    with BackgroundWriter(threaded=workers > 0) as writer, closing(outputs):
        for path, output in outputs:
            if isinstance(output, ImageError):
                tqdm.write(f"skipped {path}: {output}")
                writer.submit(log.append, {"file": str(path), "error": str(output)})
                continue
            if isinstance(output, Exception):
                raise output  # not a bad image: a broken setup, as without batching
            people, picture, times = output
            overlay = overlay_path(vis_dir, path, ids[path]) if vis_dir is not None else None
            writer.submit(_write_result, log, path, ids[path], people, picture, overlay, times)
            finished.append(str(path))
    return finished


def _write_result(
    log: PredictionLog, path: Path, image_id: int, people: Instances, picture: np.ndarray | None,
    overlay: Path | None, times: dict[str, float] | None = None,
) -> None:
    from .vis import draw_instances, write_image

    h, w = people.image_size
    log.append({
        "file": str(path), "image_id": image_id, "height": h, "width": w,
        "results": instances_to_coco(people, image_id),
        **({"times": times} if times else {}),  # seconds per loop stage, for --report
    })
    if overlay is not None:  # an interruption here is repaired by the next run
        write_image(overlay, draw_instances(picture, people))


def _write_report(out: Path, paths: list[Path], records: dict[str, dict[str, Any]], config: str,
                  iters: int) -> None:
    """``report.html`` of every logged image: this run's inputs in input order, then
    those earlier runs into this folder logged."""
    from .html_report import write_run_report

    given = {str(p) for p in paths}
    ordered = [records[str(p)] for p in paths if str(p) in records]
    ordered += [r for f, r in records.items() if f not in given]
    print(f"report: {write_run_report(out, ordered, iters, config)}")


def _write_results(out: Path, paths: list[Path], records: dict[str, dict[str, Any]],
                   vis_dir: Path | None) -> int:
    """``results.json`` and ``images.json`` of every logged image, and the summary.

    Images are listed in input order, after those that earlier runs into this
    folder logged from other inputs: the order of a one-process run, whatever the
    number of processes that wrote the logs.
    """
    from .sharding import log_view

    inputs = [str(p) for p in paths]
    given = set(inputs)
    ordered = {f: r for f, r in records.items() if f not in given}
    ordered.update((f, records[f]) for f in inputs if f in records)
    merged = log_view(ordered)
    images = merged.images()
    results = merged.results()
    write_json_atomic(out / "results.json", results)
    write_json_atomic(out / "images.json", images)
    errors = list(merged.errors())
    per_iter = Counter(r["iteration"] for r in results)
    print(
        f"{len(images)} images, {len(results)} people "
        f"({', '.join(f'iteration {k}: {v}' for k, v in sorted(per_iter.items())) or 'none'}), "
        f"{len(errors)} skipped"
    )
    print(f"results: {out / 'results.json'}" + (f"  overlays: {vis_dir}" if vis_dir else ""))
    for file, error in errors:
        print(f"  skipped {file}: {error}", file=sys.stderr)
    return 0 if images else 1


if __name__ == "__main__":
    sys.exit(main())
