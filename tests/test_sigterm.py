"""SIGTERM, which Kubernetes and SLURM send before they kill a job (issue 22,
item 7): `bmp run`, `bmp eval` and `bmp video` stop like at a first Ctrl-C. The
batch in flight is finished, what is complete is written, one line is printed
and the exit code is 143; a re-run resumes. Each command runs as a real
process on the shared images and clip (lite config, CPU)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bmp.cli import main
from bmp.video.io import count_frames
from tests.conftest import COCO_ANN, COCO_DIR, MODELS_DIR, ROOT
from tests.test_video_cli import read_jsonl
from tests.test_video_kill import logged_frames, synth_clip

LITE = str(ROOT / "configs" / "bmp_lite.py")
COMMON = ["--config", LITE, "--weights-dir", str(MODELS_DIR), "--device", "cpu"]


def stop_with_sigterm(argv: list[str], log: Path, tmp_path: Path, records: int = 1,
                      group: bool = False) -> tuple[int, str, float]:
    """Start ``bmp ARGV``, send SIGTERM once ``log`` holds ``records`` lines;
    returns the exit code, stderr and the seconds from the signal to the exit.
    ``group``: to the whole process group, decoding workers too, as SLURM does."""
    env = dict(os.environ, BMP_OFFLINE="1", PYTHONPATH=str(ROOT))
    with open(tmp_path / "stderr.txt", "w+") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "bmp", *argv], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=group)
        try:
            deadline = time.monotonic() + 300
            while len(logged_frames(log)) < records:
                assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-3000:]
                assert time.monotonic() < deadline, f"{records} records not logged in 300 s"
                time.sleep(0.02)
            sent = time.monotonic()
            if group:
                os.killpg(proc.pid, signal.SIGTERM)
            else:
                proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
            seconds = time.monotonic() - sent
        finally:
            proc.kill()  # no-op once it has exited; never leave a model process behind
            proc.wait(timeout=60)
        stderr.seek(0)
        return proc.returncode, stderr.read(), seconds


def assert_stopped_by_sigterm(code: int, err: str) -> None:
    """Exit 143 and one line of bmp's own on stderr (the rest is the progress bar)."""
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("bmp:")]
    assert code == 143 and "Traceback" not in err, err[-3000:]
    assert lines == ["bmp: stopped by SIGTERM; re-run the same command to resume"], err[-3000:]


def images(folder: Path, copies: int = 2) -> Path:
    """The shared images, ``copies`` times: enough work to be stopped in the middle."""
    folder.mkdir()
    for k in range(copies):
        for path in sorted(COCO_DIR.glob("*.jpg")):
            shutil.copy(path, folder / f"{k}_{path.name}")
    return folder


@pytest.mark.parametrize("batching", [(), ("--batch-size", "2", "--workers", "1")],
                         ids=["plain", "workers"])
def test_run_stopped_by_sigterm_writes_its_results_and_resumes(tmp_path, batching):
    folder, out = images(tmp_path / "images"), tmp_path / "out"
    argv = ["run", str(folder), "--out", str(out), *COMMON, *batching]
    # With decoding workers, SIGTERM goes to the whole process group, as SLURM sends it.
    code, err, seconds = stop_with_sigterm(argv, out / "predictions.jsonl", tmp_path, group=bool(batching))
    assert_stopped_by_sigterm(code, err)
    logged = [r["file"] for r in logged_frames(out / "predictions.jsonl")]
    assert 1 <= len(logged) < 8, "stopped too late to test anything"
    images_json = json.loads((out / "images.json").read_text())
    assert sorted(Path(f).name for f in logged) == sorted(i["file_name"] for i in images_json)
    assert {r["image_id"] for r in json.loads((out / "results.json").read_text())} <= {
        i["id"] for i in images_json}
    print(f"bmp run {' '.join(batching)}: exit {code} {seconds:.2f} s after SIGTERM, {len(logged)} of 8 "
          "images in results.json")

    assert main(argv) == 0
    assert len(json.loads((out / "images.json").read_text())) == 8
    assert len(logged_frames(out / "predictions.jsonl")) == 8  # each image predicted once


def test_eval_stopped_by_sigterm_keeps_its_log_and_resumes(tmp_path):
    out = tmp_path / "out"
    argv = ["eval", "--ann", str(COCO_ANN), "--images", str(COCO_DIR), "--out", str(out), *COMMON]
    code, err, seconds = stop_with_sigterm(argv, out / "predictions.rank0.jsonl", tmp_path)
    assert_stopped_by_sigterm(code, err)
    logged = logged_frames(out / "predictions.rank0.jsonl")
    assert 1 <= len(logged) < 4, "stopped too late to test anything"
    # Metrics of a part would pass for the whole: none until every image is done.
    assert not (out / "metrics.json").exists()
    print(f"bmp eval: exit {code} {seconds:.2f} s after SIGTERM, {len(logged)} of 4 images logged")

    assert main(argv) == 0
    assert json.loads((out / "metrics.json").read_text())["images"]["evaluated"] == 4
    assert len(logged_frames(out / "predictions.rank0.jsonl")) == 4


def test_video_stopped_by_sigterm_writes_a_playable_mp4_results_and_summary(tmp_path):
    clip, out = synth_clip(tmp_path / "pan.mp4"), tmp_path / "out"  # 10 frames
    argv = ["video", str(clip), "--out", str(out), *COMMON]
    code, err, seconds = stop_with_sigterm(argv, out / "frames.jsonl", tmp_path)
    assert_stopped_by_sigterm(code, err)
    logged = read_jsonl(out / "frames.jsonl")
    assert 1 <= len(logged) < 10, "stopped too late to test anything"
    assert count_frames(out / "annotated.mp4")[0] == len(logged)  # every logged frame plays
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["frames"] == len(logged)
    results = json.loads((out / "results.json").read_text())
    assert results == [r for record in logged for r in record["results"]]
    print(f"bmp video: exit {code} {seconds:.2f} s after SIGTERM, {len(logged)} of 10 frames written")

    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["frames"], summary["frames_resumed"]) == (10, len(logged))
    assert count_frames(out / "annotated.mp4")[0] == 10
