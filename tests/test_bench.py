"""``bmp bench`` on small real architectures: the report holds what the issue
asks for, and the scenes behave like a crowd (hidden people found in pass 2,
duplicates merged) in both schedules; ``--batch-size`` gives the img/s curve of
``BMP.predict_batch``."""

from __future__ import annotations

import json
import re

import pytest
from mmengine.config import Config

from bmp.bench import describe_curve, summarize_curve
from bmp.cli import main
from bmp.loop import BMP
from tests.conftest import COCO_DIR, MODELS_DIR, ROOT
from tests.tiny_models import CSPNEXT_T_UDP, tiny_config


def test_bench_reports_stages_memory_and_scaling_for_both_schedules(tiny_weights, tmp_path, capsys):
    cfg = tiny_config(tiny_weights)
    cfg["pose"].update(config=CSPNEXT_T_UDP, checkpoint=str(tiny_weights / "cspnext_t_udp_random.pth"))
    config = tmp_path / "tiny.py"
    Config(cfg).dump(str(config))
    out = tmp_path / "bench.json"
    code = main(["bench", "--config", str(config), "--images", str(COCO_DIR), "--random-init", "--compare",
                 "--people", "1,5", "--max-images", "1", "--warmup", "0", "--device", "cpu",
                 "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| 5 people |" in printed and "batched is" in printed
    report = json.loads(out.read_text())
    assert report["random_init"] and report["seed"] == 0 and report["device"] == "cpu"
    assert report["peak_rss_mb"] > 0 and report["peak_cuda_mb"] is None
    stages = {"detect", "pose", "nms", "sam_encode", "sam_decode", "exclusive", "mask_out"}
    for mode in ("batched", "naive"):
        data = report["modes"][mode]
        assert data["images"]["runs_timed"] == 1 and stages <= set(data["images"]["ms"])
        for count in (1, 5):
            row = data["scaling"][str(count)]
            # 80 % proposed first, all N later: the hidden ones are added and the
            # repeats merged by pose-NMS, so exactly N people come out.
            assert row["people"] == count
            assert row["images_per_s"] > 0 and row["ms"]["sam_decode"] > 0
    assert set(report["speedup"]) == {"images", "1", "5"}


def test_random_init_is_seeded_so_that_runs_time_the_same_models(tiny_weights):
    """Two ``--random-init`` builds with one seed have the same weights (run 9
    and run 10 of the GPU rehearsal, unseeded, timed a random detector that
    found 0 and then 15 people on the same image); another seed gives others."""
    import argparse

    import torch

    from bmp.bench import _build, _configure

    def weights(seed: int) -> list[torch.Tensor]:
        args = argparse.Namespace(random_init=True, seed=seed, precision=None, compile=None, device="cpu",
                                  weights_dir=[], iters=None)
        bmp = _build(_configure(Config(tiny_config(tiny_weights)), args), args)
        models = (bmp.detector.model, bmp.pose.model, bmp.segmenter.predictor.model)
        return [torch.nn.utils.parameters_to_vector(m.parameters()) for m in models]

    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def _lite_bench(tmp_path, *options: str) -> list[str]:
    """``bmp bench`` of the lite config with its real weights, on the CPU."""
    return ["bench", "--config", str(ROOT / "configs" / "bmp_lite.py"), "--weights-dir", str(MODELS_DIR),
            "--images", str(COCO_DIR), "--device", "cpu", "--json", str(tmp_path / "bench.json"), *options]


def test_batch_sizes_print_img_s_ratio_and_memory_per_size_after_one_warm_up(tmp_path, capsys, monkeypatch):
    calls = []
    predict_batch = BMP.predict_batch

    def counted(self, images, *args, **kwargs):
        calls.append(len(images))
        return predict_batch(self, images, *args, **kwargs)

    monkeypatch.setattr(BMP, "predict_batch", counted)
    code = main(_lite_bench(tmp_path, "--batch-size", "2,1", "--max-images", "1", "--people", "",
                            "--iters", "1"))
    assert code == 0
    # Each size: one warm-up call, then the same two images (the one, cycled).
    assert calls == [1, 1, 1, 2, 2]
    printed = capsys.readouterr().out
    assert "| input | batch | people | img/s | x batch 1 | peak RSS +MB |" in printed
    # | input | batch | people | img/s | ratio | memory |
    line = r"^\| images \| (\d+) \| [\d.]+ \| ([\d.]+) \| ([\d.]+)x \| ([\d.]+) \|$"
    rows = re.findall(line, printed, re.M)
    assert [r[0] for r in rows] == ["1", "2"] and rows[0][2] == "1.00"
    assert all(float(r[1]) > 0 for r in rows)
    assert "memory: peak RSS +MB: rise of the process's peak RSS over" in printed
    assert re.search(r"^images: (flattens at batch 2|does not flatten up to batch 2)", printed, re.M)
    batch = json.loads((tmp_path / "bench.json").read_text())["batch"]
    assert batch["sizes"] == [1, 2] and batch["mode"] == "batched"
    curve = batch["inputs"]["images"]
    assert curve["base_batch_size"] == 1 and curve["target"] is None  # the CPU target needs batch 4
    for row in curve["rows"]:
        assert row["images_timed"] == 2 and row["rss_growth_mb"] >= 0
        assert row["peak_cuda_mb"] is None and row["people"] > 0


def test_every_image_of_a_batch_gets_its_scene_people(tmp_path, capsys):
    # Passes are told apart by what is blacked out, so each image of a batch gets
    # 80 % of the pasted people first and the hidden rest in pass 2.
    code = main(_lite_bench(tmp_path, "--batch-size", "3", "--max-images", "0", "--people", "5",
                            "--iters", "2", "--warmup", "0"))
    assert code == 0
    [row] = json.loads((tmp_path / "bench.json").read_text())["batch"]["inputs"]["5 people"]["rows"]
    assert row["batch_size"] == 3 and row["people"] == 5


@pytest.mark.parametrize("value", ["0", "a", "1,-2", "", "2.5"])
def test_bad_batch_sizes_are_one_line_errors(value, tmp_path, capsys):
    assert main(_lite_bench(tmp_path, "--batch-size", value)) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"bmp: error: --batch-size takes comma-separated integers >= 1 "
                                f"(e.g. 1,4,16), got {value!r}"]


def _timed(size: int, seconds: float) -> dict[str, float]:
    return {"batch_size": size, "images_timed": size, "seconds": seconds}


def test_curve_ratios_flattening_and_targets():
    # img/s 1, 1.6, 2.4, 2.5: +60 %, +50 %, +4 % -> flattens at 8.
    rows = [_timed(1, 1.0), _timed(2, 1.25), _timed(4, 4 / 2.4), _timed(8, 8 / 2.5)]
    curve = summarize_curve(rows, "cuda:0")
    assert [r["ratio"] for r in rows] == [1.0, 1.6, 2.4, 2.5]
    assert curve["flattens_at"] == 8 and curve["base_batch_size"] == 1
    assert curve["target"] == {"rule": "batch 8 >= 2x batch 1", "ratio": 2.5, "met": True}
    cpu = summarize_curve([_timed(1, 1.0), _timed(4, 4 / 0.9)], "cpu")
    assert cpu["flattens_at"] == 4 and cpu["target"]["met"] is False
    assert describe_curve(cpu).endswith("target batch 4 within 5 % of batch 1: NOT met (0.90x)")
    oom = {"batch_size": 4, "error": "out of memory"}
    rising = summarize_curve([_timed(1, 1.0), _timed(2, 1.0), oom], "cpu")
    assert rising["flattens_at"] is None and rising["target"] is None
    assert describe_curve(rising) == "does not flatten up to batch 2"


def test_a_stopped_run_keeps_what_it_measured_in_its_json(tmp_path, monkeypatch):
    # The GPU acceptance stops a bench at its time budget: the report written
    # after each finished input must survive, marked incomplete.
    from bmp import bench, bench_report

    finished = []
    as_dict = bench.Timing.as_dict

    def stop_at_the_second_scene(self):
        if len(finished) == 2:  # the real images, then the 1-person scene
            raise KeyboardInterrupt
        finished.append(self.runs)
        return as_dict(self)

    monkeypatch.setattr(bench.Timing, "as_dict", stop_at_the_second_scene)
    code = main(_lite_bench(tmp_path, "--max-images", "1", "--people", "1,2", "--warmup", "0", "--compare"))
    assert code == 130  # stopped
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["complete"] is False
    assert set(report["modes"]) == {"batched"} and list(report["modes"]["batched"]["scaling"]) == ["1"]
    assert report["peak_rss_mb"] > 0
    table = bench_report.markdown(bench_report.merge({"bf16": report}))
    assert "bench `bf16`: stopped before the end; below is what it finished" in table
    assert "| bf16 | batched | 1 people | 1 |" in table
    monkeypatch.setattr(bench.Timing, "as_dict", as_dict)
    assert main(_lite_bench(tmp_path, "--max-images", "1", "--people", "1", "--warmup", "0")) == 0
    assert json.loads((tmp_path / "bench.json").read_text())["complete"] is True
