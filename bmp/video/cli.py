"""``bmp video INPUT.mp4 [MORE.mp4 ...] --config CFG --out DIR``: the loop over clips.

Writes into DIR (one input) or DIR/<stem>/ (each of several inputs):

- ``annotated.mp4``: masks, skeletons and ``#track`` ids on every processed frame;
- ``frames.jsonl``: one record per processed frame (COCO results + ``track_id``),
  appended as each frame finishes, the state a re-run resumes from;
- ``results.json``: all frames' COCO results (``image_id`` = frame index);
- ``summary.json``: frames, people per frame, tracks, fps achieved, stage times;
- ``vis/*.jpg`` with ``--vis``: the overlay of every processed frame.

Ctrl-C or SIGTERM finishes the frames in flight (the current batch), closes the
MP4, writes results.json and summary.json and exits 130 or 143
(:mod:`bmp.termination`; a second signal aborts at once; the MP4 is fragmented,
so it still plays). One process at a time writes a folder (:mod:`bmp.output_lock`).
Re-running the same command resumes: logged frames are replayed from
``frames.jsonl``, not recomputed.

Frames are decoded ahead by a reader thread and the outputs (overlays, MP4,
JSONL) written by a writer thread (``--workers`` > 0), while ``--batch-size``
frames share each model call. ``torchrun --nproc-per-node G -m bmp video ...``
gives each rank whole videos (every G-th); rank 0 prints one line per video.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..output_lock import OutputLocks
    from ..termination import StopRequest

OUTPUT_VIDEO = "annotated.mp4"
FRAME_LOG = "frames.jsonl"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..input_limits import add_limit_arguments
    from ..weights import add_trust_argument

    parser.add_argument(
        "inputs", nargs="+", metavar="VIDEO",
        help="video file(s) (mp4, mov, mkv, avi, ...); with several, each writes to OUT/<stem>/ "
        "and two inputs with the same file stem are refused",
    )
    parser.add_argument("--config", required=True, help="config file, e.g. configs/bmp_lite.py")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--batch-size", type=int, default=None, metavar="B",
        help="frames per model call, >= 1 (default: 8 on CUDA, 1 on CPU); with the temporal prior "
        "or SAM 2 propagation frames go one at a time",
    )
    parser.add_argument(
        "--workers", type=int, default=None, metavar="W",
        help="background I/O, >= 0: a reader thread decodes up to W batches ahead and a writer "
        "thread writes the MP4, overlays and frames.jsonl; 0: all in the main thread "
        "(default: min(4, cores) on CUDA, 0 on CPU)",
    )
    parser.add_argument("--every", type=int, default=1, metavar="N", help="process every N-th frame")
    parser.add_argument("--start", default="0",
                        help="first frame: an index, or seconds with an 's' suffix (2.5s)")
    parser.add_argument("--end", default=None,
                        help="stop before this frame: an index, or seconds (10s); default: the end")
    parser.add_argument("--vis", action="store_true", help="also write every overlay to OUT/vis/*.jpg")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: auto)")
    parser.add_argument("--iters", type=int, default=None, help="loop iterations (default: config)")
    parser.add_argument(
        "--weights-dir", action="append", default=[], metavar="DIR",
        help="folder with checkpoint files, searched before the cache (repeatable)",
    )
    add_trust_argument(parser)
    prior = parser.add_mutually_exclusive_group()
    prior.add_argument("--prior", dest="prior", action="store_true", default=None,
                       help="seed each frame with the previous frame's tracks (video.prior)")
    prior.add_argument("--no-prior", dest="prior", action="store_false", help="no temporal prior")
    parser.add_argument("--backend", default="auto", choices=("auto", "pyav", "opencv"),
                        help="video decoding/encoding library (default: PyAV when installed)")
    add_limit_arguments(parser, file_size=False)
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds opening the file or decoding one frame may take")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over instead of resuming from OUT/frames.jsonl")


def parse_position(text: str | None, fps: float, what: str) -> int | None:
    """A frame index from ``'120'`` or ``'4.0s'`` (seconds at the average fps)."""
    from ..config import ConfigError

    if text is None:
        return None
    text = str(text).strip()
    seconds = text.endswith("s")
    if seconds and fps <= 0:
        raise ConfigError(f"--{what} {text}: the video has no frame rate; give a frame index")
    try:
        value = int(round(float(text[:-1]) * fps)) if seconds else int(text)
    except ValueError:
        raise ConfigError(f"--{what} must be a frame index or seconds like 2.5s, got {text!r}") from None
    if value < 0:
        raise ConfigError(f"--{what} must be >= 0, got {text!r}")
    return value


def _signature(args: argparse.Namespace, video: Path, start: int, end: int | None) -> dict[str, Any]:
    config = Path(args.config)
    stat = video.stat()
    return {
        "video": str(video.resolve()), "video_bytes": stat.st_size,
        "config": str(config),
        "config_sha256": hashlib.sha256(config.read_bytes() if config.is_file() else b"").hexdigest(),
        "iters": args.iters, "every": args.every, "start": start, "end": end, "prior": args.prior,
        "backend": args.backend,
    }


def plan_outputs(inputs: list[str], out: str) -> list[tuple[Path, Path]]:
    """(video, its output folder) per input: OUT for a single video, as always;
    OUT/<stem>/ for each of several, the stem made a safe folder name (``..``
    stays inside OUT), where two inputs with one such name are refused (a
    deterministic rename would hide which folder is which video)."""
    from ..config import ConfigError
    from ..safe_names import name_clashes, safe_name

    videos = [Path(v) for v in inputs]
    if len(videos) == 1:
        return [(videos[0], Path(out))]
    named = [(video, safe_name(video.stem)) for video in videos]
    clashes = name_clashes(named)
    if clashes:
        earlier, video = clashes[0]
        raise ConfigError(f"{earlier} and {video} would both write to "
                          f"{Path(out) / safe_name(video.stem)}; rename one or run them separately")
    return [(video, Path(out) / name) for video, name in named]


@dataclass(frozen=True)
class VideoOutcome:
    """How one video went (sent to rank 0): exit code 0, 2 (error) or 128 +
    the signal that stopped it (130, 143), and the line rank 0 prints for it."""

    index: int
    code: int
    line: str


class _Pipelines:
    """One :class:`VideoPipeline` per process, built for the first video (a rank
    with no video loads no model) and reset for each next one."""

    def __init__(self, args: argparse.Namespace, device: str | None, batch: int) -> None:
        self.args, self.device, self.batch = args, device, batch
        self.pipeline: Any = None

    def next_video(self) -> Any:
        from .pipeline import VideoPipeline

        if self.pipeline is not None:
            self.pipeline.reset()
            return self.pipeline
        args = self.args
        self.pipeline = VideoPipeline.from_config(args.config, device=self.device,
                                                  weights_dirs=args.weights_dir,
                                                  num_iters=args.iters, prior=args.prior)
        if self.batch > 1 and self.pipeline.sequential:
            logger.info("the temporal prior / SAM 2 propagation needs each frame's result for the "
                        "next: one frame per model call (--batch-size %d unused); decoding and "
                        "writing still run in the background", self.batch)
        return self.pipeline


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError
    from ..distributed import process_group
    from ..input_limits import apply_limits
    from ..output_lock import OutputLocks

    if args.every < 1:
        raise ConfigError(f"--every must be >= 1, got {args.every}")
    apply_limits(args)
    jobs = plan_outputs(args.inputs, args.out)
    with process_group(args.device) as (dist, device), OutputLocks() as locks:
        return _run_videos(args, jobs, dist, device, locks)


def _run_videos(args: argparse.Namespace, jobs: list[tuple[Path, Path]], dist: Any,
                device: str | None, locks: OutputLocks) -> int:
    from ..coco import OutputError, output_folder
    from ..config import ConfigError
    from ..image_loader import resolve_batching
    from ..termination import stop_after_batch
    from .io import VideoError

    batch, workers = resolve_batching(args.batch_size, args.workers, device)
    several = len(jobs) > 1 or dist.world_size > 1
    pipelines = _Pipelines(args, device, batch)
    indexed = list(enumerate(jobs))
    outcomes: list[VideoOutcome] = []
    if len(jobs) > 1:  # OUT holds a folder per video, each locked by the rank that writes it
        locks.shared(output_folder(Path(args.out)), dist)
    with stop_after_batch() as interrupt:
        for index, (video, out) in dist.shard(indexed):
            if interrupt.requested:
                outcomes.append(VideoOutcome(index, interrupt.exit_code,
                                             f"{video.name}: not started (interrupted)"))
                continue
            try:
                summary = _process_video(args, video, out, pipelines, batch, workers, interrupt,
                                         locks, desc=video.name if several else "bmp video")
            except (VideoError, ConfigError, OutputError) as exc:
                if not several:
                    print(f"bmp: error: {exc}", file=sys.stderr)
                outcomes.append(VideoOutcome(index, 2, f"{video.name}: error: {exc}"))
                continue
            if not several:
                _print_summary(summary, out)
            stopped = " (interrupted)" if summary["interrupted"] else ""
            outcomes.append(VideoOutcome(index, interrupt.exit_code if summary["interrupted"] else 0,
                                         f"{video.name}: {_summary_line(summary)} -> {out}{stopped}"))
    dist.barrier()  # rank 0 reports once every rank has finished its videos
    everyone = [o for part in dist.all_gather(outcomes) for o in part]
    if not dist.is_main:
        return max((o.code for o in outcomes), default=0)
    if several:
        for outcome in sorted(everyone, key=lambda o: o.index):
            print(outcome.line)
        failed = [jobs[o.index][0].name for o in everyone if o.code == 2]
        if failed:
            print(f"bmp: error: {len(failed)} of {len(jobs)} videos failed: {', '.join(failed)}",
                  file=sys.stderr)
    code = max((o.code for o in everyone), default=0)
    interrupt.raise_if_stopped(code - 128 if code > 128 else None)  # main prints the one line
    return code


def _batches(frames: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive groups of ``size`` items (the last may be shorter)."""
    group: list[Any] = []
    for frame in frames:
        group.append(frame)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _emit(writer: Any, log: Any, vis_dir: Path | None, frame: Any, people: Any,
          record: dict[str, Any] | None) -> None:
    """One frame's outputs, in the order the kill guarantee needs: the MP4 (its
    writer fsyncs) before the frame's log record, so the log never runs ahead."""
    from ..vis import draw_instances, write_image

    overlay = draw_instances(frame.image, people, show_prompts=False)
    writer.write(overlay)
    if vis_dir is not None:
        write_image(vis_dir / f"{frame.index:06d}.jpg", overlay)  # atomic; a full disk is one line
    if record is not None:
        log.append(record)


