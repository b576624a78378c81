"""`torchrun --nproc-per-node 2 -m bmp run` on the CPU (gloo): the merged results equal
a one-process run's, and a sharded run resumes from its rank logs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bmp.cli import main
from bmp.coco import scan_jsonl
from tests.conftest import COCO_DIR, MODELS_DIR, ROOT

LITE = str(ROOT / "configs" / "bmp_lite.py")


def run_args(folder: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(folder), "--config", LITE, "--out", str(out), "--weights-dir", str(MODELS_DIR),
            "--device", "cpu", "--iters", "1", *extra]


def torchrun(folder: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", "2",
           "-m", "bmp", *run_args(folder, out, *extra)]
    # Two ranks on a small machine: one thread each, or they fight over the cores.
    env = dict(os.environ, BMP_OFFLINE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> tuple[Path, Path]:
    """The shared images in a folder of their own, and a one-process run's output."""
    folder = tmp_path_factory.mktemp("images")
    for path in sorted(COCO_DIR.glob("*.jpg")):
        shutil.copy(path, folder / path.name)
    out = tmp_path_factory.mktemp("single")
    with pytest.MonkeyPatch.context() as mp:  # module scope: the autouse env fixture is not active yet
        mp.setenv("BMP_OFFLINE", "1")
        assert main(run_args(folder, out)) == 0
    return folder, out


def rank_lines(out: Path) -> dict[str, int]:
    return {p.name: len(p.read_text().splitlines()) for p in sorted(out.glob("predictions*.jsonl"))}


def test_two_processes_write_the_results_of_one(single, tmp_path):
    folder, expected = single
    out = tmp_path / "sharded"
    done = torchrun(folder, out)
    assert rank_lines(out) == {"predictions.rank0.jsonl": 2, "predictions.rank1.jsonl": 2}
    for name in ("results.json", "images.json", "image_ids.json", "run.json"):
        assert (out / name).read_text() == (expected / name).read_text(), name
    assert done.stdout.count("results:") == 1  # only rank 0 reports


def test_a_sharded_run_resumes_from_its_rank_logs(single, tmp_path):
    folder, expected = single
    out = tmp_path / "sharded"
    torchrun(folder, out, "--batch-size", "2", "--workers", "1")
    rank1 = out / "predictions.rank1.jsonl"
    lost = json.loads(rank1.read_text().splitlines()[-1])["file"]
    kept = rank1.read_text().splitlines(keepends=True)[:-1]
    rank1.write_text("".join(kept) + '{"file": "' + lost[:10])  # a kill in the middle of its last write
    (out / "results.json").unlink()

    torchrun(folder, out, "--batch-size", "2", "--workers", "1")
    # The torn line stays until rank 1 next appends to its log; readers skip it.
    files = [record["file"] for p in sorted(out.glob("predictions.rank*.jsonl"))
             for _, record in scan_jsonl(p, repair=False)]
    assert sorted(files) == sorted(str(p.resolve()) for p in folder.glob("*.jpg"))  # only `lost` redone
    assert (out / "results.json").read_text() == (expected / "results.json").read_text()


def test_a_one_process_folder_is_resumed_by_a_sharded_run_and_back(single, tmp_path):
    folder, expected = single
    out = tmp_path / "mixed"
    assert main(run_args(folder, out)) == 0
    log = out / "predictions.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:2]))  # the last two images were never done

    torchrun(folder, out)
    assert rank_lines(out) == {"predictions.jsonl": 2, "predictions.rank0.jsonl": 1,
                               "predictions.rank1.jsonl": 1}
    assert (out / "results.json").read_text() == (expected / "results.json").read_text()
    assert main(run_args(folder, out)) == 0  # one process again: nothing left to do
    assert rank_lines(out)["predictions.jsonl"] == 2
    assert (out / "results.json").read_text() == (expected / "results.json").read_text()
