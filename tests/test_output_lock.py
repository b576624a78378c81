"""One process at a time per output folder (issue 22, item 4): `bmp run`, `bmp eval`
and `bmp video` refuse a --out that another bmp process holds, with one line naming
its pid; the kernel drops the lock of a holder that dies; under torchrun rank 0
holds the folder and every other rank its own log."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from bmp.cli import main
from bmp.coco import OutputError
from bmp.output_lock import LOCK_NAME, OutputBusy, OutputLocks, log_lock_path
from tests import test_cli_reliability
from tests.conftest import COCO_ANN, COCO_DIR, MODELS_DIR, ROOT, SHARED
from tests.test_cli_reliability import FakeBMP, assert_one_line_error

#: The stand-in loop's fixture: the images :class:`FakeBMP` predicted.
fake_loop = test_cli_reliability.fake_loop

LITE = str(ROOT / "configs" / "bmp_lite.py")
CLIP = SHARED / "data" / "video" / "street_5frames.mp4"

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from bmp.output_lock import OutputLocks

    with OutputLocks() as locks:
        locks.folder(Path(sys.argv[1]))
        print("locked", flush=True)
        time.sleep(600)
""")


@pytest.fixture
def holder(tmp_path) -> Iterator[tuple[Path, subprocess.Popen]]:
    """Another process holding the lock of ``tmp_path/out``."""
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield out, proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


def commands(out: Path) -> dict[str, list[str]]:
    image = sorted(COCO_DIR.glob("*.jpg"))[0]
    common = ["--config", LITE, "--out", str(out), "--weights-dir", str(MODELS_DIR), "--device", "cpu"]
    return {
        "run": ["run", str(image), *common],
        "eval": ["eval", "--ann", str(COCO_ANN), "--images", str(COCO_DIR), "--gt-kpts", *common],
        "video": ["video", str(CLIP), "--end", "2", *common],
        "video, several inputs": ["video", str(CLIP), str(CLIP.with_name("posetrack_5frames.mp4")),
                                  "--end", "2", *common],
        "run --overwrite": ["run", str(image), "--overwrite", *common],
    }


@pytest.mark.parametrize("name", list(commands(Path("x"))))
def test_a_command_on_a_folder_another_process_writes_exits_2_naming_its_pid(name, holder, capsys,
                                                                              fake_loop):
    out, proc = holder
    (out / "predictions.jsonl").write_text("")  # the holder's work, which --overwrite must not delete
    before = sorted(p.name for p in out.iterdir())
    assert main(commands(out)[name]) == 2
    assert_one_line_error(capsys.readouterr().err, f"--out {out}", f"pid {proc.pid}")
    assert sorted(p.name for p in out.iterdir()) == before  # nothing read, written or removed
    assert fake_loop == []


def test_a_killed_holder_leaves_the_folder_free_and_a_clean_run_leaves_no_lock_file(tmp_path, fake_loop):
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout.readline().strip() == "locked"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert (out / LOCK_NAME).read_text().strip() == str(proc.pid)  # stale file: its lock died with it
    assert main(commands(out)["run"]) == 0
    assert len(fake_loop) == 1
    assert not (out / LOCK_NAME).exists()


def test_the_run_holds_the_lock_while_it_predicts(tmp_path, monkeypatch, fake_loop):
    out = tmp_path / "out"
    seen: list[str] = []
    predict = FakeBMP.predict

    def predict_and_look(self, path):
        fd = os.open(out / LOCK_NAME, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # a second open file description is refused
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            seen.append(os.pread(fd, 32, 0).decode().strip())
        finally:
            os.close(fd)
        return predict(self, path)

    monkeypatch.setattr(FakeBMP, "predict", predict_and_look)
    assert main(commands(out)["run"]) == 0
    assert seen == [str(os.getpid())]


class FakeDist:
    """The rank's view of a two-process group, with the other rank's lock error given."""

    def __init__(self, rank: int, other: OutputError | None = None) -> None:
        self.rank, self.world_size, self.other = rank, 2, other

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_gather(self, obj: object) -> list[object]:
        return [obj, self.other] if self.rank == 0 else [self.other, obj]


def test_under_torchrun_rank_0_locks_the_folder_and_the_others_their_logs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    log1 = out / "predictions.rank1.jsonl"
    with OutputLocks() as rank0, OutputLocks() as rank1:
        rank0.shared(out, FakeDist(0), out / "predictions.rank0.jsonl")
        rank1.shared(out, FakeDist(1), log1)
        assert (out / LOCK_NAME).is_file() and log_lock_path(log1).is_file()
        assert not log_lock_path(out / "predictions.rank0.jsonl").exists()
        with OutputLocks() as again, pytest.raises(OutputBusy, match=f"{log1}.*pid {os.getpid()}"):
            again.shared(out, FakeDist(1), log1)  # a second job's rank 1
    assert sorted(p.name for p in out.iterdir()) == []  # released and removed


def test_a_refusal_on_another_rank_stops_this_one_and_frees_its_lock(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    busy = OutputBusy("predictions.rank1.jsonl is in use by another bmp process (pid 1)")
    with OutputLocks() as locks, pytest.raises(OutputBusy, match="pid 1"):
        locks.shared(out, FakeDist(0, other=busy), None)
    assert not (out / LOCK_NAME).exists()
