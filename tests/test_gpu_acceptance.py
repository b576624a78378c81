"""tools/gpu_acceptance.sh's CPU-checkable parts: the merge of bench reports and
the pytest result into one JSON and one Markdown table (bmp.bench_report), the
steps and their time budget, and the refusal to run without a CUDA device."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile

import pytest
import torch

from bmp import bench_report
from bmp.cli import main
from tests.conftest import COCO_DIR, MODELS_DIR, ROOT

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="4">
<testcase classname="tests.test_cuda" name="test_a"/>
<testcase classname="tests.test_cuda" name="test_b"/>
<testcase classname="tests.test_cuda" name="test_bf16"><failure message="boom"/></testcase>
<testcase classname="tests.test_cuda" name="test_c"><skipped message="no"/></testcase>
</testsuite></testsuites>
"""


def test_bench_reports_and_pytest_merge_into_one_json_and_table(tmp_path, capsys):
    report = tmp_path / "bench.json"
    # The lite config: a real `bmp bench --json` report in a few seconds.
    code = main(["bench", "--config", str(ROOT / "configs" / "bmp_lite.py"), "--weights-dir", str(MODELS_DIR),
                 "--images", str(COCO_DIR), "--max-images", "1", "--people", "1", "--warmup", "0",
                 "--compare", "--batch-size", "1,2", "--device", "cpu", "--json", str(report)])
    assert code == 0
    junit = tmp_path / "pytest.xml"
    junit.write_text(JUNIT)
    out = tmp_path / "out"
    capsys.readouterr()
    assert bench_report.main(["--out", str(out), "--pytest", str(junit), "--status", "pytest_cuda=1",
                              "--status", "bench_bf16=0", f"bf16={report}",
                              f"bf16+inductor={tmp_path / 'missing.json'}"]) == 0
    merged = json.loads((out / "acceptance.json").read_text())
    assert merged["devices"] == ["cpu"] and merged["status"] == {"pytest_cuda": 1, "bench_bf16": 0}
    assert merged["pytest"]["passed"] == 2 and merged["pytest"]["failed"] == ["tests.test_cuda::test_bf16"]
    assert merged["runs"]["bf16+inductor"] is None
    rows = {(r["run"], r["mode"], r["input"]): r for r in merged["rows"]}
    assert set(rows) == {("bf16", m, i) for m in ("batched", "naive") for i in ("images", "1 people")}
    assert rows["bf16", "batched", "1 people"]["speedup_vs_naive"] > 0
    assert rows["bf16", "naive", "images"]["speedup_vs_naive"] is None
    table = (out / "acceptance.md").read_text()
    assert "| pytest_cuda | FAILED (1) |" in table and "| bench_bf16 | ok |" in table
    assert "2 passed, 1 failed, 0 errors, 1 skipped" in table and "`tests.test_cuda::test_bf16`" in table
    assert "bench `bf16+inductor`: no report" in table
    assert table.count("| bf16 | batched | ") == 2 and table.count("| bf16 | naive | ") == 2
    batch = {(r["input"], r["batch_size"]): r for r in merged["batch_rows"]}
    assert set(batch) == {(i, b) for i in ("images", "1 people") for b in (1, 2)}
    assert batch["1 people", 1]["ratio"] == 1.0 and batch["1 people", 2]["images_per_s"] > 0
    assert table.count("| bf16 | images | ") == 2 and table.count("| bf16 | 1 people | ") == 2
    assert [c["input"] for c in merged["batch_curves"]] == ["images", "1 people"]
    assert "- batch curve `bf16`, 1 people: " in table
    assert table == capsys.readouterr().out.split("wrote ")[0][:-1]


def test_a_step_stopped_at_its_budget_reads_as_timed_out(tmp_path, capsys):
    merged = bench_report.merge({}, None, {"pytest_cuda": 0, "bench_batch": 124})
    assert "| bench_batch | TIMED OUT (124) |" in bench_report.markdown(merged)


def _script() -> str:
    return (ROOT / "tools" / "gpu_acceptance.sh").read_text()


