"""Decoding and encoding video: PyAV first, OpenCV as the fallback.

Frames are decoded in a background thread into a small bounded queue (or, with
``prefetch=0``, one at a time when asked for), so a long clip never sits in
memory and decoding overlaps the model. Every wait on the
decoder has a timeout: a file that stalls the demuxer or decoder ends in a
:class:`VideoError`, never a hang. Frames come out upright (rotation metadata
of phone videos is applied) as (H, W, 3) uint8 RGB.

The writer produces H.264 MP4 (PyAV) or MPEG-4 Part 2 MP4 (OpenCV). With PyAV
the file is a fragmented MP4 with one fragment per frame, encoded without
lookahead and fsynced per frame, so a killed process (even SIGKILL) leaves a file
that plays up to its last frame but one (:attr:`VideoWriter.frames_on_disk`).
The newest frame cannot be on disk yet: the mov muxer closes a fragment only
when the next packet arrives (it needs that packet's time for the duration), and
PyAV has no call to flush it earlier. A normal close or Ctrl-C finishes the file
completely. OpenCV's MP4 has its index at the end: a killed run leaves nothing
playable.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "pyav", "opencv")
#: Consecutive undecodable packets tolerated before the file is declared broken.
MAX_BAD_PACKETS = 50


class VideoError(RuntimeError):
    """A video cannot be opened, decoded or written (the message says why)."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video, before decoding.

    ``width`` / ``height`` are those of the upright frames that
    :meth:`VideoReader.frames` yields (after ``rotation``, counter-clockwise
    degrees). ``num_frames`` is the container's count (None when it does not
    know; it can be off for broken files), ``fps`` its average rate.
    """

    path: Path
    width: int
    height: int
    fps: float
    num_frames: int | None
    rotation: int
    codec: str
    backend: str


@dataclass(frozen=True)
class Frame:
    """One decoded frame: source index (0-based, decode order), presentation
    time in seconds (None when the file has no timestamps), (H, W, 3) RGB."""

    index: int
    time: float | None
    image: np.ndarray


def have_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def _backend(name: str) -> str:
    if name not in BACKENDS:
        raise VideoError(f"unknown video backend {name!r}; choose from {BACKENDS}")
    if name == "auto":
        return "pyav" if have_pyav() else "opencv"
    if name == "pyav" and not have_pyav():
        raise VideoError("backend 'pyav' asked for but PyAV is not installed (pip install av)")
    return name


def _call_with_timeout(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    """``fn()`` in a daemon thread; a VideoError if it takes over ``timeout`` s
    (the thread is abandoned: a blocked read cannot be interrupted portably)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"bmp-video-{what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise VideoError(f"{what} did not finish within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"video not found: {path}")
    if not path.is_file():
        raise VideoError(f"not a regular file: {path}")
    if path.stat().st_size == 0:
        raise VideoError(f"video file is empty (0 bytes): {path}")


