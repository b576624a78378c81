"""The BBox-Mask-Pose loop.

Per image (BMP_NOTES, "The loop")::

    detect_input = original
    repeat num_iters times:
        1. detect people on detect_input
        2. estimate their poses on the original image
        3. merge with earlier iterations by OKS pose-NMS
        4. segment the new people with the pose-prompted segmenter (original image)
        5. make all masks exclusive
        6. black out every found person: detect_input = mask_out(original, masks)

Where the data lives: the original image is uploaded to the loop's device once;
models that declare ``takes_device_image`` read it (and the detector its
masked copy) there, and masks made on the device stay there through NMS,
exclusivity and mask-out. Only per-person records (boxes, keypoints, scores;
a few KB) cross to the host inside an iteration, because NMS and prompt
choice decide data-dependent counts; masks come back once, with the output.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from .box_nms import box_nms
from .config import LoopConfig, checkpoint_dirs, load_config
from .images import ImageLike, PixelArray, load_image
from .masks import box_iou, exclusive_masks, fill_missing_masks, mask_out
from .models import DETECTORS, POSE_ESTIMATORS, SEGMENTERS, Detector, PoseEstimator, Segmenter
from .models.base import build_component
from .models.batched import BatchSegmenter, detect_batch, estimate_batch
from .pose_nms import pose_nms
from .structures import Instances, to_numpy, to_tensor

STAGES = ("detect", "pose", "nms", "sam_encode", "sam_decode", "exclusive", "mask_out")


@dataclass
class StageTimes:
    """Seconds spent per loop stage in the last :meth:`BMP.predict` call.

    With ``cuda_sync`` each stage waits for the GPU before it stops the clock,
    so asynchronous kernels are charged to the stage that launched them.
    """

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    cuda_sync: bool = False

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda_sync:
                torch.cuda.synchronize()
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def per_image(self, images: int) -> dict[str, float]:
        """Seconds per stage, per image of the call (a batch's stages ran once for all of them)."""
        return {stage: round(seconds / images, 5) for stage, seconds in self.seconds.items()}

    def summary(self) -> str:
        """``detect 31ms, pose 12ms, ...`` (the per-stage line of the CLI)."""
        return ", ".join(f"{k} {v * 1000:.0f}ms" for k, v in self.seconds.items())


class Frame:
    """The original image of one :meth:`BMP.predict` call, on the host and on
    the loop's device (uploaded on first need, then read by every iteration)."""

    def __init__(self, host: np.ndarray, device: str | torch.device) -> None:
        self.host = host
        self.device = device

    @cached_property
    def on_device(self) -> torch.Tensor:
        return to_tensor(self.host, self.device)

    def for_model(self, model: Any) -> PixelArray:
        """The copy ``model`` reads: the device tensor when it declares
        ``takes_device_image``, else the host array."""
        return self.on_device if getattr(model, "takes_device_image", False) else self.host


@dataclass(eq=False)
class ImageState:
    """One image of a batch on its way through the loop: its frame, file name
    (for detectors that look images up by name), the people found so far, what
    the detector sees next, and whether its loop has stopped. ``given``: its
    iteration-0 people are the caller's boxes, which no later iteration drops."""

    frame: Frame
    name: str | None
    found: Instances = field(init=False)
    detect_input: PixelArray | None = None
    detector_inputs: list[PixelArray] = field(default_factory=list)
    records: list[IterationRecord] = field(default_factory=list)
    done: bool = False
    given: bool = False

    def __post_init__(self) -> None:
        self.found = Instances(self.frame.host.shape[:2])

    @property
    def fixed(self) -> np.ndarray | None:
        """Which people of ``found`` no iteration may drop: the caller's boxes."""
        return self.found.iteration == 0 if self.given else None


@dataclass
class IterationRecord:
    """The loop's state after one iteration.

    - ``detect_input``: the (masked) image the detector saw.
    - ``detections``: step 1's output (boxes, detector scores and masks), before pose.
    - ``people``: everyone found up to and including this iteration, with
      exclusive masks among them.
    """

    iteration: int
    detect_input: np.ndarray
    detections: Instances
    people: Instances


def _one_image(value: Any) -> list[Any] | None:
    """A per-image argument of one image as the batch methods take it."""
    return None if value is None else [value]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


#: (N, 4) xyxy pixel boxes: an array, a tensor or nested lists.
BoxesLike = np.ndarray | torch.Tensor | Sequence[Sequence[float]]


def given_people(
    image_size: tuple[int, int],
    boxes: BoxesLike,
    box_scores: np.ndarray | torch.Tensor | Sequence[float] | None = None,
    masks: np.ndarray | torch.Tensor | None = None,
) -> Instances:
    """The caller's people of one image, as iteration-0 :class:`Instances`,
    their boxes unchanged (not clipped to the image, not filtered).

    Args:
        image_size: (height, width) of the image.
        boxes: (N, 4) xyxy pixels, each with x2 > x1 and y2 > y1.
        box_scores: (N,) their ``det_scores``; default 1 (a given person is certain).
        masks: (N, H, W) masks for mask-conditioned pose models; default none.
    Raises:
        ValueError: any of them malformed, in one line.
    """
    b = to_numpy(boxes) if isinstance(boxes, torch.Tensor) else np.asarray(boxes)
    if b.size == 0:  # [] has no second axis
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4 or not np.issubdtype(b.dtype, np.number):
        raise ValueError(f"boxes must be an (N, 4) array of xyxy pixels, got shape {b.shape} ({b.dtype})")
    b = b.astype(np.float32)
    bad = ~np.isfinite(b).all(1) | (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"box {i} {b[i].tolist()} is not finite xyxy with x2 > x1 and y2 > y1")
    n = len(b)
    if box_scores is None:
        scores = np.ones(n, np.float32)
    else:
        scores = (to_numpy(box_scores) if isinstance(box_scores, torch.Tensor)
                  else np.asarray(box_scores)).astype(np.float32).reshape(-1)
        if scores.shape != (n,) or not np.isfinite(scores).all():
            raise ValueError(f"box_scores must be {n} finite numbers, got shape {scores.shape}")
    if masks is not None:
        if tuple(masks.shape) != (n, *image_size):
            raise ValueError(f"masks must be (N, H, W) = {(n, *image_size)}, got {tuple(masks.shape)}")
        masks = masks.bool() if isinstance(masks, torch.Tensor) else np.asarray(masks).astype(bool)
    return Instances(image_size, boxes=b, det_scores=scores, masks=masks, iteration=np.zeros(n, np.int32))


class BMP:
    """Detection, pose and segmentation of every person in an image by the
    BBox-Mask-Pose loop.

    >>> bmp = BMP.from_config("configs/bmp_lite.py")
    >>> people = bmp.predict("image.jpg")
    >>> people.boxes, people.keypoints, people.masks, people.iteration
    """

    def __init__(
        self,
        detector: Detector,
        pose: PoseEstimator,
        segmenter: Segmenter,
        loop: LoopConfig | None = None,
        device: str = "cpu",
    ) -> None:
        self.detector = detector
        self.pose = pose
        self.segmenter = segmenter
        self.loop = loop or LoopConfig()
        self.device = device
        self.times = StageTimes()
        self._segmenter = BatchSegmenter(segmenter)
        #: The images whose encoding the segmenter holds now, in its order.
        self._encoded: list[ImageState] = []
        self._detector_inputs: list[PixelArray] = []

    @property
    def detector_inputs(self) -> list[np.ndarray]:
        """What the detector saw in each iteration of the last call (for --vis
        and tests), as host arrays."""
        return [to_numpy(x) for x in self._detector_inputs]

    @classmethod
    def from_config(
        cls,
        config: str | os.PathLike | dict | Any,
        device: str | None = None,
        weights_dirs: Sequence[str | os.PathLike] = (),
        num_iters: int | None = None,
    ) -> BMP:
        """Build the loop from an mmengine config file (or dict).

        Args:
            config: path to a config such as ``configs/bmp_lite.py``.
            device: ``'cpu'``, ``'cuda'``, ``'cuda:1'``; default: the config's,
                else CUDA when available.
            weights_dirs: folders searched for checkpoints before the cache.
            num_iters: override ``loop.num_iters``.
        """
        cfg = load_config(config)
        device = device or cfg.get("device") or default_device()
        dirs = checkpoint_dirs(cfg, weights_dirs)
        loop_values = dict(cfg.get("loop") or {})
        if num_iters is not None:
            loop_values["num_iters"] = num_iters
        common = dict(device=device, weights_dirs=dirs)
        from .models.base import checkpoint_spec
        from .weights import resolve_checkpoints

        sections = (("detector", DETECTORS), ("pose", POSE_ESTIMATORS), ("segmenter", SEGMENTERS))
        # Up front, so that one error names every missing checkpoint, not just the first.
        resolve_checkpoints(
            {name: checkpoint_spec(registry, cfg.get(name) or {}, name) for name, registry in sections},
            dirs,
        )
        bmp = cls(
            detector=build_component(DETECTORS, cfg.detector, "detector", **common),
            pose=build_component(POSE_ESTIMATORS, cfg.pose, "pose", **common),
            segmenter=build_component(SEGMENTERS, cfg.segmenter, "segmenter", **common),
            loop=LoopConfig.from_dict(loop_values),
            device=device,
        )
        if bmp.loop.compile != "off":
            bmp.compile(bmp.loop.compile)
        return bmp

    def compile(self, backend: str = "inductor") -> list[str]:
        """``torch.compile`` (in place) the parts each model names in its
        ``compile_models(backend)``; models without one run as they are.
        Returns what was compiled."""
        compiled = []
        for component in (self.detector, self.pose, self.segmenter):
            if hasattr(component, "compile_models"):
                compiled += component.compile_models(backend)
        return compiled

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the model calls (``loop.precision``)."""
        if self.loop.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.loop.precision == "bf16" else torch.float16
        return torch.autocast(torch.device(self.device).type, dtype=dtype)

    def predict(
        self,
        image: ImageLike,
        num_iters: int | None = None,
        color_order: str = "rgb",
        prior: Instances | None = None,
        value_range: tuple[float, float] | None = None,
        boxes: BoxesLike | None = None,
        box_scores: np.ndarray | Sequence[float] | None = None,
    ) -> Instances:
        """Every person in ``image``.

        Args:
            image: a path, or an (H, W[, 1|3|4]) array / tensor.
            num_iters: loop iterations, an int >= 1 (default: the config's).
            color_order: ``'rgb'`` or ``'bgr'`` for 3/4-channel arrays.
            prior: people expected in this image (video: the previous frame's
                tracks, boxes moved to where they should be now); see :meth:`seed`.
                Default None: the plain loop.
            value_range: the (black, white) values of a non-uint8 array, e.g.
                ``(0, 255)`` for a float image in 0..255 (default: 0..1 for
                floats, 0..65535 for uint16); see :func:`bmp.images.load_image`.
            boxes: people you already have, (N, 4) xyxy pixels: they are
                iteration 0, all of them and unchanged (no score threshold, no
                box or pose NMS, no clipping); they are posed as by
                :meth:`estimate_pose`, segmented and blacked out, and iterations
                1.. detect the people they miss. No later iteration drops them:
                a re-detection of one loses to it in pose-NMS. Empty or None: the
                plain loop. Not together with ``prior``.
            box_scores: (N,) their ``det_scores`` (default 1).
        Returns:
            :class:`Instances` with boxes, scores, keypoints, visibility, masks and
            the iteration each person was found in (0: seeded from ``prior`` or
            ``boxes``), ordered by iteration.
        Raises:
            ImageError: an image the loop cannot read faithfully (see
                :func:`~bmp.images.load_image`). ValueError: a bad ``num_iters``
                or ``boxes`` (see :func:`given_people`).
        """
        if prior is not None and boxes is not None:
            raise ValueError("predict takes prior or boxes, not both")
        return self._run(
            [image], num_iters, color_order, False, [prior], value_range, None,
            _one_image(boxes), _one_image(box_scores),
        )[0][0]

    def predict_batch(
        self,
        images: Sequence[ImageLike],
        num_iters: int | None = None,
        color_order: str = "rgb",
        value_range: tuple[float, float] | None = None,
        names: Sequence[str | None] | None = None,
        boxes: Sequence[BoxesLike | None] | None = None,
        box_scores: Sequence[np.ndarray | Sequence[float] | None] | None = None,
    ) -> list[Instances]:
        """:meth:`predict` of every image, the images going through the loop
        together: per iteration one detector call for all of them, every pose
        crop of every image in one pose forward, one SAM decoder call per
        prompt-point count, and one batched SAM image encode per call. An image
        whose loop stops early drops out of the later iterations.

        Args:
            names: the images' file names, for detectors that look an image up
                by name (``GroundTruthDetector``); default: the paths among
                ``images``.
            boxes, box_scores: per image, as for :meth:`predict` (None: that
                image gets the plain loop).
            Others as for :meth:`predict`.
        """
        return self._run(images, num_iters, color_order, False, None, value_range, names, boxes,
                         box_scores)[0]

    def predict_iterations(
        self,
        image: ImageLike,
        num_iters: int | None = None,
        color_order: str = "rgb",
        value_range: tuple[float, float] | None = None,
        boxes: BoxesLike | None = None,
        box_scores: np.ndarray | Sequence[float] | None = None,
    ) -> list[IterationRecord]:
        """The loop's state after every iteration, for measuring what each one
        adds. ``records[-1].people`` equals what :meth:`predict` returns. The loop
        stops early after an iteration that detects nobody, so the list can be
        shorter than ``num_iters``. Arguments as for :meth:`predict`; the people
        of ``boxes`` (iteration 0) are in every record's ``people``."""
        return self._run([image], num_iters, color_order, True, None, value_range, None,
                         _one_image(boxes), _one_image(box_scores))[1][0]

    def predict_iterations_batch(
        self,
        images: Sequence[ImageLike],
        num_iters: int | None = None,
        color_order: str = "rgb",
        value_range: tuple[float, float] | None = None,
        names: Sequence[str | None] | None = None,
        boxes: Sequence[BoxesLike | None] | None = None,
        box_scores: Sequence[np.ndarray | Sequence[float] | None] | None = None,
    ) -> list[list[IterationRecord]]:
        """:meth:`predict_iterations` of every image, batched as :meth:`predict_batch`
        (``boxes``, ``box_scores``: per image, as there)."""
        return self._run(images, num_iters, color_order, True, None, value_range, names, boxes, box_scores)[1]

    def _iterations(self, num_iters: int | None) -> int:
        # 0 would silently mean "the config's" and a negative count "nobody".
        if num_iters is not None and (
            isinstance(num_iters, bool) or not isinstance(num_iters, int | np.integer) or num_iters < 1
        ):
            raise ValueError(f"num_iters must be an int >= 1 (or None: the config's), got {num_iters!r}")
        return self.loop.num_iters if num_iters is None else int(num_iters)

    def _run(
        self, images: Sequence[ImageLike], num_iters: int | None, color_order: str, record: bool,
        priors: Sequence[Instances | None] | None, value_range: tuple[float, float] | None,
        names: Sequence[str | None] | None, boxes: Sequence[BoxesLike | None] | None = None,
        box_scores: Sequence[Any] | None = None,
    ) -> tuple[list[Instances], list[list[IterationRecord]]]:
        iterations = self._iterations(num_iters)
        if names is None:
            names = [os.fspath(x) if isinstance(x, str | os.PathLike) else None for x in images]
        for what, values in (("names", names), ("boxes", boxes), ("box_scores", box_scores)):
            if values is not None and len(values) != len(images):
                raise ValueError(f"{len(values)} {what} for {len(images)} images")
        batch = [
            ImageState(Frame(load_image(image, color_order, value_range), self.device), name)
            for image, name in zip(images, names, strict=True)
        ]
        if boxes is not None:
            scores = box_scores if box_scores is not None else [None] * len(batch)
            priors = [None if b is None else given_people(s.frame.host.shape[:2], b, sc)
                      for s, b, sc in zip(batch, boxes, scores, strict=True)]
        self.times = StageTimes(cuda_sync=str(self.device).startswith("cuda"))
        self._encoded = []
        for state in batch:
            state.detect_input = state.frame.for_model(self.detector)
        priors = priors or [None] * len(batch)
        seeded = [(s, p) for s, p in zip(batch, priors, strict=True) if p is not None and len(p)]
        if seeded:
            self._seed([s for s, _ in seeded], [p for _, p in seeded], alive=batch, given=boxes is not None)
            for state, _ in seeded:
                with self.times("mask_out"):
                    state.detect_input = mask_out(state.detect_input, state.found.masks)
        for iteration in range(1, iterations + 1):
            active = [s for s in batch if not s.done]
            if not active:
                break
            for state in active:
                state.detector_inputs.append(state.detect_input)
            detections = self.detect([s.detect_input for s in active], [s.name for s in active], iteration,
                                     [s.found for s in active])
            posing = [(s, d) for s, d in zip(active, detections, strict=True) if len(d)]
            if posing:
                new = self.pose_people([s.frame for s, _ in posing], [d for _, d in posing],
                                       [s.found for s, _ in posing])
                for (state, _), people in zip(posing, new, strict=True):
                    state.found = self.merge(state.found, people, state.fixed)
                self.segment_new([s for s, _ in posing], iteration)
            for state, found_now in zip(active, detections, strict=True):
                if record:
                    state.records.append(IterationRecord(
                        iteration, to_numpy(state.detect_input), found_now.to_host(),
                        self.make_exclusive(state.found).to_host(),
                    ))
                if len(found_now) == 0:
                    state.done = True  # the detector input would not change any more
                    continue
                # Exclusivity removes pixels only where another mask keeps them, so
                # the union that step 6 blacks out is the union of the raw masks.
                with self.times("mask_out"):
                    state.detect_input = mask_out(state.frame.for_model(self.detector), state.found.masks)
        self._detector_inputs = batch[0].detector_inputs if batch else []
        self._encoded = []  # the batch's images are not kept alive past the call
        people = [self.make_exclusive(s.found).to_host() for s in batch]
        return people, [s.records for s in batch]

    # Pose from the caller's boxes: step 2 alone --------------------------------

    def estimate_pose(
        self,
        image: ImageLike,
        boxes: BoxesLike,
        masks: np.ndarray | torch.Tensor | None = None,
        box_scores: np.ndarray | Sequence[float] | None = None,
        color_order: str = "rgb",
        value_range: tuple[float, float] | None = None,
    ) -> Instances:
        """Top-down pose of the people in ``boxes``, by the loop's own pose step
        (:meth:`pose_people`) with nobody found before: no detector, no
        segmenter, no NMS.

        Args:
            image: a path, or an (H, W[, 1|3|4]) array / tensor.
            boxes: (N, 4) xyxy pixels, used unchanged (not clipped, not filtered).
            masks: (N, H, W) bool, for mask-conditioned pose models (MaskPose),
                taken as the loop takes a mask detector's. None (or all empty):
                each person's box stands in, as for a box-only detector. Other
                pose models ignore them.
            box_scores: (N,) ``det_scores`` (default 1); the person score when
                ``loop.person_score='detector'``.
            color_order, value_range: as for :meth:`predict`.
        Returns:
            :class:`Instances` of the N people in the order given: ``boxes``,
            ``det_scores``, ``masks`` as given, ``keypoints``, ``keypoint_scores``,
            ``visibility``, ``presence``, ``kpt_oks``, ``scores`` and ``iteration`` 0.
        Raises:
            ValueError: malformed boxes, scores or masks (see :func:`given_people`).
            ImageError: an image the loop cannot read faithfully.
        """
        return self.estimate_pose_batch(
            [image], [boxes], None if masks is None else [masks],
            None if box_scores is None else [box_scores], color_order, value_range,
        )[0]

    def estimate_pose_batch(
        self,
        images: Sequence[ImageLike],
        boxes: Sequence[BoxesLike],
        masks: Sequence[np.ndarray | torch.Tensor | None] | None = None,
        box_scores: Sequence[np.ndarray | Sequence[float] | None] | None = None,
        color_order: str = "rgb",
        value_range: tuple[float, float] | None = None,
    ) -> list[Instances]:
        """:meth:`estimate_pose` of every image: every person of every image in
        one pose forward (as the loop's pose step batches them). Lists are
        aligned with ``images``; arguments as for :meth:`estimate_pose`."""
        for what, values in (("boxes", boxes), ("masks", masks), ("box_scores", box_scores)):
            if values is not None and len(values) != len(images):
                raise ValueError(f"{len(values)} {what} for {len(images)} images")
        frames = [Frame(load_image(image, color_order, value_range), self.device) for image in images]
        masks = masks if masks is not None else [None] * len(frames)
        box_scores = box_scores if box_scores is not None else [None] * len(frames)
        people = [given_people(f.host.shape[:2], b, s, m)
                  for f, b, s, m in zip(frames, boxes, box_scores, masks, strict=True)]
        self.times = StageTimes(cuda_sync=str(self.device).startswith("cuda"))
        posing = [i for i, p in enumerate(people) if len(p)]
        posed = self.pose_people([frames[i] for i in posing], [people[i] for i in posing],
                                 [None] * len(posing))
        out = list(people)
        for i, person in zip(posing, posed, strict=True):
            out[i] = person
        return [p.to_host() for p in out]

    # Step 0 (video; the caller's boxes) -----------------------------------------

    def seed(self, original: Frame | np.ndarray, prior: Instances) -> Instances:
        """People known before the loop starts (``prior``: its ``boxes`` and
        ``det_scores`` are used): their poses are estimated on this image (steps
        2-4 as iteration 0) and those with score > ``det_score_thr`` kept, so the
        first detector input already has them blacked out and the detector looks
        for everyone else; OKS-NMS merges any it finds again."""
        if not isinstance(original, Frame):
            original = Frame(original, self.device)
        state = ImageState(original, None)
        self._encoded = []
        self._seed([state], [prior], alive=[state])
        return state.found

    def _seed(
        self, batch: list[ImageState], priors: list[Instances], alive: list[ImageState], given: bool = False
    ) -> None:
        """:meth:`seed` of several images; ``alive``: every image of the call,
        all of which the segmenter may still need. ``given``: ``priors`` are
        the caller's people (:func:`given_people`), every one of them kept."""
        people = priors if given else [
            Instances(s.frame.host.shape[:2], boxes=p.boxes.astype(np.float32),
                      det_scores=p.det_scores.astype(np.float32), iteration=np.zeros(len(p), np.int32))
            for s, p in zip(batch, priors, strict=True)
        ]
        posed = self.pose_people([s.frame for s in batch], people, [None] * len(batch))
        for state, person in zip(batch, posed, strict=True):
            if given:  # the caller says these are people: no threshold, no NMS among them
                state.found, state.given = person, True
                continue
            confident = person[person.scores > self.loop.det_score_thr]
            state.found = self.merge(Instances(state.frame.host.shape[:2]), confident)
        self.segment_new(batch, 0, alive)

    # The six steps, each for every image of a batch ------------------------

    def detect(
        self, images: Sequence[PixelArray], names: Sequence[str | None], iteration: int,
        found: Sequence[Instances] | None = None,
    ) -> list[Instances]:
        """Step 1: people on each (masked) detector input, filtered by score and
        greedy box NMS (whole-pixel IoU, as the reference's), best first; with
        ``loop.redetected_iou``, without those who re-detect a person of
        ``found`` (the people found so far in each image)."""
        found = found or [None] * len(images)
        with self.times("detect"), self.autocast():
            detected = detect_batch(self.detector, images, names)
            people = [self._filter_detections(p, iteration) for p in detected]
            return [self._without_redetected(p, f) for p, f in zip(people, found, strict=True)]

    def _without_redetected(self, people: Instances, found: Instances | None) -> Instances:
        # A mask that covers its person only partly (Pose2Instance follows the
        # skeleton) lets the detector find them again, with nearly the same
        # box; their top-down pose would be theirs again, for pose-NMS to drop.
        thr = self.loop.redetected_iou
        if thr is None or found is None or not len(found) or not len(people):
            return people
        return people[box_iou(people.boxes, found.boxes).max(1) < thr]

    def _filter_detections(self, people: Instances, iteration: int) -> Instances:
        h, w = people.image_size
        boxes = people.boxes.copy()
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        people = people.replace(boxes=boxes)
        people = people[np.flatnonzero(people.det_scores > self.loop.det_score_thr)]
        people = people[box_nms(people.boxes, people.det_scores, self.loop.det_nms_iou)]
        return people.replace(
            iteration=np.full(len(people), iteration, np.int32), scores=people.det_scores.copy()
        )

    def pose_people(
        self, frames: Sequence[Frame], people: Sequence[Instances], found: Sequence[Instances | None]
    ) -> list[Instances]:
        """Step 2: top-down pose on each original image; score = mean keypoint
        score (or the detector's, ``loop.person_score``). :meth:`estimate_pose`
        is this step on the caller's boxes.

        Mask-conditioned pose models (MaskPose) read ``people.masks``. From a
        mask detector they are taken as they are, as in the reference: a person
        whose mask is empty is posed undimmed. A box-only detector gives no
        masks at all; then each person gets the mask of the earlier-found
        person it re-detects (box IoU >= 0.5), else its box."""
        with self.times("pose"), self.autocast():
            # Only mask-conditioned models (MaskPose) read the stand-in masks.
            uses_masks = getattr(self.pose, "mask_alpha", 0) > 0
            conditioned = [
                p.replace(masks=fill_missing_masks(p, f))
                if uses_masks and not bool(to_tensor(p.masks).any()) else p
                for p, f in zip(people, found, strict=True)
            ]
            images = [frame.for_model(self.pose) for frame in frames]
            if self.loop.naive:  # the reference's schedule: one person per model call
                posed = [
                    Instances.cat([estimate_batch(self.pose, [image], [c[i]], [f])[0] for i in range(len(c))])
                    for image, c, f in zip(images, conditioned, found, strict=True)
                ]
            else:
                posed = estimate_batch(self.pose, images, conditioned, found)
            by_keypoints = self.loop.person_score == "keypoints"
            out = []
            for person, pose in zip(people, posed, strict=True):
                score = pose.keypoint_scores.mean(1) if by_keypoints else person.det_scores
                # Downstream steps see the detector's own masks, not the stand-ins.
                out.append(pose.replace(masks=person.masks, scores=score.astype(np.float32)))
            return out

    def merge(self, found: Instances, new: Instances, fixed: np.ndarray | None = None) -> Instances:
        """Step 3: OKS pose-NMS over earlier and new people together.

        As in the reference, an iteration none of whose people survive changes
        nothing: the earlier people it would have pruned are all kept.
        ``fixed``: the people of ``found`` never dropped (the caller's boxes)."""
        with self.times("nms"):
            merged = Instances.cat([found, new])
            if fixed is not None:
                fixed = np.concatenate([fixed, np.zeros(len(new), bool)])
            keep = pose_nms(merged, self.loop.oks_nms_thr, self.loop.oks_kpt_thr, self.loop.oks_nms_prefer,
                            fixed)
            if not (keep >= len(found)).any():
                return found
            return merged[keep]

    def segment_new(
        self, batch: Sequence[ImageState], iteration: int, alive: Sequence[ImageState] | None = None
    ) -> None:
        """Step 4: masks for this iteration's people of every image (earlier
        people keep theirs; their prompts and the image embedding are unchanged).

        The segmenter encodes the images at their first need, all together:
        ``alive`` (default ``batch``), every image of the call that can still
        need it. Naive: the reference re-encodes the image every iteration."""
        needing = [s for s in batch if (s.found.iteration == iteration).any()]
        if not needing:
            return
        alive = list(alive if alive is not None else batch)
        if self.loop.naive or any(s not in self._encoded for s in needing):
            with self.times("sam_encode"), self.autocast():
                self._segmenter.set_images([s.frame.for_model(self.segmenter) for s in alive])
            self._encoded = alive
        slots = {id(s): i for i, s in enumerate(self._encoded)}
        empty = [Instances(s.frame.host.shape[:2]) for s in self._encoded]
        with self.times("sam_decode"), self.autocast():
            new = {id(s): s.found[s.found.iteration == iteration] for s in needing}
            old = {id(s): s.found[s.found.iteration != iteration] for s in needing}
            if not self.loop.naive:
                people, others = list(empty), list(empty)
                for state in needing:
                    people[slots[id(state)]] = new[id(state)]
                    others[slots[id(state)]] = old[id(state)]
                decoded = self._segmenter.segment_batch(people, others)
                segmented = {id(s): decoded[slots[id(s)]] for s in needing}
            else:  # one person per call, the others of its image as context
                segmented = {}
                for state in needing:
                    mine, slot = new[id(state)], slots[id(state)]
                    parts = []
                    for i in range(len(mine)):
                        people, others = list(empty), list(empty)
                        people[slot] = mine[i]
                        others[slot] = Instances.cat([old[id(state)], mine[np.arange(len(mine)) != i]])
                        parts.append(self._segmenter.segment_batch(people, others)[slot])
                    segmented[id(state)] = Instances.cat(parts)
        for state in needing:
            found = Instances.cat([old[id(state)], segmented[id(state)]])
            state.found = self.make_exclusive(found, fixed=found.iteration != iteration)

    def make_exclusive(self, found: Instances, fixed: np.ndarray | None = None) -> Instances:
        """Step 5: every pixel claimed by several masks goes to the best mask
        (highest score; ties: the newer, then the earlier-listed one).

        In each iteration (``fixed`` = the earlier people) only the new masks
        lose pixels, to new and old masks alike, as in the reference. That
        leaves one kind of overlap: pixels a new mask won from an older one,
        which the older keeps too. The output pass (no ``fixed``) gives exactly
        those pixels, and only those, to the winner by the same rule, so the
        output masks are pairwise disjoint."""
        if not self.loop.exclusive_masks or len(found) < 2:
            return found
        with self.times("exclusive"):
            masks = exclusive_masks(found.masks, found.mask_scores, found.iteration, fixed)
            return found.replace(masks=masks)
