"""``bmp bench`` on small real architectures: the report holds what the issue
asks for, and the scenes behave like a crowd (hidden people found in pass 2,
duplicates merged) in both schedules."""

from __future__ import annotations

import json

from mmengine.config import Config

from bmp.cli import main
from tests.conftest import COCO_DIR
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
    assert report["random_init"] and report["device"] == "cpu"
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
