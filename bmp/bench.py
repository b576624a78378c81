"""``bmp bench``: per-stage timing of the loop, throughput, peak memory, and how
time grows with the number of people.

Two parts:

- **images**: the loop as configured on real images (``--images``).
- **scaling**: scenes with exactly N people, made by pasting real person
  crops (ground-truth boxes and masks of ``--ann``) onto a real image, so the
  person count does not depend on the detector (random weights detect
  nobody). The configured detector still runs on each scene and is timed; the
  people it is credited with are the pasted ones, as BMP meets them in a
  crowd: the first pass proposes 80 % of them (the rest are "hidden"), every
  later pass proposes all N -- the hidden ones are new, the others are
  duplicates that pose-NMS must remove (so iteration 2 estimates N poses and
  segments the 20 % it found).

``--random-init`` times the real architectures with random weights. Their
keypoints are never confident, so the keypoint-confidence thresholds that
decide SAM's prompts and which keypoints count in OKS are set to 0: SAM then
decodes every person and pose-NMS still merges the duplicates, the work
trained weights would cause.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_COUNTS = (1, 5, 10, 20, 40)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .weights import add_trust_argument

    parser.add_argument("--config", required=True, help="bmp config file")
    parser.add_argument("--images", default=None, help="folder of images (default: ../shared/data/coco)")
    parser.add_argument("--ann", default=None,
                        help="COCO annotations for person crops (default: IMAGES/annotations.json)")
    parser.add_argument("--iters", type=int, default=None, help="loop iterations (default: config)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: auto)")
    parser.add_argument("--weights-dir", action="append", default=[], metavar="DIR")
    add_trust_argument(parser)
    parser.add_argument("--naive", action="store_true", help="time the reference schedule only")
    parser.add_argument("--compare", action="store_true", help="time batched and naive in the same run")
    parser.add_argument("--random-init", action="store_true",
                        help="ignore checkpoints: real architectures with random weights (timing only)")
    parser.add_argument("--people", default=",".join(map(str, DEFAULT_COUNTS)),
                        help="person counts of the scaling part, comma-separated ('' skips it)")
    parser.add_argument("--max-images", type=int, default=None,
                        help="time at most this many of the images (0: scaling part only)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per input")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None)
    parser.add_argument("--compile", choices=("off", "inductor", "eager"), default=None,
                        help="torch.compile the models (loop.compile); warm-up runs absorb compiling")
    parser.add_argument("--json", default=None, help="also write the results here")


@dataclass
class Timing:
    """Mean seconds per stage over the timed runs, and the runs' wall time."""

    stages: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    runs: int = 0
    people: float = 0.0

    def add(self, stages: dict[str, float], wall: float, people: int) -> None:
        for k, v in stages.items():
            self.stages[k] = self.stages.get(k, 0.0) + v
        self.wall += wall
        self.people += people
        self.runs += 1

    def as_dict(self) -> dict[str, Any]:
        n = max(self.runs, 1)
        return {
            "ms": {k: round(v / n * 1000, 2) for k, v in self.stages.items()},
            "total_ms": round(self.wall / n * 1000, 2),
            "images_per_s": round(self.runs / self.wall, 3) if self.wall else None,
            "people": round(self.people / n, 2),
            "runs_timed": self.runs,
        }


