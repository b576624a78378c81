"""tools/gpu_acceptance.sh's CPU-checkable parts: the merge of bench reports and
the pytest result into one JSON and one Markdown table (bmp.bench_report), and
the refusal to run without a CUDA device."""

from __future__ import annotations

import json
import os
import subprocess

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
                 "--compare", "--device", "cpu", "--json", str(report)])
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
    assert table.count("| bf16 | ") == 4
    assert table == capsys.readouterr().out.split("wrote ")[0][:-1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_acceptance_script_refuses_to_run_without_cuda(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "tools" / "gpu_acceptance.sh"), str(tmp_path / "out")],
                            capture_output=True, text=True, env={**os.environ}, timeout=120)
    assert result.returncode == 1 and "sees no CUDA device" in result.stderr
    assert not (tmp_path / "out").exists()
