"""A full disk while writing (issue 22, item 8): every command ends with one
``bmp: error:`` line naming the file (exit 2), never a traceback, whichever
writer hits it first.

Two real failures stand in for a full disk: ``/dev/full`` (every write gives
ENOSPC) in place of ``annotated.mp4``, which PyAV writes, and a file size limit
(``RLIMIT_FSIZE``: a write past it gives EFBIG) for every file at once."""

from __future__ import annotations

import os
import resource
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bmp.cli import main
from bmp.evaluation.report import plot_ap
from tests.conftest import MODELS_DIR, ROOT, SHARED
from tests.test_cli_reliability import assert_one_line_error

LITE = str(ROOT / "configs" / "bmp_lite.py")
CLIP = SHARED / "data" / "video" / "street_5frames.mp4"

pytestmark = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")


def video_args(out: Path, *extra: str) -> list[str]:
    return ["video", str(CLIP), "--config", LITE, "--out", str(out), "--weights-dir", str(MODELS_DIR),
            "--device", "cpu", "--end", "3", *extra]


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Writes past ``limit`` bytes fail in this process (EFBIG), as on a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@pytest.mark.parametrize("workers", ["0", "2"])  # the MP4 written in the main thread, then by the writer's
def test_video_on_a_full_disk_is_one_line_naming_the_mp4(tmp_path, capsys, workers):
    out = tmp_path / "out"
    out.mkdir()
    (out / "annotated.mp4").symlink_to("/dev/full")
    assert main(video_args(out, "--workers", workers, "--batch-size", "2")) == 2
    assert_one_line_error(capsys.readouterr().err, "annotated.mp4", "No space left on device")


# The first file to fail: the config's temporary copy, the MP4, an overlay.
@pytest.mark.parametrize(("limit", "fails"), [(2_000, "bmp_lite.py"), (30_000, "annotated.mp4"),
                                              (100_000, "000000.jpg")])
def test_video_at_a_file_size_limit_is_one_line(tmp_path, capsys, limit, fails):
    with file_size_limit(limit):
        assert main(video_args(tmp_path / "out", "--vis")) == 2
    assert_one_line_error(capsys.readouterr().err, fails, "File too large")


def test_the_eval_plot_on_a_full_disk_is_one_line_and_no_half_file(tmp_path):
    from bmp.coco import OutputError

    metrics = {"mode": "loop", "iou_types": ["bbox"], "metrics": {"all": {
        str(k): {"detector": {"bbox": {"AP": 0.5, "AR": 0.6}}} for k in (1, 2)}}}
    path = tmp_path / "ap_vs_iteration.png"
    with file_size_limit(1_000), pytest.raises(OutputError, match="ap_vs_iteration.png.*File too large"):
        plot_ap(metrics, path)
    assert os.listdir(tmp_path) == []
    assert plot_ap(metrics, path) and path.stat().st_size > 1_000
