"""``bmp video`` killed with SIGKILL (no handler, no close): what is left on disk.

The guarantee (README "Resume / Ctrl-C"): ``annotated.mp4`` decodes every frame
logged in ``frames.jsonl`` but at most the newest one, and a re-run resumes from
the log. The clip is synthesized at 25 fps, so one GOP is longer than the clip:
with fragments cut at keyframes only, a killed run left no decodable frame.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from tests.conftest import COCO_DIR, MODELS_DIR, ROOT, import_pyav
from tests.test_video_io import write_clip

av = import_pyav()

LITE = ROOT / "configs" / "bmp_lite.py"
FRAMES, SIZE = 10, (320, 240)  # write_clip writes 25 fps
KILL_AFTER = 3  # logged frames


def synth_clip(path: Path) -> Path:
    """Two people (a shared COCO image) panning across a small frame: fast to
    process on a CPU, and real people for the detector to find."""
    image = cv2.cvtColor(cv2.imread(str(COCO_DIR / "000000040083.jpg")), cv2.COLOR_BGR2RGB)
    w = SIZE[0]
    frames = []
    for i in range(FRAMES):
        x = round(i * (image.shape[1] - w * 1.2) / (FRAMES - 1))
        frames.append(cv2.resize(image[:, x:x + round(w * 1.2)], SIZE, interpolation=cv2.INTER_AREA))
    return write_clip(path, frames)  # 40 ms apart: 25 fps


def logged_frames(log: Path) -> list[dict]:
    """Complete lines only: a kill in the middle of an append leaves a partial one."""
    if not log.exists():
        return []
    text = log.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def decodable(path: Path) -> list[tuple[int, int]]:
    """(height, width) of every frame PyAV decodes from a possibly unfinished MP4."""
    sizes = []
    try:
        with av.open(str(path)) as container:
            for packet in container.demux(video=0):
                try:
                    sizes += [(f.height, f.width) for f in packet.decode()]
                except av.error.InvalidDataError:
                    continue
    except av.error.FFmpegError:
        pass  # nothing but the header: not even a stream to decode
    return sizes


def video_cmd(clip: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "bmp.cli", "video", str(clip), "--config", str(LITE),
            "--out", str(out), "--weights-dir", str(MODELS_DIR), "--device", "cpu"]


def test_sigkill_leaves_every_logged_frame_but_the_newest_decodable_and_resumes(tmp_path):
    clip = synth_clip(tmp_path / "pan.mp4")
    out = tmp_path / "out"
    env = dict(os.environ, BMP_OFFLINE="1")
    with open(tmp_path / "stderr.txt", "w") as stderr:
        proc = subprocess.Popen(video_cmd(clip, out), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=stderr)
        try:
            deadline = time.monotonic() + 240
            while len(logged_frames(out / "frames.jsonl")) < KILL_AFTER:
                if proc.poll() is not None:
                    pytest.fail((tmp_path / "stderr.txt").read_text()[-2000:])
                assert time.monotonic() < deadline, f"{KILL_AFTER} frames not logged in 240 s"
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()  # no-op once killed; never leave a model process behind
            proc.wait(timeout=60)
    logged = logged_frames(out / "frames.jsonl")
    assert proc.returncode == -signal.SIGKILL and len(logged) < FRAMES, "killed too late to test anything"
    assert len(logged) >= KILL_AFTER
    assert [r["frame"] for r in logged] == list(range(len(logged)))
    frames = decodable(out / "annotated.mp4")
    # The newest logged frame may still be in the muxer (its fragment closes with the
    # next frame); the one written but not yet logged, if any, is not on disk either.
    assert len(logged) - 1 <= len(frames) <= len(logged)
    assert set(frames) == {(SIZE[1], SIZE[0])}

    rerun = subprocess.run(video_cmd(clip, out), cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["frames"], summary["frames_resumed"]) == (FRAMES, len(logged))
    assert len(decodable(out / "annotated.mp4")) == FRAMES
