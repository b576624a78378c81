"""``bmp video`` with ``--batch-size`` / ``--workers``, several videos per call and
``torchrun`` sharding by video (lite config, real weights, CPU): however the
frames are grouped, decoded, written or spread over processes, the outputs are
those of the plain frame-by-frame run."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bmp.cli import main
from bmp.video.io import VideoError, VideoReader, _on_demand, count_frames
from tests.conftest import MODELS_DIR, ROOT, SHARED, offline_bmp_home
from tests.test_video_kill import decodable, logged_frames, synth_clip

LITE = ROOT / "configs" / "bmp_lite.py"
VIDEO_DIR = SHARED / "data" / "video"
CLIPS = [VIDEO_DIR / "street_5frames.mp4", VIDEO_DIR / "posetrack_5frames.mp4"]
END = "5"  # the whole shared clips: with --batch-size 4, one full batch and a partial one


def video_args(clips: list[Path], out: Path, *extra: str, end: str | None = END) -> list[str]:
    return ["video", *map(str, clips), "--config", str(LITE), "--out", str(out),
            "--weights-dir", str(MODELS_DIR), "--device", "cpu",
            *(["--end", end] if end is not None else []), *extra]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def outputs(folder: Path) -> tuple[list[dict], list[dict], int]:
    """What must not depend on how the run was organised: the frame records, the
    COCO results and the MP4's decoded frame count. Records hold no timings."""
    return (read_jsonl(folder / "frames.jsonl"), json.loads((folder / "results.json").read_text()),
            count_frames(folder / "annotated.mp4")[0])


@pytest.fixture(scope="module")
def plain_runs(tmp_path_factory) -> dict[str, Path]:
    """Each shared clip alone, one frame per model call, nothing in the background."""
    runs = {}
    with offline_bmp_home(tmp_path_factory):
        for clip in CLIPS:
            out = tmp_path_factory.mktemp(clip.stem)
            assert main(video_args([clip], out, "--batch-size", "1", "--workers", "0")) == 0
            runs[clip.stem] = out
    return runs


def assert_equal_up_to_float_noise(got: object, want: object, where: str = "") -> None:
    """Equal JSON, except that a number may move by one step of the precision the
    record rounds to (bbox: 0.01): a batched forward differs from a single one
    by float32 noise (~1e-4 px), which now and then crosses a rounding boundary."""
    if isinstance(want, float) or isinstance(got, float):
        assert got == pytest.approx(want, abs=0.0101), where
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            assert_equal_up_to_float_noise(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_equal_up_to_float_noise(g, w, f"{where}[{i}]")
    else:  # ids, iterations, counts, masks' RLE, frame indices: exact
        assert got == want, where


def test_batches_with_background_io_write_what_the_frame_by_frame_run_writes(plain_runs, tmp_path):
    out = tmp_path / "batched"
    assert main(video_args([CLIPS[0]], out, "--batch-size", "4", "--workers", "2")) == 0
    records, results, mp4_frames = outputs(out)
    want_records, want_results, want_mp4_frames = outputs(plain_runs[CLIPS[0].stem])
    assert [r["frame"] for r in records] == [0, 1, 2, 3, 4] and mp4_frames == want_mp4_frames == 5
    assert_equal_up_to_float_noise(records, want_records, "frames.jsonl")
    assert_equal_up_to_float_noise(results, want_results, "results.json")
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["batch_size"], summary["workers"], summary["frames_processed"]) == (4, 2, 5)


def test_background_io_alone_changes_nothing(plain_runs, tmp_path):
    out = tmp_path / "workers"
    assert main(video_args([CLIPS[1]], out, "--batch-size", "1", "--workers", "2")) == 0
    assert outputs(out) == outputs(plain_runs[CLIPS[1].stem])


def test_two_videos_in_one_call_get_a_folder_each_equal_to_its_own_run(plain_runs, tmp_path, capsys):
    out = tmp_path / "both"
    assert main(video_args(CLIPS, out)) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(clip.stem for clip in CLIPS)
    for clip in CLIPS:
        assert outputs(out / clip.stem) == outputs(plain_runs[clip.stem])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [clip.name for clip in CLIPS]
    assert all(f"-> {out / clip.stem}" in line for line, clip in zip(lines, CLIPS, strict=True))


