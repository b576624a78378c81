"""`bmp run` / `bmp eval` with --batch-size and --workers: same results as one image
at a time, bad images isolated, clear errors, resume after a SIGKILL mid-batch, and
the background writer they write through."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bmp.background_writer import BackgroundWriter
from bmp.cli import main
from bmp.coco import PredictionLog
from bmp.image_loader import default_batching, resolve_batching
from tests.conftest import COCO_ANN, COCO_DIR, MODELS_DIR, ROOT

LITE = str(ROOT / "configs" / "bmp_lite.py")
#: Six images, so that --batch-size 4 makes two batches: a kill can fall between them.
NAMES = [f"img{i}.jpg" for i in range(6)]


def copy_images(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(COCO_DIR.glob("*.jpg"))
    for i, name in enumerate(names):
        shutil.copy(sources[i % len(sources)], folder / name)
    return folder


def run_args(folder: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(folder), "--config", LITE, "--out", str(out), "--weights-dir", str(MODELS_DIR),
            "--device", "cpu", "--iters", "1", *extra]


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, str]:
    """One uninterrupted run, one image at a time: (its images folder, results.json text)."""
    folder = copy_images(tmp_path_factory.mktemp("images"), NAMES)
    out = tmp_path_factory.mktemp("clean")
    with pytest.MonkeyPatch.context() as mp:  # module scope: the autouse env fixture is not active yet
        mp.setenv("BMP_OFFLINE", "1")
        assert main(run_args(folder, out, "--batch-size", "1", "--workers", "0")) == 0
    return folder, (out / "results.json").read_text()


def test_batches_and_workers_give_the_results_of_one_image_at_a_time(clean, tmp_path):
    folder, expected = clean
    out = tmp_path / "batched"
    assert main(run_args(folder, out, "--batch-size", "4", "--workers", "2")) == 0
    assert (out / "results.json").read_text() == expected
    files = [r["file"] for r in PredictionLog(out / "predictions.jsonl").records.values()]
    assert files == [str(p.resolve()) for p in sorted(folder.glob("*.jpg"))]  # logged in input order


def test_a_corrupt_image_in_a_batch_is_skipped_and_the_others_succeed(tmp_path, capsys):
    folder = copy_images(tmp_path / "images", ["a.jpg", "c.jpg", "d.jpg"])
    (folder / "b.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    out = tmp_path / "out"
    assert main(run_args(folder, out, "--batch-size", "4", "--workers", "2")) == 0
    captured = capsys.readouterr()
    bad = (folder / "b.jpg").resolve()
    assert f"skipped {bad}: cannot decode image" in captured.out
    assert "Traceback" not in captured.err
    images = json.loads((out / "images.json").read_text())
    assert [i["file_name"] for i in images] == ["a.jpg", "c.jpg", "d.jpg"]
    log = PredictionLog(out / "predictions.jsonl")
    assert "cannot decode" in log.records[str(bad)]["error"]
    assert list(log.records) == [str((folder / n).resolve()) for n in ("a.jpg", "b.jpg", "c.jpg", "d.jpg")]


@pytest.mark.parametrize("option, value, message", [
    ("--batch-size", "0", "--batch-size must be >= 1, got 0"),
    ("--batch-size", "-3", "--batch-size must be >= 1, got -3"),
    ("--workers", "-1", "--workers must be >= 0, got -1"),
])
@pytest.mark.parametrize("command", ["run", "eval"])
def test_bad_batching_values_are_a_one_line_error(command, option, value, message, tmp_path, capsys):
    out = tmp_path / "out"
    if command == "run":
        argv = run_args(COCO_DIR, out, option, value)
    else:
        argv = ["eval", "--config", LITE, "--ann", str(COCO_ANN), "--images", str(COCO_DIR),
                "--out", str(out), "--device", "cpu", option, value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line]
    assert lines == [f"bmp: error: {message}"], err


def test_batching_defaults_follow_the_device():
    assert default_batching("cpu") == (1, 0)
    assert default_batching("cuda") == default_batching("cuda:1") == (8, min(4, os.cpu_count()))
    assert resolve_batching(None, None, "cpu") == (1, 0)
    assert resolve_batching(3, None, "cuda:0") == (3, min(4, os.cpu_count()))
    assert resolve_batching(None, 0, "cuda") == (8, 0)


# --- the background writer ------------------------------------------------------------------


def test_writer_runs_tasks_in_submission_order_off_the_calling_thread():
    done: list[tuple[int, int]] = []
    with BackgroundWriter(max_pending=2) as writer:
        for i in range(50):
            writer.submit(lambda i=i: done.append((i, threading.get_ident())))
    assert [i for i, _ in done] == list(range(50))
    assert {thread for _, thread in done} != {threading.get_ident()}


def test_writer_flush_waits_for_everything_submitted():
    done: list[int] = []
    writer = BackgroundWriter()
    writer.submit(lambda: (time.sleep(0.2), done.append(1)))
    writer.submit(done.append, 2)
    writer.flush()
    assert done == [1, 2]
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(done.append, 3)


def test_a_failing_task_is_raised_in_the_caller_and_later_tasks_are_dropped():
    done: list[int] = []

    def fail() -> None:
        raise OSError("disk full")

    writer = BackgroundWriter()
    writer.submit(fail)
    writer.submit(done.append, 1)  # queued behind the failure: must not run
    with pytest.raises(OSError, match="disk full"):
        writer.flush()
    with pytest.raises(OSError, match="disk full"):  # every later call says so
        writer.submit(done.append, 2)
    with pytest.raises(OSError, match="disk full"):
        writer.close()
    assert done == []


def test_the_body_error_wins_and_queued_work_is_still_written():
    done: list[int] = []
    with pytest.raises(KeyError), BackgroundWriter() as writer:
        writer.submit(lambda: (time.sleep(0.1), done.append(1)))
        raise KeyError("body")
    assert done == [1]


def test_inline_writer_runs_each_task_at_once_in_the_calling_thread():
    threads: list[int] = []
    running = threading.active_count()
    writer = BackgroundWriter(threaded=False)
    assert threading.active_count() == running  # no thread at all
    writer.submit(lambda: threads.append(threading.get_ident()))
    assert threads == [threading.get_ident()]
    with pytest.raises(ValueError, match="now"):
        writer.submit(lambda: (_ for _ in ()).throw(ValueError("now")))
    writer.close()


# --- resume after SIGKILL ------------------------------------------------------------------


def test_resume_after_a_sigkill_mid_batch_loses_and_duplicates_nothing(clean, tmp_path):
    folder = copy_images(tmp_path / "images", NAMES)
    out = tmp_path / "out"
    log = out / "predictions.jsonl"
    cmd = [sys.executable, "-m", "bmp", *run_args(folder, out, "--batch-size", "4", "--workers", "2")]
    env = dict(os.environ, BMP_OFFLINE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        lines = 0
        while proc.poll() is None and time.monotonic() < deadline:
            lines = log.read_bytes().count(b"\n") if log.exists() else 0
            if 1 <= lines < len(NAMES):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        proc.wait(timeout=60)
    finally:  # its decoding workers too (they would exit on their own within seconds)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, (
        f"not killed mid-run ({lines} records): {stderr.read_text()[-2000:]}"
    )

    assert main(run_args(folder, out, "--batch-size", "4", "--workers", "2")) == 0
    assert (out / "results.json").read_text() == clean[1]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    files = [r["file"] for r in records]
    assert sorted(files) == sorted(str(p.resolve()) for p in folder.glob("*.jpg"))  # each exactly once


# --- eval --------------------------------------------------------------------------------------


def test_eval_in_batches_gives_the_metrics_of_one_image_at_a_time(tmp_path):
    def evaluate(out: Path, batch_size: str, workers: str) -> dict:
        assert main(["eval", "--config", LITE, "--ann", str(COCO_ANN), "--images", str(COCO_DIR),
                     "--out", str(out), "--weights-dir", str(MODELS_DIR), "--device", "cpu",
                     "--iters", "1", "--limit", "2", "--batch-size", batch_size, "--workers", workers]) == 0
        return json.loads((out / "metrics.json").read_text())

    single = evaluate(tmp_path / "single", "1", "0")
    batched = evaluate(tmp_path / "batched", "2", "1")
    assert batched["images"] == single["images"] == {"selected": 2, "evaluated": 2, "failed": []}
    assert batched["metrics"] == single["metrics"]
    assert batched["subsets"] == single["subsets"]