def _check_frame_size(path: Path, width: int, height: int) -> None:
    """A :class:`VideoError` when a frame is over the pixel limit of images
    (:func:`bmp.images.image_limits`, ``--max-image-pixels``)."""
    from ..images import ImageError, image_limits

    try:
        image_limits().check_pixels(width * height, f"{path}: a {width}x{height} frame")
    except ImageError as exc:
        raise VideoError(str(exc)) from None


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a counter-clockwise display rotation (multiples of 90 degrees)."""
    k = int(round(rotation / 90)) % 4
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


# Decoding -------------------------------------------------------------------


def _probe_pyav(path: Path, timeout: float) -> VideoInfo:
    import av

    try:
        container = av.open(str(path), timeout=timeout)
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise VideoError(f"cannot open {path} as a video: {exc}") from exc
    try:
        if not container.streams.video:
            raise VideoError(f"{path} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        # Before the first frame is decoded: a huge frame is refused from the header.
        _check_frame_size(path, stream.codec_context.width or 0, stream.codec_context.height or 0)
        rotation = _pyav_first_frame_rotation(container, stream)
        if rotation is None:
            raise VideoError(f"{path} has no decodable frames")
        w, h = stream.codec_context.width, stream.codec_context.height
        if not w or not h:
            raise VideoError(f"{path}: the video stream has no frame size (no decodable frames?)")
        if rotation % 180:
            w, h = h, w
        return VideoInfo(
            path=path, width=w, height=h, fps=float(rate) if rate else 0.0,
            num_frames=int(stream.frames) or None, rotation=rotation,
            codec=stream.codec_context.name, backend="pyav",
        )
    finally:
        container.close()


def _pyav_first_frame_rotation(container: Any, stream: Any) -> int | None:
    """The display rotation, read from the first frame's side data (PyAV exposes
    the display matrix per frame); None when no frame decodes at all."""
    import av

    bad = 0
    for packet in container.demux(stream):
        try:
            for frame in packet.decode():
                return int(getattr(frame, "rotation", 0) or 0)
        except av.error.InvalidDataError:
            bad += 1
            if bad > MAX_BAD_PACKETS:
                return None
    return None


def _pyav_frames(path: Path, timeout: float, wanted: Callable[[int], bool | None]) -> Iterator[Frame]:
    """Frames ``i`` with ``wanted(i)`` true; stops when it returns None."""
    import av

    container = av.open(str(path), timeout=timeout)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        index, bad = 0, 0
        for packet in container.demux(stream):
            try:
                decoded = packet.decode()
                bad = 0
            except av.error.InvalidDataError as exc:
                bad += 1
                if bad > MAX_BAD_PACKETS:
                    raise VideoError(f"{path}: {bad} undecodable packets in a row ({exc})") from exc
                continue
            for frame in decoded:
                want = wanted(index)
                if want is None:
                    return
                if want:
                    _check_frame_size(path, frame.width, frame.height)  # streams may change size
                    image = _upright(frame.to_ndarray(format="rgb24"), getattr(frame, "rotation", 0) or 0)
                    yield Frame(index, float(frame.time) if frame.time is not None else None, image)
                index += 1
    finally:
        container.close()


def _probe_opencv(path: Path) -> VideoInfo:
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoError(f"cannot open {path} as a video (OpenCV)")
        _check_frame_size(path, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                          int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        ok, frame = cap.read()  # the size after OpenCV's own auto-rotation
        if not ok or frame is None:
            raise VideoError(f"{path} has no decodable frames")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        rotation = int(cap.get(cv2.CAP_PROP_ORIENTATION_META) or 0)
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
        codec = "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ")
        return VideoInfo(
            path=path, width=frame.shape[1], height=frame.shape[0],
            fps=fps if math.isfinite(fps) else 0.0, num_frames=count if count > 0 else None,
            rotation=(360 - rotation) % 360, codec=codec or "?", backend="opencv",
        )
    finally:
        cap.release()


def _opencv_frames(path: Path, wanted: Callable[[int], bool | None]) -> Iterator[Frame]:
    cap = cv2.VideoCapture(str(path))  # applies rotation metadata itself
    try:
        index = 0
        while True:
            want = wanted(index)
            if want is None:
                return
            if not want:
                if not cap.grab():  # skip without converting
                    return
                index += 1
                continue
            ok, bgr = cap.read()
            if not ok or bgr is None:
                return
            _check_frame_size(path, bgr.shape[1], bgr.shape[0])  # before the RGB copy
            msec = cap.get(cv2.CAP_PROP_POS_MSEC)
            yield Frame(index, msec / 1000 if msec >= 0 else None, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        cap.release()


class _Prefetch:
    """Runs a frame generator in a daemon thread into a bounded queue.

    The consumer waits at most ``timeout`` seconds per frame; ``close`` stops the
    producer at its next frame.
    """

    _END = object()

    def __init__(self, make: Callable[[], Iterator[Frame]], timeout: float, depth: int = 4) -> None:
        self.timeout = timeout
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._produce, args=(make,), name="bmp-video-decode",
                                       daemon=True)
        self.thread.start()

    def _put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, make: Callable[[], Iterator[Frame]]) -> None:
        try:
            for frame in make():
                if not self._put(frame):
                    return
            self._put(self._END)
        except BaseException as exc:  # handed to the consumer
            self._put(exc)

    def __iter__(self) -> Iterator[Frame]:
        try:
            while True:
                try:
                    item = self.queue.get(timeout=self.timeout)
                except queue.Empty:
                    raise VideoError(
                        f"the decoder produced no frame for {self.timeout:g} s (stalled or broken file)"
                    ) from None
                if item is self._END:
                    return
                if isinstance(item, VideoError):
                    raise item
                if isinstance(item, BaseException):
                    raise _decode_error(item) from item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the producer and wait for it: a decoding thread still running at
        interpreter exit can abort the process. One stalled inside the decoder
        cannot be interrupted; it is left behind after ``timeout`` seconds."""
        self.stop.set()
        if self.thread is not threading.current_thread():
            self.thread.join(self.timeout)


