"""One image through the loop for the demo page, exactly as ``bmp run`` runs it.

Models are built once per (config, device) by :meth:`BMP.from_config` (the
call ``bmp run`` makes) and kept: a page request then costs only inference.
The page's thresholds go into a fresh :class:`~bmp.loop.BMP` that shares the
cached models, so one visitor's sliders never change another's loop; with the
config's own values the result is ``bmp run``'s, person for person.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..coco import image_id_from_name, instances_to_coco, write_json_atomic
from ..config import LoopConfig
from ..images import ImageLimits, load_image
from ..loop import BMP, default_device
from ..safe_names import safe_name
from ..structures import Instances
from ..weights import WeightsError
from .catalog import ConfigChoice, missing_checkpoints, missing_message

#: Columns of :meth:`DemoResult.people_rows`.
PEOPLE_COLUMNS = ("person", "iteration", "score", "detector score", "x", "y", "w", "h",
                  "keypoints", "mask px")


@dataclass(frozen=True)
class LoopSettings:
    """The page's controls: iterations and the loop's main thresholds (see :class:`LoopConfig`)."""

    num_iters: int
    det_score_thr: float
    det_nms_iou: float
    oks_nms_thr: float
    oks_kpt_thr: float

    @classmethod
    def from_loop(cls, loop: LoopConfig) -> LoopSettings:
        return cls(**{f.name: getattr(loop, f.name) for f in dataclasses.fields(cls)})

    def applied_to(self, loop: LoopConfig) -> LoopConfig:
        """``loop`` with these values, checked as a config file's would be.

        Raises:
            ConfigError: a value out of range, in one line.
        """
        # Sliders send floats (2.0 iterations) and binary fractions (0.30000000000000004).
        values = {**dataclasses.asdict(loop), "num_iters": int(round(self.num_iters))}
        for name in ("det_score_thr", "det_nms_iou", "oks_nms_thr", "oks_kpt_thr"):
            values[name] = round(float(getattr(self, name)), 4)
        return LoopConfig.from_dict(values)


@dataclass
class DemoResult:
    """The loop's output on one image, and what the page shows of it.

    - ``image``: (H, W, 3) uint8 RGB, as the loop read it;
    - ``people``: everyone found, ordered by iteration (``bmp run``'s output);
    - ``iterations_run``: iterations the loop ran (it stops after one that finds nobody);
    - ``seconds``: per-stage time of this call (:class:`~bmp.loop.StageTimes`).
    """

    image: np.ndarray
    people: Instances
    iterations_run: int
    seconds: dict[str, float]
    image_id: int
    name: str
    device: str
    kpt_thr: float

    def overlays(self) -> list[np.ndarray]:
        """(H, W, 3) RGB overlays, one per iteration k, of the people found up to k."""
        from ..vis import draw_instances

        return [np.ascontiguousarray(draw_instances(self.image, self.people.up_to_iteration(k))[..., ::-1])
                for k in range(1, self.iterations_run + 1)]

    def per_iteration(self) -> dict[int, int]:
        """People found by each iteration that ran (0 for one that found nobody)."""
        counts = Counter(int(k) for k in self.people.iteration)
        return {k: counts.get(k, 0) for k in range(1, self.iterations_run + 1)}

    def found_up_to(self) -> list[int]:
        """People found up to each iteration that ran (what overlay k shows)."""
        return [len(self.people.up_to_iteration(k)) for k in range(1, self.iterations_run + 1)]

    def summary(self) -> str:
        """``5 people (iteration 1: 4, iteration 2: 1)``."""
        n = len(self.people)
        split = ", ".join(f"iteration {k}: {v}" for k, v in self.per_iteration().items())
        return f"{n} {'person' if n == 1 else 'people'} ({split})"

    def people_rows(self) -> list[list[Any]]:
        """One row per person (:data:`PEOPLE_COLUMNS`): box as COCO x, y, w, h,
        keypoints with score >= the keypoint threshold, mask area."""
        xywh = self.people.boxes_xywh()
        confident = (self.people.keypoint_scores >= self.kpt_thr).sum(1)
        areas = self.people.masks.reshape(len(self.people), -1).sum(1)
        return [
            [i + 1, int(self.people.iteration[i]), round(float(self.people.scores[i]), 3),
             round(float(self.people.det_scores[i]), 3), *(round(float(v), 1) for v in xywh[i]),
             int(confident[i]), int(areas[i])]
            for i in range(len(self.people))
        ]

    def stage_rows(self) -> list[list[Any]]:
        """``[stage, ms]`` per loop stage, then the total."""
        rows: list[list[Any]] = [[k, round(v * 1000, 1)] for k, v in self.seconds.items()]
        return rows + [["total", round(sum(self.seconds.values()) * 1000, 1)]]

    def coco_results(self) -> list[dict[str, Any]]:
        """The people as ``bmp run`` writes them to ``results.json``."""
        return instances_to_coco(self.people, self.image_id)

    def write_json(self, folder: Path) -> Path:
        """``<stem>_results.json`` in ``folder``: :meth:`coco_results`, written atomically."""
        path = Path(folder) / f"{safe_name(Path(self.name).stem)}_results.json"
        write_json_atomic(path, self.coco_results())
        return path


class ModelCache:
    """The loop's models per (config, device), built on first use and kept.

    A lock per entry serialises the calls that share its models: a segmenter
    holds the image it was last given, so two requests must not interleave.
    """

    def __init__(self, weights_dirs: Sequence[str | os.PathLike] = ()) -> None:
        self.weights_dirs = [os.fspath(d) for d in weights_dirs]
        self._models: dict[tuple[str, str], BMP] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def __len__(self) -> int:
        return len(self._models)

    def lock(self, config: Path, device: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(self._key(config, device), threading.Lock())

    def get(self, choice: ConfigChoice, device: str) -> BMP:
        """The models of ``choice`` on ``device``, built once.

        Raises:
            WeightsError: a checkpoint is missing (one line naming it and where
                to put it; the demo never downloads) or cannot be loaded.
        """
        key = self._key(choice.path, device)
        with self.lock(choice.path, device):
            if key not in self._models:
                # Checked now, not only at start-up: files can move while the page is open.
                missing = missing_checkpoints(choice.path, self.weights_dirs)
                if missing:
                    raise WeightsError(missing_message(dataclasses.replace(choice, missing=missing),
                                                       self.weights_dirs))
                self._models[key] = BMP.from_config(choice.path, device=device,
                                                    weights_dirs=self.weights_dirs)
            return self._models[key]

    @staticmethod
    def _key(config: Path, device: str) -> tuple[str, str]:
        return str(Path(config).resolve()), device


def predict_image(
    cache: ModelCache,
    choice: ConfigChoice,
    image_path: str | os.PathLike,
    settings: LoopSettings | None = None,
    device: str | None = None,
    limits: ImageLimits | None = None,
) -> DemoResult:
    """Run the loop of ``choice`` on one image file.

    Args:
        settings: iterations and thresholds (default: the config's).
        device: default CUDA when available, else the CPU (as ``bmp run``).
        limits: file size and pixel count the image may have, checked before
            it is decoded (default: the process's, :func:`bmp.images.image_limits`).
    Raises:
        ImageError: not an image, or over ``limits``. WeightsError: a missing
        checkpoint. ConfigError: a threshold out of range.
    """
    device = device or default_device()
    base = cache.get(choice, device)
    loop = settings.applied_to(base.loop) if settings is not None else base.loop
    image = load_image(Path(image_path), limits=limits)
    bmp = BMP(base.detector, base.pose, base.segmenter, loop=loop, device=base.device)
    with cache.lock(choice.path, device):
        people = bmp.predict(image)
    return DemoResult(
        image=image, people=people, iterations_run=len(bmp.detector_inputs),
        seconds=dict(bmp.times.seconds), image_id=image_id_from_name(image_path, 1),
        name=Path(image_path).name, device=str(base.device), kpt_thr=loop.oks_kpt_thr,
    )


def results_folder(root: Path) -> Path:
    """A new folder under ``root`` for one request's download, so that two
    visitors' files of the same name cannot overwrite each other."""
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="run_", dir=root))