def test_acceptance_fits_two_calls_of_nine_minutes():
    script = _script()
    declared = re.search(r"BUDGETS=\((.*)\)", script)[1]
    budgets = {k: int(v) for k, v in re.findall(r"\[(\w+)\]=(\d+)", declared)}
    steps = re.findall(r"^\s*step (\w+) ", script, re.M)
    assert steps == ["install", "pytest_cuda", "bench_bf16", "bench_batch", "bench_bf16_inductor"]
    assert set(budgets) == set(steps)
    grace = int(re.search(r"^GRACE=(\d+)$", script, re.M)[1])
    # Call 1 installs from the kit and runs the cuda tests, call 2 the benches;
    # what is left of 540 s covers the CUDA check, the merge and the archive.
    for call in (["install", "pytest_cuda"], ["bench_bf16", "bench_batch", "bench_bf16_inductor"]):
        assert sum(budgets[s] for s in call) + grace * len(call) <= 540 - 30, call
    assert 'timeout -k "$GRACE" "$budget" "$@"' in script


def _fake_venv(tmp_path):
    """An interpreter that only logs its arguments (and so "sees" CUDA), its
    BMP_SHARED and BMP_WITHOUT_PYAV, and has no PyAV."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log, env_log = tmp_path / "calls.log", tmp_path / "env.log"
    fake = venv / "bin" / "python"
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$*" >> {log}\n'
                    f'printf "%s %s\\n" "${{BMP_SHARED:-}}" "${{BMP_WITHOUT_PYAV:-}}" >> {env_log}\n'
                    '[[ "$*" != *"import av"* ]]\n')
    fake.chmod(0o755)
    return venv, log, env_log


def test_acceptance_measures_the_issue_16_batch_curve_of_the_full_config(tmp_path):
    # The script as the GPU machine runs it: the steps, their order and arguments.
    venv, log, _ = _fake_venv(tmp_path)
    out = tmp_path / "out"
    env = {**os.environ, "BMP_VENV": str(venv)}
    result = subprocess.run(["bash", str(ROOT / "tools" / "gpu_acceptance.sh"), str(out)],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    benches = [c for c in calls if c.startswith("-m bmp bench ")]
    [batch] = [c for c in benches if "--batch-size" in c]
    for option in ("--config configs/bmp_rtmdet_vitpose_sam2.py", "--random-init", "--batch-size 1,2,4,8,16",
                   "--people 10", "--iters 2", "--precision bf16", "--device cuda",
                   f"--json {out}/bench_batch.json"):
        assert option in batch
    assert benches.index(batch) == 1  # before the slow inductor run
    [merge] = [c for c in calls if c.startswith("-m bmp.bench_report ")]
    assert "--status bench_batch=0" in merge and f"bf16-batch={out}/bench_batch.json" in merge
    assert (out / "bench_batch.log").is_file()


def test_two_calls_merge_into_one_archive_with_the_kits_data(tmp_path):
    venv, log, env_log = _fake_venv(tmp_path)
    kit = tmp_path / "kit"
    (kit / "shared").mkdir(parents=True)
    (kit / "kit.json").write_text("{}")
    out = tmp_path / "out"
    script = ["bash", str(ROOT / "tools" / "gpu_acceptance.sh"), "--kit", str(kit)]
    env = {**os.environ, "BMP_VENV": str(venv)}
    for steps in ("tests", "bench"):
        result = subprocess.run([*script, "--steps", steps, str(out)], capture_output=True, text=True,
                                env=env, timeout=60)
        assert result.returncode == 0, result.stderr
    assert "PyAV is not installed: the video tests skip" in result.stdout
    merges = [c for c in log.read_text().splitlines() if c.startswith("-m bmp.bench_report ")]
    assert "pytest_cuda=0" in merges[0] and "bench_bf16=0" not in merges[0]
    # The second call's summary holds the first call's tests too.
    assert "--status pytest_cuda=0" in merges[1] and "--status bench_bf16_inductor=0" in merges[1]
    assert set(env_log.read_text().splitlines()[-1].split()) == {str(kit / "shared"), "1"}
    with tarfile.open(out / "acceptance.tar.gz") as archive:
        names = set(archive.getnames())
    assert {"./pytest_cuda.log", "./bench_batch.log", "./status/pytest_cuda"} <= names
    bad = subprocess.run([*script[:2], "--steps", "everything"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "--steps takes tests, bench or all" in bad.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_acceptance_script_refuses_to_run_without_cuda(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "tools" / "gpu_acceptance.sh"), str(tmp_path / "out")],
                            capture_output=True, text=True, env={**os.environ}, timeout=120)
    assert result.returncode == 1 and "sees no CUDA device" in result.stderr
    assert not (tmp_path / "out").exists()