def test_two_gloo_processes_shard_the_videos_and_match_the_single_process_run(plain_runs, tmp_path):
    out = tmp_path / "sharded"
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc-per-node=2", "-m", "bmp",
           *video_args(CLIPS, out, "--workers", "1")]
    env = dict(os.environ, BMP_OFFLINE="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for clip in CLIPS:
        assert outputs(out / clip.stem) == outputs(plain_runs[clip.stem])
    # Rank 0 alone reports, once both ranks are done: one line per video, in input order.
    lines = [line for line in done.stdout.splitlines() if line.split(":")[0] in {c.name for c in CLIPS}]
    assert [line.split(":")[0] for line in lines] == [clip.name for clip in CLIPS]


# Killed (SIGKILL, no handler runs) right before the log takes its 6th record: frames
# 4..7 were one batch, frame 4 is logged, 5..7 are computed but not logged.
KILL_AT_SIXTH_RECORD = """
import os, signal, sys
from bmp.video.records import FrameLog

append = FrameLog.append

def append_or_die(self, record):
    if len(self) == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    append(self, record)

FrameLog.append = append_or_die
from bmp.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_resume_after_a_kill_in_the_middle_of_a_batch_loses_and_repeats_no_frame(tmp_path):
    clip = synth_clip(tmp_path / "pan.mp4")  # 10 small frames
    batched = ("--batch-size", "4", "--workers", "2")
    whole = tmp_path / "whole"
    assert main(video_args([clip], whole, *batched, end=None)) == 0

    out = tmp_path / "killed"
    cmd = [sys.executable, "-c", KILL_AT_SIXTH_RECORD, *video_args([clip], out, *batched, end=None)]
    env = dict(os.environ, BMP_OFFLINE="1", PYTHONPATH=str(ROOT))
    killed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert [r["frame"] for r in logged_frames(out / "frames.jsonl")] == [0, 1, 2, 3, 4]
    assert len(decodable(out / "annotated.mp4")) >= 4  # the kill guarantee holds mid-batch

    assert main(video_args([clip], out, *batched, end=None)) == 0
    records = read_jsonl(out / "frames.jsonl")
    assert [r["frame"] for r in records] == list(range(10))  # each frame once, in order
    assert outputs(out) == outputs(whole)  # bit for bit: the cut batch was run whole again
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["frames"], summary["frames_resumed"], summary["frames_processed"]) == (10, 5, 5)


def test_the_temporal_prior_keeps_one_frame_per_model_call_and_says_so(tmp_path, caplog):
    clip = synth_clip(tmp_path / "pan.mp4")
    plain, batched = tmp_path / "plain", tmp_path / "batched"
    assert main(video_args([clip], plain, "--prior", end="3")) == 0
    with caplog.at_level(logging.INFO, logger="bmp"):
        assert main(video_args([clip], batched, "--prior", "--batch-size", "4", "--workers", "1",
                               end="3")) == 0
    said = [r.getMessage() for r in caplog.records if "one frame per model call" in r.getMessage()]
    assert len(said) == 1
    assert outputs(batched) == outputs(plain)


@pytest.mark.parametrize("option, value, message", [
    ("--batch-size", "0", "--batch-size must be >= 1, got 0"),
    ("--workers", "-1", "--workers must be >= 0, got -1"),
])
def test_bad_batch_size_or_workers_is_a_one_line_error(tmp_path, capsys, option, value, message):
    assert main(video_args([CLIPS[0]], tmp_path / "out", option, value)) == 2
    assert capsys.readouterr().err == f"bmp: error: {message}\n"
    assert not (tmp_path / "out").exists()  # refused before any work


def test_a_batch_size_that_is_no_integer_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(video_args([CLIPS[0]], tmp_path / "out", "--batch-size", "four"))
    assert exit_.value.code == 2
    assert "argument --batch-size: invalid int value: 'four'" in capsys.readouterr().err


def test_two_inputs_with_one_stem_are_refused(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "clip.mp4").write_bytes(CLIPS[0].read_bytes())
    assert main(video_args([a / "clip.mp4", b / "clip.mp4"], tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert err.startswith("bmp: error: ") and err.count("\n") == 1
    assert f"would both write to {tmp_path / 'out' / 'clip'}" in err and not (tmp_path / "out").exists()


def test_decoding_on_demand_gives_the_read_ahead_frames_and_still_times_out():
    reader = VideoReader(CLIPS[0])
    ahead = list(reader.frames(start=1, end=5, every=2))
    on_demand = list(reader.frames(start=1, end=5, every=2, prefetch=0))  # --workers 0
    assert [(f.index, f.time) for f in on_demand] == [(f.index, f.time) for f in ahead]
    assert [f.index for f in on_demand] == [1, 3]
    for got, want in zip(on_demand, ahead, strict=True):
        np.testing.assert_array_equal(got.image, want.image)

    def stalled():
        time.sleep(30)
        yield None

    began = time.perf_counter()
    with pytest.raises(VideoError, match="decoding a frame did not finish within 0.5 s"):
        list(_on_demand(stalled, timeout=0.5))
    assert time.perf_counter() - began < 5
