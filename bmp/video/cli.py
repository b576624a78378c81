"""``bmp video INPUT.mp4 --config CFG --out DIR``: the loop over a clip.

Writes into DIR:

- ``annotated.mp4``: masks, skeletons and ``#track`` ids on every processed frame;
- ``frames.jsonl``: one record per processed frame (COCO results + ``track_id``),
  appended as each frame finishes, the state a re-run resumes from;
- ``results.json``: all frames' COCO results (``image_id`` = frame index);
- ``summary.json``: frames, people per frame, tracks, fps achieved, stage times;
- ``vis/*.jpg`` with ``--vis``: the overlay of every processed frame.

Ctrl-C finishes the current frame, closes the MP4 and exits (a second Ctrl-C
aborts at once; the MP4 is fragmented, so it still plays). Re-running the same
command resumes: logged frames are replayed from ``frames.jsonl``, not recomputed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

OUTPUT_VIDEO = "annotated.mp4"
FRAME_LOG = "frames.jsonl"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..weights import add_trust_argument

    parser.add_argument("input", help="video file (mp4, mov, mkv, avi, ...)")
    parser.add_argument("--config", required=True, help="config file, e.g. configs/bmp_lite.py")
    parser.add_argument("--out", required=True, help="output folder")
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


@contextmanager
def graceful_interrupt() -> Iterator[dict[str, bool]]:
    """The first Ctrl-C sets ``state['stop']`` (finish the frame, close files);
    the second raises KeyboardInterrupt as usual."""
    from tqdm import tqdm

    state = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum: int, frame: Any) -> None:
        if state["stop"]:
            raise KeyboardInterrupt
        state["stop"] = True
        tqdm.write("bmp video: stopping after this frame (Ctrl-C again to abort now)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


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


def run(args: argparse.Namespace) -> int:
    from .io import VideoError

    try:
        return _run(args)
    except VideoError as exc:
        print(f"bmp: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import cv2
    from tqdm import tqdm

    from ..coco import output_folder, write_json_atomic
    from ..config import ConfigError
    from ..vis import draw_instances
    from .io import VideoError, VideoReader, VideoWriter
    from .pipeline import VideoPipeline
    from .records import FrameLog, frame_key

    if args.every < 1:
        raise ConfigError(f"--every must be >= 1, got {args.every}")
    reader = VideoReader(args.input, backend=args.backend, timeout=args.timeout)
    info = reader.info
    start = parse_position(args.start, info.fps, "start") or 0
    end = parse_position(args.end, info.fps, "end")
    if end is not None and end <= start:
        raise ConfigError(f"--end ({end}) must come after --start ({start})")

    out = output_folder(args.out)
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

    pipeline = VideoPipeline.from_config(args.config, device=args.device, weights_dirs=args.weights_dir,
                                         num_iters=args.iters, prior=args.prior)
    if args.vis:
        (out / "vis").mkdir(exist_ok=True)
    name = reader.path.name
    per_frame: list[tuple[int, int]] = []
    times: list[float] = []
    track_ids: set[int] = set()
    resumed, compute_seconds, interrupted = 0, 0.0, False
    bar = tqdm(total=reader.expected_frames(start, end, args.every), desc="bmp video", unit="frame",
               dynamic_ncols=True)
    writer = VideoWriter(out / OUTPUT_VIDEO, fps=(info.fps or 25.0) / args.every, backend=args.backend)
    loop_began = time.perf_counter()
    try:
        with graceful_interrupt() as interrupt:
            for frame in reader.frames(start, end, args.every):
                frame = pipeline.conform(frame)
                key = frame_key(name, frame.index)
                if key in log:
                    people = pipeline.restore(frame, log.get(key))
                    record = None
                    resumed += 1
                else:
                    began = time.perf_counter()
                    people, record = pipeline.step(frame, name)
                    compute_seconds += time.perf_counter() - began
                overlay = draw_instances(frame.image, people, show_prompts=False)
                writer.write(overlay)
                if args.vis:
                    cv2.imwrite(str(out / "vis" / f"{frame.index:06d}.jpg"), overlay)
                if record is not None:  # logged after the MP4 has the frame
                    log.append(record)
                per_frame.append((frame.index, len(people)))
                times.append(frame.time if frame.time is not None else float("nan"))
                track_ids.update(int(t) for t in people.track_id if t >= 0)
                bar.update(1)
                bar.set_postfix_str(f"{len(people)} people, {len(track_ids)} tracks | "
                                    f"{pipeline.stage_summary()}")
                if interrupt["stop"]:
                    interrupted = True
                    break
    finally:
        writer.close()
        bar.close()
    loop_seconds = time.perf_counter() - loop_began
    if not per_frame:
        (out / OUTPUT_VIDEO).unlink(missing_ok=True)
        raise VideoError(f"{name}: no decodable frame in the range start={start}, end={end}")

    log.write_results(out / "results.json")
    summary = _summary(info, per_frame, times, track_ids, pipeline, resumed, compute_seconds,
                       loop_seconds, interrupted, writer, out, args)
    write_json_atomic(out / "summary.json", summary)
    _print_summary(summary, out)
    if interrupted:
        print("bmp: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    return 0


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


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    fps = f"{summary['fps']:.2f} fps"
    if summary["fps_model"]:
        fps += f" ({summary['fps_model']:.2f} fps in the model)"
    print(f"{summary['frames']} frames ({summary['frames_resumed']} resumed), "
          f"{summary['people_mean']:.1f} people per frame (max {summary['people_max']}), "
          f"{summary['tracks']} tracks, {fps}")
    if summary["variable_frame_rate"]:
        print(f"note: variable frame rate; {OUTPUT_VIDEO} is written at a constant "
              f"{summary['output_video']['fps']:.3g} fps, per-frame times are in {FRAME_LOG}")
    print(f"outputs: {out / OUTPUT_VIDEO}, {out / FRAME_LOG}, {out / 'results.json'}, "
          f"{out / 'summary.json'}")