def run(args: argparse.Namespace) -> int:
    from .config import load_config
    from .images import expand_inputs

    images_dir = Path(args.images) if args.images else Path("../shared/data/coco")
    images = expand_inputs([images_dir])
    ann = Path(args.ann) if args.ann else images_dir / "annotations.json"
    counts = [int(c) for c in args.people.split(",") if c.strip()]
    cfg = load_config(args.config)
    if args.random_init:
        for section in ("detector", "pose", "segmenter"):
            if "checkpoint" in cfg[section]:
                cfg[section]["checkpoint"] = None
        if isinstance(cfg.segmenter.get("prompts"), dict):
            cfg.segmenter.prompts.update(score_thr=0.0, visibility_thr=0.0)
        cfg.setdefault("loop", {})["oks_kpt_thr"] = 0.0
    if args.precision:
        cfg.setdefault("loop", {})["precision"] = args.precision
    if args.compile:
        cfg.setdefault("loop", {})["compile"] = args.compile
    modes = ["batched", "naive"] if args.compare else ["naive" if args.naive else "batched"]
    report: dict[str, Any] = {"config": str(args.config), "random_init": args.random_init, "modes": {}}
    bmp = _build(cfg, args)
    report["device"] = str(bmp.device)
    scenes = make_scenes(images, ann, counts) if counts else []
    for mode in modes:
        bmp.loop = replace(bmp.loop, naive=mode == "naive")
        report["modes"][mode] = bench_mode(bmp, images, scenes, args)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["peak_cuda_mb"] = _peak_cuda_mb()
    if args.compare:
        report["speedup"] = {}
        for key in ["images", *(str(c) for c in counts)]:
            rows = [report["modes"][m] for m in ("batched", "naive")]
            rows = [r["images"] if key == "images" else r["scaling"].get(key) for r in rows]
            if all(r and r["total_ms"] for r in rows):
                report["speedup"][key] = round(rows[1]["total_ms"] / rows[0]["total_ms"], 2)
    print(format_report(report))
    print(json.dumps(report, indent=1))
    if args.json:
        from .coco import write_json_atomic

        write_json_atomic(args.json, report)
    return 0


def _build(cfg, args):
    from .loop import BMP

    return BMP.from_config(cfg, device=args.device, weights_dirs=args.weights_dir, num_iters=args.iters)


def _peak_cuda_mb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def bench_mode(bmp, images: list[Path], scenes: list[Scene], args: argparse.Namespace) -> dict[str, Any]:
    """Timings of one mode on the real images, then on each scene."""
    from tqdm import tqdm

    from .images import load_image

    arrays = [load_image(p) for p in images[: args.max_images]]
    timing = Timing()
    mode = "naive" if bmp.loop.naive else "batched"
    for i in range(args.warmup if arrays else 0):
        bmp.predict(arrays[i % len(arrays)])
    for array in tqdm(arrays * args.repeat, desc=f"bench {mode} images", file=sys.stderr):
        start = time.perf_counter()
        people = bmp.predict(array)
        timing.add(bmp.times.seconds, time.perf_counter() - start, len(people))
    out: dict[str, Any] = {"images": timing.as_dict(), "scaling": {}}
    detector = bmp.detector
    try:
        for scene in tqdm(scenes, desc=f"bench {mode} scaling", file=sys.stderr):
            known = bmp.detector = KnownPeople(detector, scene)
            scaled = Timing()
            for _ in range(args.warmup):
                known.passes = 0
                bmp.predict(scene.image)
            for _ in range(args.repeat):
                known.passes = 0
                start = time.perf_counter()
                people = bmp.predict(scene.image)
                scaled.add(bmp.times.seconds, time.perf_counter() - start, len(people))
            out["scaling"][str(scene.count)] = scaled.as_dict()
    finally:
        bmp.detector = detector
    return out


@dataclass
class Scene:
    """An image holding ``count`` pasted people with their boxes and masks."""

    count: int
    image: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray


class KnownPeople:
    """Runs (and so times) the configured detector, but proposes the scene's
    pasted people, so the person count is exact whatever the weights: on the
    first pass of an image (``passes`` reset to 0 by the caller) the first
    ``first_pass`` share of them, on later passes all."""

    def __init__(self, detector, scene: Scene, first_pass: float = 0.8) -> None:
        self.detector = detector
        self.scene = scene
        self.first_pass = first_pass
        self.passes = 0
        # Same data path as the real detector: a device image in, device masks out.
        self.takes_device_image = getattr(detector, "takes_device_image", False)
        self._masks: dict[str, Any] = {}

    def detect(self, image):
        import torch

        from .structures import Instances

        self.detector.detect(image)
        n = self.scene.count
        if self.passes == 0:
            n = max(1, int(np.ceil(self.first_pass * n)))
        self.passes += 1
        where = str(image.device) if isinstance(image, torch.Tensor) else "host"
        if where not in self._masks:
            masks = self.scene.masks
            self._masks[where] = masks if where == "host" else torch.from_numpy(masks).to(image.device)
        return Instances(tuple(image.shape[:2]), boxes=self.scene.boxes[:n].copy(),
                         det_scores=np.full(n, 0.9, np.float32), masks=self._masks[where][:n])


