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
  segments the 20 % it found). A pasted person the configured detector also
  finds carries that detection's keypoints, as a pose detector's do.

``--batch-size 1,4,16`` also times :meth:`BMP.predict_batch` at each batch
size on the same inputs (the real images, cycled, and each scene, repeated,
to a multiple of the largest size that every size gets through), before the
per-image parts: img/s, its ratio to the smallest size, where the curve
flattens (the first size that gains < 10 % img/s over the previous one), and
peak memory.

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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mmengine.config import Config

    from .images import PixelArray
    from .loop import BMP
    from .models import Detector
    from .structures import Instances

DEFAULT_COUNTS = (1, 5, 10, 20, 40)
#: The curve flattens at the first batch size gaining less than this over the previous one.
FLATTEN_GAIN = 0.10
#: Issue 16's targets, as (batch size, minimum img/s ratio to batch 1, rule), per device type.
BATCH_TARGETS = {
    "cpu": (4, 0.95, "batch 4 within 5 % of batch 1"),
    "cuda": (8, 2.0, "batch 8 >= 2x batch 1"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .weights import add_trust_argument

    parser.add_argument("--config", required=True, help="bmp config file")
    parser.add_argument("--images", default=None,
                        help="folder of images (default: $BMP_SHARED/data/coco; BMP_SHARED: ../shared)")
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
    parser.add_argument("--seed", type=int, default=0,
                        help="with --random-init: the random weights' seed, so that runs time the same "
                             "models, whose detector proposes the same people on real images (default 0)")
    parser.add_argument("--people", default=",".join(map(str, DEFAULT_COUNTS)),
                        help="person counts of the scaling part, comma-separated ('' skips it)")
    parser.add_argument("--max-images", type=int, default=None,
                        help="time at most this many of the images (0: scaling part only)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per input")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None)
    parser.add_argument("--compile", choices=("off", "inductor", "eager"), default=None,
                        help="torch.compile the models (loop.compile); warm-up runs absorb compiling")
    parser.add_argument(
        "--batch-size", default=None, metavar="B,B,...",
        help="first time BMP.predict_batch at these batch sizes (e.g. 1,4,16) on the same inputs, in the "
             "batched schedule (--naive: the naive one): per size --warmup untimed calls, then --repeat "
             "passes over the inputs cycled to a multiple of the largest size (the same images for every "
             "size). Prints img/s, its ratio to the smallest size, where the curve flattens (first size "
             "with < 10%% more img/s than the previous), peak memory per size. Memory on CUDA: "
             "torch.cuda.max_memory_allocated, reset before each size. On the CPU: how far the process's "
             "peak RSS rose above its peak before the first size (the peak only grows, so a size's figure "
             "is the most any size up to it needed)")
    parser.add_argument("--json", default=None,
                        help="also write the results here: rewritten after every finished input, with "
                        "\"complete\": false until the run ends, so a stopped run keeps what it measured")


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
    from .sample_data import shared_samples_dir

    counts = parse_ints("--people", args.people, allow_empty=True)
    sizes = parse_batch_sizes(args)
    images_dir = Path(args.images) if args.images else shared_samples_dir()
    images = expand_inputs([images_dir])
    ann = Path(args.ann) if args.ann else images_dir / "annotations.json"
    cfg = _configure(load_config(args.config), args)
    modes = ["batched", "naive"] if args.compare else ["naive" if args.naive else "batched"]
    report: dict[str, Any] = {"config": str(args.config), "random_init": args.random_init,
                              "seed": args.seed if args.random_init else None, "modes": {}, "complete": False}
    bmp = _build(cfg, args)
    report["device"] = str(bmp.device)
    scenes = make_scenes(images, ann, counts) if counts else []

    def save() -> None:
        # After every finished input: a run stopped at a time limit (the GPU
        # acceptance's budgets) still reports what it measured.
        _summarize(report, bmp.device, counts, args.compare)
        if args.json:
            from .coco import write_json_atomic

            write_json_atomic(args.json, report)

    if sizes:
        # First, so the host-memory baseline is the loaded models, not the per-image runs.
        bmp.loop = replace(bmp.loop, naive=modes[0] == "naive")
        report["batch"] = {}
        bench_batches(bmp, images, scenes, sizes, args, report["batch"], save)
    for mode in modes:
        bmp.loop = replace(bmp.loop, naive=mode == "naive")
        report["modes"][mode] = {}
        bench_mode(bmp, images, scenes, args, report["modes"][mode], save)
    report["complete"] = True
    save()
    print(format_report(report))
    print(json.dumps(report, indent=1))
    return 0


def _summarize(report: dict[str, Any], device: Any, counts: list[int], compare: bool) -> None:
    """The peaks so far and, with ``--compare``, batched's speed-up over naive
    for every input both modes have finished."""
    report["peak_rss_mb"] = _peak_rss_mb()
    report["peak_cuda_mb"] = _overall_peak_cuda_mb(device, report.get("batch"))
    if compare:
        report["speedup"] = {}
        for key in ["images", *(str(c) for c in counts)]:
            rows = [report["modes"].get(m) or {} for m in ("batched", "naive")]
            rows = [r.get("images") if key == "images" else r.get("scaling", {}).get(key) for r in rows]
            if all(r and r["total_ms"] for r in rows):
                report["speedup"][key] = round(rows[1]["total_ms"] / rows[0]["total_ms"], 2)


def _configure(cfg: Config, args: argparse.Namespace) -> Config:
    """The config with the bench's overrides (random init, precision, compile)."""
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
    return cfg


def _build(cfg, args):
    from .loop import BMP

    if args.random_init:
        import torch

        # The models are initialised on the host before moving to the device,
        # so one seed gives the same weights on every device.
        torch.manual_seed(args.seed)
    return BMP.from_config(cfg, device=args.device, weights_dirs=args.weights_dir, num_iters=args.iters)


def parse_ints(option: str, text: str, allow_empty: bool = False) -> list[int]:
    """``'1,4,16'`` as [1, 4, 16]; anything but integers >= 1 is the user's error."""
    from .config import ConfigError

    parts = [p.strip() for p in text.split(",") if p.strip()]
    if all(p.isascii() and p.isdigit() and int(p) >= 1 for p in parts) and (parts or allow_empty):
        return [int(p) for p in parts]
    raise ConfigError(f"{option} takes comma-separated integers >= 1 (e.g. 1,4,16), got {text!r}")


def parse_batch_sizes(args: argparse.Namespace) -> list[int]:
    """``--batch-size`` as ascending distinct sizes ([] when not given)."""
    from .config import ConfigError

    if args.batch_size is None:
        return []
    if args.repeat < 1:
        raise ConfigError(f"--batch-size needs --repeat >= 1 timed calls per size, got {args.repeat}")
    return sorted(set(parse_ints("--batch-size", args.batch_size)))


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _on_cuda(device: Any) -> bool:
    return str(device).startswith("cuda")


def _peak_cuda_mb(device: Any = None) -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated(device if _on_cuda(device) else None) / 2**20, 1)


