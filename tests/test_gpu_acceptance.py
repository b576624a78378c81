"""tools/gpu_acceptance.sh's CPU-checkable parts: the merge of bench reports and
the pytest result into one JSON and one Markdown table (bmp.bench_report), the
steps and their time budget, and the refusal to run without a CUDA device."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import time

import pytest
import torch

from bmp import bench_report
from bmp.cli import main
from tests.conftest import COCO_DIR, MODELS_DIR, ROOT

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="2" tests="5">
<testcase classname="tests.test_cuda" name="test_a" time="1.25"><properties>
<property name="max keypoint shift px" value="0.12 (allowed &lt;= 0.5)"/>
<property name="min mask IoU" value="0.998 (allowed &gt;= 0.99)"/></properties></testcase>
<testcase classname="tests.test_cuda" name="test_b"/>
<testcase classname="tests.test_cuda" name="test_bf16" time="30"><properties>
<property name="pose heatmaps: max error / range" value="0.04 (allowed &lt;= 0.02)"/></properties>
<failure message="assert 0.04 &lt;= 0.02&#10;second line">trace</failure></testcase>
<testcase classname="tests.test_cuda" name="test_c"><skipped message="no | CUDA"/></testcase>
<testcase classname="" name="tests.test_video_cli"><skipped message="collection skipped"/></testcase>
<testcase time="0.000" />
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
    assert "2 passed, 1 failed, 0 errors, 2 skipped" in table and "`tests.test_cuda::test_bf16`" in table
    tests = {t["test"].rpartition("::")[2]: t for t in merged["pytest"]["tests"]}
    assert tests["test_a"]["measured"]["min mask IoU"] == "0.998 (allowed >= 0.99)"
    assert (tests["test_bf16"]["outcome"], tests["test_bf16"]["why"]) == ("failed", "assert 0.04 <= 0.02")
    # What each test measured, beside its tolerance, one row per test:
    assert ("| `test_a` | passed | 1.2 | max keypoint shift px: 0.12 (allowed <= 0.5); "
            "min mask IoU: 0.998 (allowed >= 0.99) |") in table
    assert ("| `test_bf16` | failed: assert 0.04 <= 0.02 | 30.0 | "
            "pose heatmaps: max error / range: 0.04 (allowed <= 0.02) |") in table
    assert "| `test_c` | skipped: no \\| CUDA | 0.0 | - |" in table
    assert "- skipped at collection: `tests.test_video_cli`\n" in table
    assert "| `tests.test_video_cli`" not in table
    assert "bench `bf16+inductor`: no report" in table
    # Two rows each in the runs table and in where the time goes:
    assert table.count("| bf16 | batched | ") == 4 and table.count("| bf16 | naive | ") == 4
    batch = {(r["input"], r["batch_size"]): r for r in merged["batch_rows"]}
    assert set(batch) == {(i, b) for i in ("images", "1 people") for b in (1, 2)}
    assert batch["1 people", 1]["ratio"] == 1.0 and batch["1 people", 2]["images_per_s"] > 0
    assert table.count("| bf16 | images | ") == 2 and table.count("| bf16 | 1 people | ") == 2
    assert [c["input"] for c in merged["batch_curves"]] == ["images", "1 people"]
    assert "- batch curve `bf16`, 1 people: " in table
    assert table == capsys.readouterr().out.split("wrote ")[0][:-1]


def _bench(rate_at_10: float, decode_at_40: float, peak_mb: float) -> dict:
    """A `bmp bench --json` report of the batched loop at 10 and 40 people."""
    def row(people, rate, decode):
        stages = {"detect": 10.0, "pose": 5.0, "sam_decode": decode}
        return {"ms": stages, "total_ms": 1000 / rate, "images_per_s": rate, "people": people,
                "runs_timed": 3}

    empty = {"ms": {}, "total_ms": 0, "images_per_s": None, "people": 0, "runs_timed": 0}
    scaling = {"10": row(10, rate_at_10, 4.0), "40": row(40, rate_at_10 / 3, decode_at_40)}
    return {"device": "cuda:0", "peak_cuda_mb": peak_mb,
            "modes": {"batched": {"images": empty, "scaling": scaling}}}


def test_the_summary_sets_issue_21s_targets_beside_what_was_measured():
    curve = {"rows": [], "base_batch_size": 1, "flattens_at": None,
             "target": {"rule": "batch 8 >= 2x batch 1", "ratio": 2.4, "met": True}}
    runs = {"bf16": _bench(32.0, 12.5, 3100.0), "bf16+inductor": _bench(24.0, 6.0, 9000.0),
            "bf16-batch": {**_bench(1, 1, 5000.0), "modes": {}, "batch": {"inputs": {"10 people": curve}}}}
    merged = bench_report.merge(runs)
    table = bench_report.markdown(merged)
    for line in ("| >= 25 img/s at 10 people, 2 iterations | bf16 | 32 | met |",
                 "| >= 25 img/s at 10 people, 2 iterations | bf16+inductor | 24 | NOT met |",
                 "| SAM decode for 40 people < 10 ms | bf16 | 12.5 | NOT met |",
                 "| SAM decode for 40 people < 10 ms | bf16+inductor | 6 | met |",
                 "| peak CUDA memory < 8 GB (7629.4 MiB) | bf16+inductor | 9000 | NOT met |",
                 "| peak CUDA memory < 8 GB (7629.4 MiB) | bf16-batch | 5000 | met |",
                 "| batch 8 >= 2x batch 1 | bf16-batch, 10 people | 2.4 | met |"):
        assert line in table
    assert table.count("| >= 25 img/s at 10 people") == 2  # a run without the 10-people row claims nothing
    # Where the time goes: every stage, and "other" for what no stage timer covers.
    assert "| run | mode | input | detect | pose | sam_decode | other | total |" in table
    assert "| bf16 | batched | 10 people | 10 | 5 | 4 | 12.25 | 31.25 |" in table
    nothing = bench_report.markdown(bench_report.merge({"bf16": None}))
    assert "| SAM decode for 40 people < 10 ms | - | - | not measured |" in nothing


def test_a_step_stopped_at_its_budget_reads_as_timed_out(tmp_path, capsys):
    merged = bench_report.merge({}, None, {"pytest_cuda": 0, "bench_batch": 124})
    assert "| bench_batch | TIMED OUT (124) |" in bench_report.markdown(merged)


def _script() -> str:
    return (ROOT / "tools" / "gpu_acceptance.sh").read_text()


def test_each_call_of_the_acceptance_fits_nine_minutes():
    script = _script()
    declared = re.search(r"BUDGETS=\((.*)\)", script)[1]
    budgets = {k: int(v) for k, v in re.findall(r"\[(\w+)\]=(\d+)", declared)}
    steps = re.findall(r"^\s*step (\w+) ", script, re.M)
    assert steps == ["install", "pytest_cuda", "bench_bf16", "bench_batch", "bench_bf16_inductor"]
    assert set(budgets) == set(steps)
    grace, reserve, least = (int(re.search(rf"^{name}=(\d+)$", script, re.M)[1])
                             for name in ("GRACE", "RESERVE", "MIN_STEP"))
    # Call 1 (install, the cuda tests) and call 2 (the benches) default to
    # --within 540, which cuts each step to what is left (tested below).
    assert "[[ $STEPS == all ]] || WITHIN=$((540 * SCALE))" in script
    assert all(budgets[step] + grace + reserve <= 540 for step in steps)
    # A full-length install still leaves the cuda tests time, and the first two benches the third.
    assert budgets["install"] + grace + least + grace + reserve <= 540
    assert budgets["bench_bf16"] + budgets["bench_batch"] + 2 * grace + least + grace + reserve <= 540
    # SIGINT first: a stopped pytest still writes its junit file.
    assert 'timeout -s INT -k "$GRACE" "$budget" "$@"' in script


def _fake_venv(tmp_path, slow_batch_bench: bool = False, real_merge: bool = False, slow_tests: bool = False):
    """An interpreter that only logs its arguments (and so "sees" CUDA), its
    BMP_SHARED, BMP_WITHOUT_PYAV and BMP_CUDA_TESTS_DEVICE, and has no PyAV.
    ``slow_batch_bench``: the batch-curve bench takes 100 s; ``slow_tests``: so
    does pytest; ``real_merge``: bmp.bench_report really runs."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log, env_log = tmp_path / "calls.log", tmp_path / "env.log"
    fake = venv / "bin" / "python"
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$*" >> {log}\n'
                    f'printf "%s %s tests-on=%s\\n" "${{BMP_SHARED:-}}" "${{BMP_WITHOUT_PYAV:-}}" '
                    f'"${{BMP_CUDA_TESTS_DEVICE:-}}" >> {env_log}\n'
                    + ('[[ "$*" == *"--batch-size"* ]] && exec sleep 100\n' if slow_batch_bench else "")
                    + ('[[ "$*" == "-m pytest "* ]] && exec sleep 100\n' if slow_tests else "")
                    + (f'[[ "$1 $2" == "-m bmp.bench_report" ]] && exec {sys.executable} "$@"\n'
                       if real_merge else "")
                    + '[[ "$*" != *"import av"* ]]\n')
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
    merge = [c for c in calls if c.startswith("-m bmp.bench_report ")][-1]  # one after every step
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
    assert "--status pytest_cuda=0" in merges[-1] and "--status bench_bf16_inductor=0" in merges[-1]
    assert set(env_log.read_text().splitlines()[-1].split()) == {str(kit / "shared"), "1", "tests-on="}
    with tarfile.open(out / "acceptance.tar.gz") as archive:
        names = set(archive.getnames())
    assert {"./pytest_cuda.log", "./bench_batch.log", "./status/pytest_cuda"} <= names
    bad = subprocess.run([*script[:2], "--steps", "everything"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "--steps takes tests, bench or all" in bad.stderr
    bad = subprocess.run([*script[:2], "--within", "9m"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "--within takes whole seconds, not '9m'" in bad.stderr


def _timed_call(venv, out, *options: str) -> dict[str, str]:
    """One acceptance call with a fake interpreter, which must fail (a step ran
    past its budget) inside a minute; each step's status."""
    env = {**os.environ, "BMP_VENV": str(venv)}
    started = time.monotonic()
    result = subprocess.run(["bash", str(ROOT / "tools" / "gpu_acceptance.sh"), *options, str(out)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert time.monotonic() - started < 60
    assert result.returncode == 1, result.stdout + result.stderr
    return {f.name: f.read_text().strip() for f in (out / "status").iterdir()}


def _stopped_at(out, step: str) -> int:
    """The budget a step was stopped at, in seconds."""
    return int(re.search(r"stopped at its budget of (\d+)s", (out / f"{step}.log").read_text())[1])


def test_a_call_ends_within_its_limit_and_leaves_what_finished_where_told(tmp_path):
    """--within: a device tool stops a command at its limit and brings back only
    what its output folder holds. The steps shrink to fit the call, a step left
    too little time is not run, and --results gets the merged report after every
    step, so what finished comes back even if the call is stopped from outside."""
    venv, log, _ = _fake_venv(tmp_path, slow_batch_bench=True, real_merge=True)
    out, results = tmp_path / "out", tmp_path / "results"
    status = _timed_call(venv, out, "--steps", "bench", "--within", "60", "--results", str(results))
    assert status == {"bench_bf16": "0", "bench_batch": "124", "bench_bf16_inductor": bench_report.NOT_RUN}
    # Its own 120 s shrunk to 60 - 10 (grace) - 20 (reserve) - what bench_bf16 and its report took
    # (up to 15 s on a busy machine before bench_batch would be NOT RUN instead).
    assert 15 <= _stopped_at(out, "bench_batch") <= 30
    merges = [c for c in log.read_text().splitlines() if c.startswith("-m bmp.bench_report ")]
    assert len(merges) == 3 and "--status bench_bf16=0" in merges[0] and "bench_batch=" not in merges[0]
    assert sorted(f.name for f in results.iterdir()) == [
        "acceptance.json", "acceptance.md", "acceptance.tar.gz"]
    table = (results / "acceptance.md").read_text()
    assert "| bench_batch | TIMED OUT (124) |" in table
    assert "| bench_bf16_inductor | NOT RUN (no time left in the call) |" in table
    with tarfile.open(results / "acceptance.tar.gz") as archive:
        assert "./bench_bf16_inductor.log" in archive.getnames()


def test_in_one_call_the_cuda_tests_leave_the_target_benches_their_budgets(tmp_path):
    """A device window of 15 minutes, a start included, holds one call of under
    10, and the machine goes back 30 s after it: install, tests and benches in
    one call, where slow tests must not eat the benches that hold the targets."""
    venv, log, _ = _fake_venv(tmp_path, slow_tests=True, real_merge=True)
    out = tmp_path / "out"
    # 280 s = the two benches' budgets and graces (230 s) + grace and reserve (30 s) + 20 s.
    status = _timed_call(venv, out, "--within", "280")
    assert status == {"pytest_cuda": "124", "bench_bf16": "0", "bench_batch": "0", "bench_bf16_inductor": "0"}
    assert 5 <= _stopped_at(out, "pytest_cuda") <= 20
    benches = [c for c in log.read_text().splitlines() if c.startswith("-m bmp bench ")]
    assert len(benches) == 3
    # Called alone, the tests keep their whole call: no bench comes after them.
    alone = tmp_path / "alone"
    assert _timed_call(venv, alone, "--steps", "tests", "--within", "60") == {"pytest_cuda": "124"}
    assert 20 <= _stopped_at(alone, "pytest_cuda") <= 30


def test_the_compiling_cuda_test_runs_last():
    # pytest runs a file's tests in order: a budget that stops pytest in the
    # compiling test (132 s of rehearsal run 17's 207) leaves every other one run.
    names = re.findall(r"^def (test_\w+)", (ROOT / "tests" / "test_cuda.py").read_text(), re.M)
    assert names[-1] == "test_inductor_keeps_the_eager_heatmaps_and_masks_on_cuda"


def test_a_cpu_rehearsal_runs_the_cuda_tests_on_the_cpu(tmp_path):
    # --device cpu (tools/rehearse_target.sh) is a dry run of tests/test_cuda.py, not 15 skips.
    venv, log, env_log = _fake_venv(tmp_path)
    env = {**os.environ, "BMP_VENV": str(venv)}
    script = ["bash", str(ROOT / "tools" / "gpu_acceptance.sh"), "--device", "cpu", "--steps", "tests",
              str(tmp_path / "out")]
    result = subprocess.run(script, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    pytest_call = next(i for i, c in enumerate(calls) if c.startswith("-m pytest -m cuda "))
    assert env_log.read_text().splitlines()[pytest_call].endswith(" tests-on=cpu")


def test_a_rehearsal_whose_kit_fails_stops_there_with_one_line(tmp_path):
    # Every later step needs the kit (and the stand-in): going on would only fail
    # them all for the same reason, as run 8's full disk did for 15 minutes.
    work = tmp_path / "work"
    # A stand-in Python that cannot make a venv: reaching the next step fails it too.
    env = {**os.environ, "TARGET_FILE": str(tmp_path / "missing.txt"), "PYTHON312": "/bin/false"}
    result = subprocess.run(["bash", str(ROOT / "tools" / "rehearse_target.sh"), str(work)],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"rehearse_target: step kit failed (exit 2), and every later step needs it: stopped; "
        f"see {work}/rehearsal.md")
    assert (work / "times.tsv").read_text().split("\t")[::2] == ["kit", "2\n"]
    assert sorted(p.name for p in work.iterdir()) == ["rehearsal.md", "times.tsv"]
    report = (work / "rehearsal.md").read_text()
    assert "kit: none" in report and "stand-in: none" in report and "| kit | " in report


def test_the_stand_in_target_holds_the_whole_list_but_what_needs_a_gpu(tmp_path):
    # The first GPU run broke on a target package the kit does not count on
    # (transformers, read by mmpretrain), which a stand-in of only those lacked.
    def stand_in(target_file):
        script = ROOT / "tools" / "rehearse_target.sh"
        result = subprocess.run(["bash", str(script), "--stand-in-requirements"], capture_output=True,
                                text=True, timeout=60, env={**os.environ, "TARGET_FILE": str(target_file)})
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    target = tmp_path / "target.txt"
    target.write_text("# Python 3.12.3\n\ntorch==2.11.0\ntransformers==5.17.0\npytest-xdist\nnvidia-cublas\n"
                      "nvidia-nvtx\nnvidia-ml-py\ncuda-toolkit\ncupy-cuda13x==14.2.0\njax==0.11.2\n"
                      "jax-cuda13-plugin==0.11.2\nnumba\nnumba-cuda\nmpi4py\n")
    assert stand_in(target) == ["torch==2.11.0", "transformers==5.17.0", "pytest-xdist", "nvidia-ml-py",
                                "jax==0.11.2", "numba"]
    shipped = stand_in(ROOT / "tools" / "targets" / "h200-cuda13-py312.txt")
    assert {"torch==2.11.0", "numpy==2.5.2", "transformers==5.17.0", "timm", "pytest-xdist"} <= set(shipped)
    assert len(shipped) == 173


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_acceptance_script_refuses_to_run_without_cuda(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "tools" / "gpu_acceptance.sh"), str(tmp_path / "out")],
                            capture_output=True, text=True, env={**os.environ}, timeout=120)
    assert result.returncode == 1 and "sees no CUDA device" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU runs these tests for real")
def test_the_cuda_tests_pass_a_cpu_dry_run_and_report_what_they_measured(tmp_path):
    """tests/test_cuda.py on the CPU (BMP_CUDA_TESTS_DEVICE=cpu), as the
    rehearsal runs it: a mistake in a test is found here, not in a GPU window;
    every test that runs records what it measured for acceptance.md."""
    junit = tmp_path / "pytest_cuda.xml"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "--basetemp",
         str(tmp_path / "basetemp"), "--junitxml", str(junit), "tests/test_cuda.py"],
        cwd=ROOT, env={**os.environ, "BMP_CUDA_TESTS_DEVICE": "cpu"}, capture_output=True, text=True,
        timeout=1500)
    assert result.returncode == 0, result.stdout[-4000:]
    report = bench_report.load_pytest(junit)
    outcomes = {t["test"].rpartition("::")[2]: t["outcome"] for t in report["tests"]}
    assert {name for name, outcome in outcomes.items() if outcome == "skipped"} == {
        "test_mask_out_on_cuda_does_not_sync", "test_host_syncs_do_not_grow_with_the_number_of_people"}
    ran = [t for t in report["tests"] if t["outcome"] == "passed"]
    assert len(ran) == 7 and all(t["measured"] for t in ran)
    table = bench_report.markdown(bench_report.merge({}, report))
    assert "| `test_bf16_keeps_the_fp32_heatmaps_and_masks_with_the_full_architectures` | passed |" in table
    assert "pose heatmaps: max error / range: " in table and "(not checked)" in table
