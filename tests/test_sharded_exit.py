"""The end of a sharded video job (issue 22, item 6): `torchrun --nproc-per-node 2
-m bmp video a.mp4 b.mp4` finished its work, then aborted now and then with
"terminate called without an active exception" (SIGABRT) on a loaded machine.

A thread still running when the interpreter exits is stopped as it takes the
GIL back; inside C++ (a gloo worker releasing a collective's tensors) that
aborts the process. The exit is now deterministic: the frame reader's thread is
joined when its video ends, and the ranks meet once more and leave the gloo
group before the interpreter exits (bmp.distributed.process_group).

The failure is a race, so the test repeats the run under load: a CPU-burning
process competes with the two ranks for the cores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.test_video_batching import CLIPS, video_args

#: Runs of the sharded job. The abort was seen in 1 of 5 runs under load; were it
#: still there at that rate, 6 clean runs would happen by chance with probability
#: 0.8**6 = 0.26. Each run takes 20-35 s on 2 busy cores, so 6 keep the test near
#: 3 minutes; BMP_EXIT_REPEATS=20 (0.8**20 = 0.01) gives a firmer answer.
REPEATS = int(os.environ.get("BMP_EXIT_REPEATS", "6"))


def test_a_sharded_video_job_exits_cleanly_every_time_under_load(tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    env = dict(os.environ, BMP_OFFLINE="1", PYTHONPATH=str(ROOT), PYTHONFAULTHANDLER="1")
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        for attempt in range(REPEATS):
            out = tmp_path / f"run{attempt}"
            cmd = [str(torchrun), "--standalone", "--nproc-per-node=2", "-m", "bmp",
                   *video_args(CLIPS, out, "--workers", "1")]
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
            report = f"run {attempt + 1} of {REPEATS}: " + done.stdout[-2000:] + done.stderr[-4000:]
            assert done.returncode == 0, report
            assert "terminate called" not in done.stderr and "Fatal Python error" not in done.stderr, report
            assert all((out / clip.stem / "summary.json").is_file() for clip in CLIPS), report
    finally:
        burner.kill()
        burner.wait(timeout=30)