def _process_video(args: argparse.Namespace, video: Path, out_dir: Path, pipelines: _Pipelines,
                   batch: int, workers: int, interrupt: StopRequest, locks: OutputLocks,
                   desc: str) -> dict[str, Any]:
    """One video into ``out_dir``; returns its summary (also written to summary.json)."""
    from tqdm import tqdm

    from ..background_writer import BackgroundWriter
    from ..coco import output_folder, write_json_atomic
    from ..config import ConfigError
    from .io import VideoError, VideoReader, VideoWriter
    from .records import FrameLog, frame_key

    reader = VideoReader(video, backend=args.backend, timeout=args.timeout)
    info = reader.info
    start = parse_position(args.start, info.fps, "start") or 0
    end = parse_position(args.end, info.fps, "end")
    if end is not None and end <= start:
        raise ConfigError(f"--end ({end}) must come after --start ({start})")

    out = output_folder(out_dir)
    locks.folder(out)  # before anything in it is read or changed
    log_path, sig_path = out / FRAME_LOG, out / "run.json"
    signature = _signature(args, reader.path, start, end)
    if args.overwrite:
        log_path.unlink(missing_ok=True)
    elif log_path.exists() and sig_path.exists():
        previous = json.loads(sig_path.read_text())
        if previous != signature:
            raise ConfigError(f"{out} holds results of a different run ({previous}); "
                              "use --overwrite or another --out")
    write_json_atomic(sig_path, signature)
    log = FrameLog(log_path)

    pipeline = pipelines.next_video()
    vis_dir = output_folder(out / "vis", "--vis folder") if args.vis else None
    name = reader.path.name
    per_frame: list[tuple[int, int]] = []
    times: list[float] = []
    track_ids: set[int] = set()
    resumed, interrupted = 0, False
    bar = tqdm(total=reader.expected_frames(start, end, args.every), desc=desc, unit="frame",
               dynamic_ncols=True)
    writer = VideoWriter(out / OUTPUT_VIDEO, fps=(info.fps or 25.0) / args.every, backend=args.backend)
    loop_began = time.perf_counter()
    try:
        # Up to two batches of frames wait for the writer, so the model never waits on it.
        # The reader is closed (its decoding thread joined) before the writer: nothing
        # outlives the video, and no thread is left running at interpreter exit.
        with BackgroundWriter(max_pending=2 * batch, threaded=workers > 0,
                              name="bmp-video-writer") as output, \
                closing(reader.frames(start, end, args.every, prefetch=workers * batch)) as frames:
            for chunk in _batches(frames, batch):
                chunk = [pipeline.conform(frame) for frame in chunk]
                keys = [frame_key(name, frame.index) for frame in chunk]
                logged = [log.get(key) if key in log else None for key in keys]
                for frame, (people, record) in zip(chunk, pipeline.process(chunk, logged, name),
                                                   strict=True):
                    output.submit(_emit, writer, log, vis_dir, frame, people, record)
                    if record is None:
                        resumed += 1
                    per_frame.append((frame.index, len(people)))
                    times.append(frame.time if frame.time is not None else float("nan"))
                    track_ids.update(int(t) for t in people.track_id if t >= 0)
                    bar.update(1)
                bar.set_postfix_str(f"{per_frame[-1][1]} people, {len(track_ids)} tracks | "
                                    f"{pipeline.stage_summary()}")
                if interrupt.requested:
                    interrupted = True
                    break
    finally:
        bar.close()  # first: an error closing the MP4 (full disk) must print after the bar's last line
        writer.close()
    loop_seconds = time.perf_counter() - loop_began
    if not per_frame:
        (out / OUTPUT_VIDEO).unlink(missing_ok=True)
        raise VideoError(f"{name}: no decodable frame in the range start={start}, end={end}")

    log.write_results(out / "results.json")
    summary = _summary(info, per_frame, times, track_ids, pipeline, resumed, pipeline.compute_seconds,
                       loop_seconds, interrupted, writer, out, args)
    summary.update(batch_size=batch, workers=workers)
    write_json_atomic(out / "summary.json", summary)
    return summary