def _overall_peak_cuda_mb(device: Any, batch: dict[str, Any] | None) -> float | None:
    """The run's CUDA peak: the batch curve resets the counter before each
    size, so the sizes measured before the last reset count separately."""
    peaks = [_peak_cuda_mb(device)]
    for curve in (batch or {}).get("inputs", {}).values():
        peaks += [row.get("peak_cuda_mb") for row in curve["rows"]]
    peaks = [p for p in peaks if p is not None]
    return max(peaks) if peaks else None


def bench_mode(bmp, images: list[Path], scenes: list[Scene], args: argparse.Namespace,
               out: dict[str, Any], progress: Callable[[], None]) -> None:
    """Timings of one mode on the real images, then on each scene, filled into
    ``out`` as each finishes (``progress()`` after each)."""
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
    out.update(images=timing.as_dict(), scaling={})
    progress()
    detector = bmp.detector
    try:
        for scene in tqdm(scenes, desc=f"bench {mode} scaling", file=sys.stderr):
            bmp.detector = KnownPeople(detector, scene)
            scaled = Timing()
            for _ in range(args.warmup):
                bmp.predict(scene.image)
            for _ in range(args.repeat):
                start = time.perf_counter()
                people = bmp.predict(scene.image)
                scaled.add(bmp.times.seconds, time.perf_counter() - start, len(people))
            out["scaling"][str(scene.count)] = scaled.as_dict()
            progress()
    finally:
        bmp.detector = detector


