"""The ``bmp`` command line: ``bmp run`` and ``bmp weights``."""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import sys
from collections import Counter
from pathlib import Path

import cv2
from tqdm import tqdm

from .coco import PredictionLog, image_id_from_name, instances_to_coco, write_json_atomic
from .config import ConfigError
from .images import ImageError, expand_inputs
from .weights import CHECKPOINTS, WeightsError, cache_dir

logger = logging.getLogger("bmp")

#: Subcommands that live in their own modules: name -> (module, help). Each module
#: defines ``add_arguments(parser)`` and ``run(args) -> int`` (exit code) and
#: imports heavy libraries only inside ``run``.
COMMAND_MODULES: dict[str, tuple[str, str]] = {
    "train-pose2seg": ("bmp.finetune.cli", "fine-tune SAM 2.1 on pose prompts (SAM-pose2seg)"),
    "eval": ("bmp.evaluation.cli", "COCOeval of every loop iteration and stage on a COCO-format dataset"),
    "video": ("bmp.video.cli", "run the loop over a video: annotated MP4, per-frame JSONL, track ids"),
    "bench": ("bmp.bench", "per-stage timing, throughput, memory and scaling with the number of people"),
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
    run.add_argument(
        "--ann", default=None,
        help="COCO annotation file whose image ids the results should use",
    )
    run.add_argument(
        "--overwrite", action="store_true",
        help="start over instead of resuming from OUT/predictions.jsonl",
    )

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
        if args.command == "run":
            return run(args)
        if args.command == "weights":
            return list_weights(args)
        return importlib.import_module(args.module).run(args)
    except (ConfigError, WeightsError, ImageError, FileNotFoundError) as exc:
        print(f"bmp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bmp: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


def list_weights(args: argparse.Namespace) -> int:
    print(f"cache: {cache_dir()}  (set $BMP_HOME to move it)")
    for c in CHECKPOINTS.values():
        here = "cached" if (cache_dir() / c.filename).is_file() else "-"
        line = f"{c.name:24s} {here:7s} {c.filename}"
        print(line + (f"\n    {c.url}" if args.urls else ""))
    return 0


def _image_ids(paths: list[Path], ann: str | None) -> dict[Path, int]:
    if ann:
        path = Path(ann)
        if not path.is_file():
            raise FileNotFoundError(f"annotation file not found: {path}")
        images = json.loads(path.read_text()).get("images", [])
        by_name = {Path(i["file_name"]).name: int(i["id"]) for i in images}
        missing = [p.name for p in paths if p.name not in by_name]
        if missing:
            raise ConfigError(f"{len(missing)} input images are not in {ann}: {missing[:5]}")
        return {p: by_name[p.name] for p in paths}
    ids = {p: image_id_from_name(p, i + 1) for i, p in enumerate(paths)}
    if len(set(ids.values())) != len(ids):
        ids = {p: i + 1 for i, p in enumerate(paths)}
    return ids


def _run_signature(args: argparse.Namespace) -> dict:
    text = Path(args.config).read_bytes() if Path(args.config).is_file() else b""
    return {
        "config": str(args.config),
        "config_sha256": hashlib.sha256(text).hexdigest(),
        "iters": args.iters,
        "ann": args.ann,
    }


def run(args: argparse.Namespace) -> int:
    from .loop import BMP
    from .vis import draw_instances

    paths = expand_inputs(args.inputs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path, sig_path = out / "predictions.jsonl", out / "run.json"
    signature = _run_signature(args)
    if args.overwrite:
        log_path.unlink(missing_ok=True)
    elif log_path.exists() and sig_path.exists():
        previous = json.loads(sig_path.read_text())
        if previous != signature:
            raise ConfigError(
                f"{out} holds results of a different run ({previous}); "
                "use --overwrite or another --out"
            )
    write_json_atomic(sig_path, signature)
    ids = _image_ids(paths, args.ann)
    log = PredictionLog(log_path)
    todo = [p for p in paths if str(p) not in log]
    if len(todo) < len(paths):
        logger.info("resuming: %d of %d images already done", len(paths) - len(todo), len(paths))

    bmp = BMP.from_config(args.config, device=args.device, weights_dirs=args.weights_dir,
                          num_iters=args.iters)
    if args.vis:
        (out / "vis").mkdir(exist_ok=True)
    bar = tqdm(todo, desc="bmp run", unit="img", dynamic_ncols=True)
    for path in bar:
        try:
            people = bmp.predict(path)
        except ImageError as exc:
            tqdm.write(f"skipped {path}: {exc}")
            log.append({"file": str(path), "error": str(exc)})
            continue
        h, w = people.image_size
        log.append({
            "file": str(path), "image_id": ids[path], "height": h, "width": w,
            "results": instances_to_coco(people, ids[path]),
        })
        if args.vis:
            overlay = draw_instances(bmp.detector_inputs[0], people)
            cv2.imwrite(str(out / "vis" / f"{path.stem}.jpg"), overlay)
        per_iter = Counter(int(i) for i in people.iteration)
        found = "+".join(str(per_iter[k]) for k in sorted(per_iter)) or "0"
        bar.set_postfix_str(f"{found} people | {bmp.times.summary()}")
    bar.close()

    results = log.results()
    write_json_atomic(out / "results.json", results)
    write_json_atomic(out / "images.json", log.images())
    errors = list(log.errors())
    per_iter = Counter(r["iteration"] for r in results)
    print(
        f"{len(log.images())} images, {len(results)} people "
        f"({', '.join(f'iteration {k}: {v}' for k, v in sorted(per_iter.items())) or 'none'}), "
        f"{len(errors)} skipped"
    )
    print(f"results: {out / 'results.json'}" + (f"  overlays: {out / 'vis'}" if args.vis else ""))
    for file, error in errors:
        print(f"  skipped {file}: {error}", file=sys.stderr)
    return 0 if log.images() else 1


if __name__ == "__main__":
    sys.exit(main())