def _summary(info: Any, per_frame: list[tuple[int, int]], times: list[float], track_ids: set[int],
             pipeline: Any, resumed: int, compute_seconds: float, loop_seconds: float,
             interrupted: bool, writer: Any, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``fps``: frames out per second of the frame loop (decode, loop, tracking,
    drawing, encoding, logging; model loading excluded); ``fps_model``: newly
    processed frames per second spent in the loop and the tracker alone."""
    import numpy as np

    counts = np.array([n for _, n in per_frame])
    gaps = np.diff([t for t in times if np.isfinite(t)])
    # Constant-rate video has (near) equal timestamp steps; --every multiplies them evenly.
    vfr = bool(len(gaps) > 1 and gaps.min() > 0 and gaps.max() / gaps.min() > 1.1)
    processed = len(per_frame) - resumed
    n = max(pipeline.frames_processed, 1)
    return {
        "video": str(info.path), "backend": info.backend, "codec": info.codec,
        "width": info.width, "height": info.height, "rotation": info.rotation,
        "source_fps": info.fps, "variable_frame_rate": vfr,
        "frames": len(per_frame), "frames_processed": processed, "frames_resumed": resumed,
        "interrupted": interrupted,
        "people_per_frame": [[i, c] for i, c in per_frame],
        "people_mean": round(float(counts.mean()), 3), "people_max": int(counts.max()),
        "tracks": len(track_ids),
        "fps": round(len(per_frame) / loop_seconds, 3) if loop_seconds > 0 else None,
        "fps_model": round(processed / compute_seconds, 3) if compute_seconds > 0 else None,
        "stage_ms_per_frame": {k: round(v / n * 1000, 1) for k, v in pipeline.seconds.items()},
        "prior": pipeline.config.prior.enabled, "propagation": pipeline.propagator is not None,
        "video_config": pipeline.config.to_dict(),
        "output_video": {"path": str(out / OUTPUT_VIDEO), "frames": writer.frames_written,
                         "height": writer.size[0] if writer.size else None,
                         "width": writer.size[1] if writer.size else None, "fps": writer.fps},
        "every": args.every,
    }


def _summary_line(summary: dict[str, Any]) -> str:
    fps = f"{summary['fps']:.2f} fps"
    if summary["fps_model"]:
        fps += f" ({summary['fps_model']:.2f} fps in the model)"
    return (f"{summary['frames']} frames ({summary['frames_resumed']} resumed), "
            f"{summary['people_mean']:.1f} people per frame (max {summary['people_max']}), "
            f"{summary['tracks']} tracks, {fps}")


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    print(_summary_line(summary))
    if summary["variable_frame_rate"]:
        print(f"note: variable frame rate; {OUTPUT_VIDEO} is written at a constant "
              f"{summary['output_video']['fps']:.3g} fps, per-frame times are in {FRAME_LOG}")
    print(f"outputs: {out / OUTPUT_VIDEO}, {out / FRAME_LOG}, {out / 'results.json'}, "
          f"{out / 'summary.json'}")