class PeakMemory:
    """Peak memory of each batch size. CUDA: ``max_memory_allocated``, reset
    before each size. Host: the peak RSS (``ru_maxrss``) only grows, so a
    size's figure is how far it rose above the peak before the first size."""

    def __init__(self, device: Any) -> None:
        import torch

        self.device = device
        self.cuda = _on_cuda(device) and torch.cuda.is_available()
        self.rss_baseline = _peak_rss_mb()

    @property
    def key(self) -> str:
        """The row field that holds this device's figure."""
        return "peak_cuda_mb" if self.cuda else "rss_growth_mb"

    @property
    def kind(self) -> str:
        if self.cuda:
            return "peak CUDA MB: torch.cuda.max_memory_allocated per batch size (reset before each)"
        return (f"peak RSS +MB: rise of the process's peak RSS over {self.rss_baseline:g} MB, its peak "
                "before the first batch size (the peak only grows: each figure covers the smaller sizes too)")

    def start(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)

    def read(self) -> dict[str, float | None]:
        return {"rss_growth_mb": round(_peak_rss_mb() - self.rss_baseline, 1),
                "peak_cuda_mb": _peak_cuda_mb(self.device) if self.cuda else None}


def bench_batches(bmp: BMP, images: list[Path], scenes: list[Scene], sizes: list[int],
                  args: argparse.Namespace, out: dict[str, Any], progress: Callable[[], None]) -> None:
    """The img/s curve of :meth:`BMP.predict_batch` over ``sizes`` (ascending)
    on the real images and on each scene (see :func:`batch_workload`), filled
    into ``out`` as each input finishes (``progress()`` after each)."""
    from tqdm import tqdm

    from .images import load_image

    memory = PeakMemory(bmp.device)
    inputs = [("images", [load_image(p) for p in images[: args.max_images]], None)]
    inputs += [(f"{scene.count} people", [scene.image], scene) for scene in scenes]
    out.update(mode="naive" if bmp.loop.naive else "batched", sizes=sizes, warmup=args.warmup,
               repeat=args.repeat, memory=memory.kind, memory_key=memory.key, inputs={})
    detector = bmp.detector
    try:
        for name, arrays, scene in inputs:
            if not arrays:
                continue
            bmp.detector = KnownPeople(detector, scene) if scene is not None else detector
            rows = []
            work = batch_workload(arrays, sizes)
            for size in tqdm(sizes, desc=f"bench batch {name}", file=sys.stderr):
                rows.append(time_batch(bmp, work, size, args, memory))
                if "error" in rows[-1]:
                    break  # larger batches would not fit either
            out["inputs"][name] = {**summarize_curve(rows, bmp.device), "images_per_pass": len(work)}
            progress()
    finally:
        bmp.detector = detector