def _decode_error(exc: BaseException) -> VideoError:
    return VideoError(f"decoding failed: {exc}")


def _on_demand(make: Callable[[], Iterator[Frame]], timeout: float) -> Iterator[Frame]:
    """Frames decoded only when asked for, with no read-ahead; each still has
    ``timeout`` seconds (a watchdog thread decodes it while the caller waits)."""
    end = object()
    frames = make()
    try:
        while True:
            try:
                item = _call_with_timeout(lambda: next(frames, end), timeout, "decoding a frame")
            except VideoError:
                raise
            except Exception as exc:
                raise _decode_error(exc) from exc
            if item is end:
                return
            yield item
    finally:
        # Closes the container now, not at garbage collection; a ValueError means a
        # stalled decode still runs the generator in its abandoned watchdog thread.
        with contextlib.suppress(ValueError):
            frames.close()


class VideoReader:
    """A video file opened for streaming, with its :class:`VideoInfo`.

    >>> reader = VideoReader("clip.mp4")
    >>> for frame in reader.frames(start=10, end=100, every=2):
    ...     frame.index, frame.time, frame.image.shape   # (H, W, 3) RGB

    Args:
        path: a video file.
        backend: ``'auto'`` (PyAV when installed, else OpenCV), ``'pyav'``, ``'opencv'``.
        timeout: seconds any open or per-frame decode may take.
    Raises:
        VideoError: missing, empty, unreadable, no video stream, or a stall.
    """

    def __init__(self, path: str | os.PathLike, backend: str = "auto", timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = float(timeout)
        _check_file(self.path)
        self.backend = _backend(backend)
        if self.backend == "pyav":
            self.info = _call_with_timeout(lambda: _probe_pyav(self.path, self.timeout), self.timeout,
                                           f"opening {self.path.name}")
        else:
            self.info = _call_with_timeout(lambda: _probe_opencv(self.path), self.timeout,
                                           f"opening {self.path.name}")

    def frames(
        self, start: int = 0, end: int | None = None, every: int = 1, prefetch: int = 4
    ) -> Iterator[Frame]:
        """Frames ``start, start + every, ...`` before ``end`` (source indices),
        decoded up to ``prefetch`` frames ahead in a background thread (0: only
        when the caller asks for the next one)."""
        if every < 1 or start < 0 or (end is not None and end <= start):
            raise VideoError(f"empty or invalid frame range: start={start}, end={end}, every={every}")

        def wanted(i: int) -> bool | None:
            if end is not None and i >= end:
                return None
            return i >= start and (i - start) % every == 0

        if self.backend == "pyav":
            def make() -> Iterator[Frame]:
                return _pyav_frames(self.path, self.timeout, wanted)
        else:
            def make() -> Iterator[Frame]:
                return _opencv_frames(self.path, wanted)
        if prefetch <= 0:
            return _on_demand(make, self.timeout)
        return iter(_Prefetch(make, self.timeout, depth=prefetch))

    def expected_frames(self, start: int = 0, end: int | None = None, every: int = 1) -> int | None:
        """How many frames :meth:`frames` should yield, from the container's count."""
        total = self.info.num_frames
        stop = total if end is None else (end if total is None else min(end, total))
        if stop is None:
            return None
        return max(0, -(-(stop - start) // every))


# Encoding -------------------------------------------------------------------


def _even(image: np.ndarray) -> np.ndarray:
    """Pad odd sizes by one edge row/column: 4:2:0 video needs even sizes."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return cv2.copyMakeBorder(image, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)


class VideoWriter:
    """An MP4 written frame by frame; the size is fixed by the first frame.

    Args:
        path: output ``.mp4``.
        fps: frame rate (0, NaN or unknown: 25).
        backend: ``'auto'``, ``'pyav'`` (H.264, fragmented MP4) or ``'opencv'`` (mp4v).
        crf: H.264 quality (PyAV; lower is better).
    Use as a context manager; :meth:`close` is idempotent.
    """

    def __init__(self, path: str | os.PathLike, fps: float, backend: str = "auto", crf: int = 23) -> None:
        self.path = Path(path)
        self.fps = fps if fps and math.isfinite(fps) and fps > 0 else 25.0
        self.backend = _backend(backend)
        with self._writing():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.crf = crf
        self.size: tuple[int, int] | None = None  # (height, width) written
        self.frames_written = 0
        self._container: Any = None
        self._stream: Any = None
        self._file: Any = None  # our own handle on the MP4, to fsync it
        self._cv: cv2.VideoWriter | None = None

    def _writing(self) -> contextlib.AbstractContextManager[None]:
        """A failed write (a full disk) as one :class:`~bmp.coco.OutputError` line,
        as for every output: PyAV raises it as an OSError or, once its muxer has
        failed, as another FFmpeg error; our own flush and fsync as an OSError."""
        from ..coco import writing

        errors: tuple[type[Exception], ...] = ()
        if self.backend == "pyav":
            import av

            errors = (av.error.FFmpegError,)
        return writing(self.path, errors=errors)

    def _open(self, h: int, w: int) -> None:
        self.size = (h, w)
        if self.backend == "pyav":
            import av

            rate = Fraction(round(self.fps * 1000), 1000)
            # Our own handle, to fsync; close() closes it after the container.
            self._file = open(self.path, "wb")  # noqa: SIM115
            try:
                # frag_every_frame, not frag_keyframe: keyframe fragments left up to
                # a GOP (a second) of frames only in memory, lost on a kill.
                self._container = av.open(
                    self._file, "w", format="mp4",
                    options={"movflags": "frag_every_frame+empty_moov+default_base_moof",
                             "flush_packets": "1"},
                )
            except BaseException:
                self._file.close()
                self._file = None
                raise
            self._stream = self._container.add_stream("libx264", rate=rate)
            self._stream.width, self._stream.height = w, h
            self._stream.pix_fmt = "yuv420p"
            gop = max(1, round(self.fps))
            # zerolatency: no lookahead or B-frames, so each frame reaches the file at once.
            self._stream.options = {"crf": str(self.crf), "preset": "veryfast", "tune": "zerolatency",
                                    "g": str(gop)}
        else:
            self._cv = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._cv.isOpened():
                raise VideoError(f"OpenCV cannot write {self.path}")

    def write(self, image_bgr: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 BGR frame (odd sizes padded to even).

        Raises:
            OutputError: the frame cannot be written (a full disk).
        """
        with self._writing():
            self._write(image_bgr)

    def _write(self, image_bgr: np.ndarray) -> None:
        image = _even(np.ascontiguousarray(image_bgr))
        h, w = image.shape[:2]
        if self.size is None:
            self._open(h, w)
        elif (h, w) != self.size:
            image = cv2.resize(image, (self.size[1], self.size[0]), interpolation=cv2.INTER_AREA)
        if self._container is not None:
            import av

            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            # Muxing this packet wrote the previous frame's fragment; fsync it before
            # the caller logs this frame, so the log never runs two frames ahead of
            # the disk, not even after a power cut.
            self._file.flush()
            os.fsync(self._file.fileno())
        else:
            self._cv.write(image)
        self.frames_written += 1

    @property
    def frames_on_disk(self) -> int:
        """Frames a player decodes from the file as it is now, should the process
        die: all written but the newest while a PyAV file is open (its fragment
        closes with the next frame or :meth:`close`), all once closed; 0 for an
        open OpenCV file (its index is written at the end)."""
        if self._container is not None:
            return max(self.frames_written - 1, 0)
        if self._cv is not None:
            return 0
        return self.frames_written

    def close(self) -> None:
        """Flush the encoder and finish the file (safe to call twice); the file
        is closed even when finishing it fails (an OutputError)."""
        with self._writing():
            self._close()

    def _close(self) -> None:
        if self._container is not None:
            container, self._container = self._container, None
            try:
                for packet in self._stream.encode():
                    container.mux(packet)
            finally:
                try:
                    container.close()
                finally:
                    file, self._file = self._file, None
                    file.close()
        if self._cv is not None:
            self._cv.release()
            self._cv = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def count_frames(
    path: str | os.PathLike, backend: str = "auto", timeout: float = 30.0
) -> tuple[int, int, int]:
    """(frames, height, width) by decoding the whole file: what a player sees."""
    reader = VideoReader(path, backend=backend, timeout=timeout)
    n, size = 0, (0, 0)
    for frame in reader.frames():
        n, size = n + 1, frame.image.shape[:2]
    return n, size[0], size[1]