def make_scenes(
    images: list[Path], ann: Path, counts: list[int], size: tuple[int, int] = (960, 1280)
) -> list[Scene]:
    """Scenes of ``counts`` people: real person crops (with their GT masks)
    pasted on a grid over the first image, resized to ``size`` (h, w)."""
    import cv2
    from pycocotools.coco import COCO

    from .evaluation.cocoeval import load_gt
    from .images import load_image

    coco: COCO = load_gt(ann)
    by_name = {p.name: p for p in images}
    crops = []
    for info in coco.dataset["images"]:
        path = by_name.get(Path(info["file_name"]).name)
        if path is None:
            continue
        image = load_image(path)
        for a in coco.imgToAnns[info["id"]]:
            x, y, w, h = (int(round(v)) for v in a["bbox"])
            if w * h < 48 * 48 or a.get("iscrowd", 0):
                continue
            mask = coco.annToMask(a).astype(bool)
            crops.append((image[y : y + h, x : x + w], mask[y : y + h, x : x + w]))
    if not crops:
        raise ValueError(f"no person crops of at least 48x48 px in {ann}")
    background = cv2.resize(load_image(images[0]), (size[1], size[0]))
    scenes = []
    for count in counts:
        cols = int(np.ceil(np.sqrt(count * size[1] / size[0])))
        rows = int(np.ceil(count / cols))
        cell_h, cell_w = size[0] // rows, size[1] // cols
        canvas = background.copy()
        boxes, masks = [], []
        for i in range(count):
            crop, mask = crops[i % len(crops)]
            scale = min(cell_w / crop.shape[1], cell_h / crop.shape[0]) * 0.9
            w, h = max(int(crop.shape[1] * scale), 1), max(int(crop.shape[0] * scale), 1)
            crop = cv2.resize(crop, (w, h))
            mask = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
            x0, y0 = (i % cols) * cell_w + (cell_w - w) // 2, (i // cols) * cell_h + (cell_h - h) // 2
            region = canvas[y0 : y0 + h, x0 : x0 + w]
            region[mask] = crop[mask]
            full = np.zeros(size, bool)
            full[y0 : y0 + h, x0 : x0 + w] = mask
            boxes.append([x0, y0, x0 + w, y0 + h])
            masks.append(full)
        scenes.append(Scene(count, canvas, np.array(boxes, np.float32), np.stack(masks)))
    return scenes


def format_report(report: dict[str, Any]) -> str:
    """Markdown tables: per-stage ms per mode, then scaling with people."""
    lines = [f"bmp bench — {report['config']} on {report['device']}"
             + (" (random weights)" if report["random_init"] else "")]
    stages = None
    for mode, data in report["modes"].items():
        rows = [("images", data["images"])] if data["images"]["runs_timed"] else []
        rows += [(f"{k} people", v) for k, v in data["scaling"].items()]
        stages = stages or list(rows[0][1]["ms"]) if rows else []
        lines.append("")
        lines.append(f"mode: {mode}")
        lines.append("| input | people | " + " | ".join(stages) + " | total ms | img/s |")
        lines.append("|---" * (len(stages) + 4) + "|")
        for name, row in rows:
            cells = [f"{row['ms'].get(s, 0):.1f}" for s in stages]
            ips = row["images_per_s"]
            lines.append(f"| {name} | {row['people']:g} | " + " | ".join(cells)
                         + f" | {row['total_ms']:.1f} | {ips if ips is not None else '-'} |")
    lines.append("")
    lines.append(f"peak RSS {report['peak_rss_mb']} MB, peak CUDA {report['peak_cuda_mb']} MB")
    for key, factor in report.get("speedup", {}).items():
        what = "real images" if key == "images" else f"{key} people"
        lines.append(f"batched is {factor}x faster than naive ({what})")
    return "\n".join(lines)