def batch_workload(arrays: list[np.ndarray], sizes: list[int]) -> list[np.ndarray]:
    """The images every batch size gets through: ``arrays`` cycled to the
    smallest multiple of the largest size that holds each of them, so all
    sizes time the same images (a size that does not divide it ends on a
    smaller call)."""
    largest = max(sizes)
    count = -(-len(arrays) // largest) * largest
    return [arrays[i % len(arrays)] for i in range(count)]


def time_batch(bmp: BMP, work: list[np.ndarray], size: int, args: argparse.Namespace,
               memory: PeakMemory) -> dict[str, Any]:
    """One batch size: ``--warmup`` untimed calls of ``size`` images, then
    ``--repeat`` passes over ``work`` in calls of ``size``."""
    import torch

    calls = [work[i : i + size] for i in range(0, len(work), size)]
    memory.start()
    try:
        for _ in range(args.warmup):
            bmp.predict_batch(calls[0])
        found = 0
        start = time.perf_counter()
        for _ in range(args.repeat):
            for batch in calls:
                found += sum(len(people) for people in bmp.predict_batch(batch))
        wall = time.perf_counter() - start
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {"batch_size": size, "error": "out of memory", **memory.read()}
    timed = len(work) * args.repeat
    return {"batch_size": size, "images_timed": timed, "seconds": round(wall, 4),
            "images_per_s": round(timed / wall, 3), "people": round(found / timed, 2), **memory.read()}


def summarize_curve(rows: list[dict[str, Any]], device: Any) -> dict[str, Any]:
    """Adds each size's img/s ratio to the smallest size's, where the curve
    flattens (None: it still gains at the largest size) and the issue's target."""
    timed = [r for r in rows if "error" not in r]
    for row in timed:
        row["ratio"] = round(_rate(row) / _rate(timed[0]), 3)
    flattens = next((cur["batch_size"] for prev, cur in zip(timed, timed[1:], strict=False)
                     if _rate(cur) < _rate(prev) * (1 + FLATTEN_GAIN)), None)
    return {"rows": rows, "base_batch_size": timed[0]["batch_size"] if timed else None,
            "flattens_at": flattens, "target": batch_target(timed, device)}


def _rate(row: dict[str, Any]) -> float:
    """Unrounded img/s of a timed batch row."""
    return row["images_timed"] / row["seconds"]


def batch_target(timed: list[dict[str, Any]], device: Any) -> dict[str, Any] | None:
    """Issue 16's target for this device type, if the curve holds its two sizes."""
    size, minimum, rule = BATCH_TARGETS["cuda" if _on_cuda(device) else "cpu"]
    ratios = {r["batch_size"]: r["ratio"] for r in timed}
    if 1 not in ratios or size not in ratios:
        return None
    return {"rule": rule, "ratio": ratios[size], "met": ratios[size] >= minimum}


@dataclass
class Scene:
    """An image holding ``count`` pasted people with their boxes and masks."""

    count: int
    image: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray


class KnownPeople:
    """Runs (and so times) the configured detector, but proposes the scene's
    pasted people, so the person count is exact whatever the weights: the
    first ``first_pass`` share of them while the detector input is still the
    untouched scene, all of them once anybody has been blacked out.

    A pass is told by its input, not by counting calls, so it holds however
    :meth:`BMP.predict_batch` orders the images' passes. (A loop whose first
    masks are all empty sees the untouched scene again and gets the first
    share again, as a real detector would.)"""

    def __init__(self, detector: Detector, scene: Scene, first_pass: float = 0.8) -> None:
        self.detector = detector
        self.scene = scene
        self.first_pass = first_pass
        # Same data path as the real detector: a device image in, device masks out.
        self.takes_device_image = getattr(detector, "takes_device_image", False)
        self._on_device: dict[str, dict[str, Any]] = {}

    def detect(self, image: PixelArray) -> Instances:
        return self._proposals(image, self.detector.detect(image))

    def detect_batch(self, images: list[PixelArray]) -> list[Instances]:
        """:meth:`detect` of every image, the real detector batched as
        :meth:`BMP.predict_batch` would run it."""
        if hasattr(self.detector, "detect_batch"):
            found = self.detector.detect_batch(images)
        else:
            found = [self.detector.detect(image) for image in images]
        return [self._proposals(image, f) for image, f in zip(images, found, strict=True)]

    def _proposals(self, image: PixelArray, found: Instances) -> Instances:
        """The pasted people of this pass. A pasted person the real detector
        also found (box IoU >= 0.5) gets the keypoints it gave, as a pose
        detector's detections carry them (``UltralyticsTopDown(first_pass=
        'detector')`` keeps those instead of posing the person again)."""
        from .masks import box_iou
        from .structures import Instances

        n = self.scene.count
        if self._untouched(image):
            n = max(1, int(np.ceil(self.first_pass * n)))
        boxes = self.scene.boxes[:n].copy()
        people = Instances(tuple(image.shape[:2]), boxes=boxes, det_scores=np.full(n, 0.9, np.float32),
                           masks=self._scene_on(image)["masks"][:n])
        if not len(found) or not found.keypoint_scores.any():
            return people
        iou = box_iou(boxes, found.boxes)
        best = iou.argmax(1)
        matched = iou.max(1) >= 0.5
        kpts, scores = people.keypoints.copy(), people.keypoint_scores.copy()
        kpts[matched] = found.keypoints[best[matched]]
        scores[matched] = found.keypoint_scores[best[matched]]
        return people.replace(keypoints=kpts, keypoint_scores=scores, visibility=scores.copy(),
                              presence=scores.copy())

    def _untouched(self, image: PixelArray) -> bool:
        """Whether ``image`` is the scene with nobody blacked out."""
        import torch

        scene = self._scene_on(image)["image"]
        if isinstance(image, torch.Tensor):
            return torch.equal(image, scene)
        return np.array_equal(image, scene)

    def _scene_on(self, image: PixelArray) -> dict[str, Any]:
        """The scene's image and masks where ``image`` lives (uploaded once)."""
        import torch

        where = str(image.device) if isinstance(image, torch.Tensor) else "host"
        if where not in self._on_device:
            pair = {"image": self.scene.image, "masks": self.scene.masks}
            if where != "host":
                pair = {k: torch.from_numpy(v).to(image.device) for k, v in pair.items()}
            self._on_device[where] = pair
        return self._on_device[where]


def make_scenes(
    images: list[Path], ann: Path, counts: list[int], size: tuple[int, int] = (960, 1280)
) -> list[Scene]:
    """Scenes of ``counts`` people: real person crops (with their GT masks)
    pasted on a grid over the first image, resized to ``size`` (h, w)."""
    import cv2
    from pycocotools.coco import COCO

    from .evaluation.cocoeval import load_gt
    from .images import load_image
    from .masks import resize_mask

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
            mask = resize_mask(mask, (h, w))
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
    if "batch" in report:
        lines += ["", *format_batches(report["batch"])]
    return "\n".join(lines)


def format_batches(batch: dict[str, Any]) -> list[str]:
    """The batch curve: one table row per input and batch size, then per input
    where it flattens and the issue's target."""
    memory_column = batch["memory"].split(":")[0]
    passes = ", ".join(f"{name}: {curve['images_per_pass']}" for name, curve in batch["inputs"].items())
    lines = [f"batch curve: BMP.predict_batch, {batch['mode']} schedule; per batch size "
             f"{batch['warmup']} warm-up call(s), then {batch['repeat']} timed pass(es) over the same "
             f"images per input ({passes})",
             f"memory: {batch['memory']}",
             f"| input | batch | people | img/s | x batch {batch['sizes'][0]} | {memory_column} |",
             "|---|---|---|---|---|---|"]
    for name, curve in batch["inputs"].items():
        for row in curve["rows"]:
            memory = row[batch["memory_key"]]
            rate = row.get("images_per_s", row.get("error"))
            ratio = f"{row['ratio']:.2f}x" if "ratio" in row else "-"
            people = f"{row['people']:g}" if "people" in row else "-"
            lines.append(f"| {name} | {row['batch_size']} | {people} | {rate} | {ratio} | {memory} |")
    for name, curve in batch["inputs"].items():
        lines.append(f"{name}: {describe_curve(curve)}")
    return lines


def describe_curve(curve: dict[str, Any]) -> str:
    """Where a batch curve flattens and whether it meets the issue's target."""
    timed = [r["batch_size"] for r in curve["rows"] if "ratio" in r]
    if not timed:
        return "no batch size completed"
    gain = f"the first with < {FLATTEN_GAIN:.0%} more img/s than the size before"
    text = (f"flattens at batch {curve['flattens_at']} ({gain})" if curve["flattens_at"]
            else f"does not flatten up to batch {timed[-1]}")
    target = curve["target"]
    if target:
        text += f"; target {target['rule']}: {'met' if target['met'] else 'NOT met'} ({target['ratio']:.2f}x)"
    return text
