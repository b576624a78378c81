"""The loop over video frames: BMP per frame, identities by the tracker, and
optionally the temporal prior and SAM 2 mask propagation.

Per processed frame (:meth:`VideoPipeline.step`)::

    propagated = SAM 2 memory -> this frame            (optional)
    prior      = tracks moved to this frame            (optional, BMP.seed)
    people     = BMP loop on the frame (with prior)
    ids        = tracker.assign(people, propagated)
    record     = JSONL record of people + ids; people = record read back
    tracker.commit(people, ids); SAM 2 memory <- people's masks

State after a frame is computed from its record only, so :meth:`restore`
rebuilds it from a log without running the model: resume == one full run.

:meth:`VideoPipeline.process` takes a batch of frames: without the prior and
propagation no frame's loop depends on another's, so they go through
``BMP.predict_batch`` together and only the tracker runs frame by frame.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..config import ConfigError, checkpoint_dirs, load_config
from ..loop import BMP
from ..structures import Instances
from ..weights import UntrustedCheckpointError, WeightsError
from .config import VideoConfig
from .io import Frame, VideoError, VideoReader
from .records import frame_record, record_to_instances
from .tracking import Tracker, downsample_masks

logger = logging.getLogger(__name__)

#: Used by ``bmp.track(video)`` when no model or config is given.
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "bmp_lite.py"


def build_propagator(
    cfg: dict[str, Any] | None, device: str, weights_dirs: Sequence[str]
) -> Any | None:
    """A :class:`~bmp.video.propagation.SAM2MemoryPropagator` from ``video.propagation``,
    or None when it is off or its SAM 2 weights are not available (warned)."""
    if cfg is None:
        return None
    from .propagation import SAM2MemoryPropagator

    cfg = dict(cfg)
    cfg.pop("type", None)  # room for other propagators; SAM 2 memory is the only one
    try:
        return SAM2MemoryPropagator(device=device, weights_dirs=weights_dirs, **cfg)
    except UntrustedCheckpointError:
        raise  # a refused file is the user's decision to make, not a missing download
    except WeightsError as exc:
        logger.warning("SAM 2 mask propagation is off: its weights are not available (%s)", exc)
        return None
    except TypeError as exc:
        raise ConfigError(f"video.propagation: {exc}") from exc


class VideoPipeline:
    """BMP, a :class:`Tracker` and the optional temporal prior / SAM 2 propagation.

    >>> pipe = VideoPipeline.from_config("configs/bmp_lite.py", weights_dirs=["../shared/models"])
    >>> people, record = pipe.step(frame)   # people.track_id (N,)
    """

    def __init__(self, model: BMP, config: VideoConfig | dict | None = None,
                 propagator: Any | None = None) -> None:
        self.model = model
        self.config = config if isinstance(config, VideoConfig) else VideoConfig.from_dict(config)
        self.propagator = propagator
        if self.config.prior.enabled and type(model.pose).__name__ == "DetectorKeypoints":
            raise ConfigError("video.prior needs a top-down pose model; DetectorKeypoints only "
                              "keeps the detector's keypoints and cannot pose a seeded box")
        self.reset()

    def reset(self) -> None:
        """Forget the video so far (tracks, SAM 2 memory, timings): ready for the
        next video with the same models."""
        self.tracker = Tracker(self.config.tracker)
        if self.propagator is not None:
            self.propagator.reset()
        #: Seconds per stage summed over processed frames (loop stages + track, propagate).
        self.seconds: dict[str, float] = defaultdict(float)
        #: Seconds spent computing frames (loop, tracker, propagation); replays cost none.
        self.compute_seconds = 0.0
        self.frames_processed = 0
        self._size: tuple[int, int] | None = None  # (H, W) of the first frame

    @classmethod
    def from_config(
        cls,
        config: str | os.PathLike | dict | Any,
        device: str | None = None,
        weights_dirs: Sequence[str | os.PathLike] = (),
        num_iters: int | None = None,
        prior: bool | None = None,
    ) -> VideoPipeline:
        """BMP from the config, plus its ``video`` section; ``prior`` overrides
        ``video.prior.enabled``."""
        cfg = load_config(config)
        model = BMP.from_config(cfg, device=device, weights_dirs=weights_dirs, num_iters=num_iters)
        video = VideoConfig.from_dict(cfg.get("video")).with_prior(prior)
        dirs = checkpoint_dirs(cfg, weights_dirs)
        device = device or cfg.get("device") or _model_device(model)
        return cls(model, video, build_propagator(video.propagation, device, dirs))

    # One frame -----------------------------------------------------------------

    def _propagate(self, image: np.ndarray) -> dict[int, np.ndarray] | None:
        if self.propagator is None:
            return None
        with _timer(self.seconds, "propagate"):
            return self.propagator.propagate(image)

    def predict_prior(
        self, image: np.ndarray, propagated: dict[int, np.ndarray] | None = None
    ) -> Instances | None:
        """The temporal prior for the next frame ``image`` (None when off or no
        recent track): recent tracks with their boxes moved by their velocity, or
        set to the bounding box of their SAM 2-propagated mask, clipped to the frame."""
        if not self.config.prior.enabled:
            return None
        prior = self.tracker.predicted(self.config.prior.max_gap)
        if prior is None:
            return None
        boxes = prior.boxes.copy()
        for i, track_id in enumerate(prior.track_id):
            mask = (propagated or {}).get(int(track_id))
            if mask is not None and mask.any():  # SAM 2 knows where the person went
                ys, xs = np.nonzero(mask)
                boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        h, w = image.shape[:2]
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        keep = (boxes[:, 2] - boxes[:, 0] >= 2) & (boxes[:, 3] - boxes[:, 1] >= 2)
        return prior.replace(boxes=boxes)[keep] if keep.any() else None

    def _commit(self, people: Instances) -> None:
        ids = people.track_id
        with _timer(self.seconds, "track"):
            self.tracker.commit(people, ids)
        if self.propagator is not None:
            with _timer(self.seconds, "propagate"):
                masks = {int(t): people.masks[i] for i, t in enumerate(ids) if t >= 0}
                self.propagator.remember(masks, set(self.tracker.tracks))

    def conform(self, frame: Frame) -> Frame:
        """Frames keep the first frame's size (a stream that changes resolution
        midway is resized), so masks stay comparable across frames."""
        h, w = frame.image.shape[:2]
        if self._size is None:
            self._size = (h, w)
        elif (h, w) != self._size:
            logger.warning("frame %d is %dx%d, the video started at %dx%d: resized",
                           frame.index, w, h, self._size[1], self._size[0])
            image = cv2.resize(frame.image, self._size[::-1], interpolation=cv2.INTER_AREA)
            frame = Frame(frame.index, frame.time, image)
        return frame

    @property
    def sequential(self) -> bool:
        """Frame t's loop needs frame t-1's result (temporal prior or SAM 2
        propagation), so frames cannot share a model call."""
        return self.config.prior.enabled or self.propagator is not None

    def step(self, frame: Frame, video_name: str = "video") -> tuple[Instances, dict[str, Any]]:
        """Run the loop on one frame and track its people.

        Returns:
            (people, record): the frame's people with ``track_id`` (N,) (as read
            back from ``record``, the frame's JSONL record).
        """
        began = time.perf_counter()
        frame = self.conform(frame)
        propagated = self._propagate(frame.image)
        prior = self.predict_prior(frame.image, propagated)
        people = self.model.predict(frame.image, prior=prior)
        self._add_model_times()
        tracked = self._track(frame, people, propagated, video_name)
        self.compute_seconds += time.perf_counter() - began
        return tracked

    def process(
        self, frames: Sequence[Frame], logged: Sequence[dict[str, Any] | None], video_name: str = "video"
    ) -> list[tuple[Instances, dict[str, Any] | None]]:
        """A batch of consecutive frames, in order: one with a ``logged`` record
        is replayed (:meth:`restore`; its record comes back None), the others
        are computed.

        Unless :attr:`sequential`, the frames go through one ``BMP.predict_batch``
        call before the tracker takes them in order (the loop does not depend on
        the tracker then). A batched forward differs from a single one by float
        noise, so a partly logged batch (the one a kill cut short) is run whole
        again: each frame then sees the batch it saw before, and a resumed run
        with the same batch size stays identical to one uninterrupted run.
        """
        if len(frames) != len(logged):
            raise ValueError(f"{len(frames)} frames but {len(logged)} logged records")
        frames = [self.conform(frame) for frame in frames]
        pending = [record is None for record in logged]
        if self.sequential or len(frames) == 1 or not any(pending):
            return [self.step(frame, video_name) if record is None else (self.restore(frame, record), None)
                    for frame, record in zip(frames, logged, strict=True)]
        began = time.perf_counter()
        found = self.model.predict_batch([frame.image for frame in frames])
        self._add_model_times()
        self.compute_seconds += time.perf_counter() - began
        out: list[tuple[Instances, dict[str, Any] | None]] = []
        for frame, record, people in zip(frames, logged, found, strict=True):
            if record is not None:
                out.append((self.restore(frame, record), None))
                continue
            began = time.perf_counter()
            out.append(self._track(frame, people, None, video_name))
            self.compute_seconds += time.perf_counter() - began
        return out

    def _add_model_times(self) -> None:
        for stage, seconds in self.model.times.seconds.items():
            self.seconds[stage] += seconds

    def _track(
        self, frame: Frame, people: Instances, propagated: dict[int, np.ndarray] | None, video_name: str
    ) -> tuple[Instances, dict[str, Any]]:
        """Track ids for the loop's ``people`` of ``frame``, the frame's record,
        and the tracker (and SAM 2 memory) moved on from that record."""
        with _timer(self.seconds, "track"):
            small = None
            if propagated:
                stride = self.tracker.config.mask_stride
                small = {t: downsample_masks(m[None], stride)[0] for t, m in propagated.items()}
            ids = self.tracker.assign(people, small)
            record = frame_record(people.replace(track_id=ids), video_name, frame.index, frame.time)
            people = record_to_instances(record)
        self._commit(people)
        self.frames_processed += 1
        return people, record

    def restore(self, frame: Frame, record: dict[str, Any]) -> Instances:
        """Replay a logged frame: the same state as :meth:`step` left, without the
        loop (SAM 2 propagation, when on, does run again to rebuild its memory)."""
        frame = self.conform(frame)
        self._propagate(frame.image)
        people = record_to_instances(record)
        self._commit(people)
        return people

    def stage_summary(self) -> str:
        """Mean milliseconds per processed frame for each stage."""
        n = max(self.frames_processed, 1)
        return ", ".join(f"{k} {v / n * 1000:.0f}ms" for k, v in self.seconds.items() if v > 0)


def _model_device(model: BMP) -> str:
    return (getattr(model, "device", None) or getattr(model.segmenter, "device", None)
            or getattr(model.pose, "device", None) or "cpu")


class _timer:
    """Adds the seconds of a ``with`` block to ``totals[stage]``."""

    def __init__(self, totals: dict[str, float], stage: str) -> None:
        self.totals, self.stage = totals, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.totals[self.stage] += time.perf_counter() - self.start


def _frames_of(video: Any, backend: str, timeout: float, start: int, end: int | None,
               every: int) -> Iterator[Frame]:
    if isinstance(video, str | os.PathLike):
        yield from VideoReader(video, backend=backend, timeout=timeout).frames(start, end, every)
        return
    if not isinstance(video, Iterable):
        raise VideoError(f"bmp.track needs a video path or an iterable of frames, got {type(video).__name__}")
    from ..images import load_image

    for i, image in enumerate(video):
        if end is not None and i >= end:
            return
        if i >= start and (i - start) % every == 0:
            yield Frame(i, None, load_image(image))


def track(
    video: str | os.PathLike | Iterable[np.ndarray],
    model: BMP | VideoPipeline | str | os.PathLike | dict | None = None,
    *,
    device: str | None = None,
    weights_dirs: Sequence[str | os.PathLike] = (),
    video_config: VideoConfig | dict | None = None,
    prior: bool | None = None,
    start: int = 0,
    end: int | None = None,
    every: int = 1,
    backend: str = "auto",
    timeout: float = 30.0,
) -> Iterator[tuple[int, Instances]]:
    """People with stable identities in every processed frame of a video.

    >>> for index, people in bmp.track("clip.mp4", "configs/bmp_lite.py", weights_dirs=["models"]):
    ...     people.track_id, people.masks.shape       # (N,), (N, H, W)

    Args:
        video: a video file (streamed, never loaded whole) or an iterable of
            (H, W, 3) RGB frames.
        model: a config file / dict (its ``video`` section configures tracking),
            a built :class:`~bmp.BMP` (then ``video_config`` does), or a
            :class:`VideoPipeline`; default ``configs/bmp_lite.py``.
        prior: switch the temporal prior on/off (default: the config's).
        start, end, every: source frame range ``[start, end)`` and step.
    Yields:
        (frame index, :class:`~bmp.Instances` with ``track_id``).
    Raises:
        VideoError: the video cannot be opened or decoded, or has no frame in range.
    """
    if isinstance(model, VideoPipeline):
        pipeline = model
    elif isinstance(model, BMP):
        config = (video_config if isinstance(video_config, VideoConfig)
                  else VideoConfig.from_dict(video_config))
        pipeline = VideoPipeline(model, config.with_prior(prior))
    else:
        config_path = model if model is not None else DEFAULT_CONFIG
        pipeline = VideoPipeline.from_config(config_path, device=device, weights_dirs=weights_dirs,
                                             prior=prior)
    name = Path(video).name if isinstance(video, str | os.PathLike) else "frames"
    count = 0
    for frame in _frames_of(video, backend, timeout, start, end, every):
        people, _ = pipeline.step(frame, name)
        count += 1
        yield frame.index, people
    if count == 0:
        raise VideoError(f"{name}: no decodable frame in the range start={start}, end={end}")
