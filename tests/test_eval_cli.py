"""`bmp eval` end to end with the lite config (real YOLO11n-pose weights) on the
shared COCO images: outputs, exactness, resume after a crash, bad images,
GT-pose mode, and the torch.distributed (gloo) sharded run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bmp.cli import main
from bmp.evaluation.cocoeval import coco_metrics
from bmp.evaluation.inference import LoopPredictor
from tests.conftest import COCO_ANN, COCO_DIR, MODELS_DIR, ROOT
from tests.test_eval_metrics import direct_cocoeval, ochuman_style

LITE = str(ROOT / "configs" / "bmp_lite.py")


def eval_args(ann: Path, out: Path, *extra: str, images: Path = COCO_DIR) -> list[str]:
    return ["eval", "--config", LITE, "--ann", str(ann), "--images", str(images), "--out", str(out),
            "--weights-dir", str(MODELS_DIR), "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def rle_ann(tmp_path_factory) -> Path:
    return ochuman_style(COCO_ANN, tmp_path_factory.mktemp("ann") / "ochuman_style.json")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, rle_ann):
    """One uninterrupted single-process run on OCHuman-style (RLE) annotations."""
    out = tmp_path_factory.mktemp("baseline")
    # Module-scoped, so the autouse env fixture is not active yet: stay offline here too.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BMP_OFFLINE", "1")
        assert main(eval_args(rle_ann, out)) == 0
    return out, json.loads((out / "metrics.json").read_text())


def test_eval_prints_the_per_iteration_table_and_writes_every_output(baseline, rle_ann, capsys):
    out, metrics = baseline
    assert main(eval_args(rle_ann, out)) == 0  # everything done: evaluates again, predicts nothing
    printed = capsys.readouterr().out
    for row in ("| 1 | detector |", "| 1 | pose |", "| 1 | segmenter |", "| 2 | segmenter |"):
        assert row in printed
    assert "loop gain (iteration 1 → 2, segmenter)" in printed
    assert printed.startswith((out / "metrics.md").read_text())
    assert (out / "ap_vs_iteration.png").read_bytes()[:4] == b"\x89PNG"
    assert metrics["images"] == {"selected": 4, "evaluated": 4, "failed": []}
    assert metrics["iou_types"] == ["bbox", "segm", "keypoints"]
    for k in (1, 2):
        results = json.loads((out / f"results_iter{k}.json").read_text())
        assert results and {r["iteration"] for r in results} <= set(range(1, k + 1))
        got = metrics["metrics"]["all"][str(k)]["segmenter"]
        for iou_type in ("bbox", "segm", "keypoints"):
            assert list(got[iou_type].values()) == direct_cocoeval(rle_ann, results, iou_type).tolist()
    # A box-only detector (YOLO-pose) has no masks to score, but it does have keypoints.
    detector = metrics["metrics"]["all"]["1"]["detector"]
    assert detector["segm"] is None and detector["keypoints"]["AP"] > 0.3
    # Each image's record has its seconds per loop stage, for --report.
    records = [json.loads(line) for line in (out / "predictions.rank0.jsonl").read_text().splitlines()]
    assert all(r["times"]["detect"] > 0 and r["times"]["pose"] > 0 for r in records)


class Crash(KeyboardInterrupt):
    """Stands in for the process being killed (not an error bmp may catch per image)."""


def test_resume_after_a_crash_gives_identical_metrics(baseline, rle_ann, tmp_path, monkeypatch):
    out = tmp_path / "out"
    calls: list[str] = []
    original = LoopPredictor.__call__

    def crash_on_third(self, image):
        if len(calls) == 2:
            raise Crash
        calls.append(image.file_name)
        return original(self, image)

    monkeypatch.setattr(LoopPredictor, "__call__", crash_on_third)
    assert main(eval_args(rle_ann, out)) == 130
    log = out / "predictions.rank0.jsonl"
    assert len(log.read_text().splitlines()) == 2
    with open(log, "a") as f:
        f.write('{"file": "000000196141.jpg", "image_id": 196141, "iterations": [{"det')  # torn write

    monkeypatch.setattr(LoopPredictor, "__call__", lambda self, image: calls.append(image.file_name)
                        or original(self, image))
    assert main(eval_args(rle_ann, out)) == 0
    assert calls == ["000000000785.jpg", "000000040083.jpg", "000000196141.jpg", "000000197388.jpg"]
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["metrics"] == baseline[1]["metrics"]
    assert resumed["subsets"] == baseline[1]["subsets"]


def test_bad_and_missing_images_are_counted_not_fatal_and_limit_is_honoured(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted(COCO_DIR.glob("*.jpg")):
        shutil.copy(p, images / p.name)
    (images / "000000040083.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (images / "000000196141.jpg").unlink()
    out = tmp_path / "out"
    assert main(eval_args(COCO_ANN, out, "--limit", "3", images=images)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"]["selected"] == 3 and metrics["images"]["evaluated"] == 1
    failed = {f["file"]: f["error"] for f in metrics["images"]["failed"]}
    assert "cannot decode" in failed["000000040083.jpg"]
    assert "not found" in failed["000000196141.jpg"]
    assert "1 of 3 images evaluated, 2 failed" in capsys.readouterr().out
    assert metrics["subsets"]["all"]["images"] == 1  # only what was predicted is scored


def test_gt_kpts_mode_segments_ground_truth_poses_and_reports_mask_ap(tmp_path, rle_ann, capsys):
    out = tmp_path / "gt"
    assert main(eval_args(rle_ann, out, "--gt-kpts")) == 0
    printed = capsys.readouterr().out
    assert "| GT poses | segmenter |" in printed and "kpt AP" not in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "gt_kpts"
    cell = metrics["metrics"]["all"]["gt"]["segmenter"]
    assert cell["bbox"] is None and cell["keypoints"] is None
    results = json.loads((out / "results_gt_kpts.json").read_text())
    # Every GT person with a labelled keypoint gets exactly one mask.
    labelled = [a for a in json.loads(rle_ann.read_text())["annotations"] if a["num_keypoints"] > 0]
    assert sorted(r["gt_id"] for r in results) == sorted(a["id"] for a in labelled)
    direct = coco_metrics(str(COCO_ANN), results, ["segm"])["segm"]
    assert list(cell["segm"].values()) == list(direct.values())
    assert cell["segm"]["AP"] > 0.1


def test_gt_kpts_prompts_sam_only_at_labelled_keypoints(tmp_path):
    import torch
    from sam2.build_sam import build_sam2

    from bmp.evaluation.dataset import EvalDataset
    from bmp.evaluation.gt_poses import GTPosePredictor, instances_from_gt, use_gt_prompts
    from bmp.models.segmenters import SAM2Segmenter
    from tests.tiny_models import SAM21_T

    torch.manual_seed(2)
    sam = build_sam2(SAM21_T, ckpt_path=None, device="cpu", mode="eval")
    torch.save({"model": sam.state_dict()}, tmp_path / "sam.pt")
    segmenter = use_gt_prompts(SAM2Segmenter(config=SAM21_T, checkpoint=str(tmp_path / "sam.pt")))
    assert segmenter.prompt_config.method == "gt" and segmenter.prompt_config.num_points == 6

    dataset = EvalDataset(COCO_ANN, COCO_DIR)
    image = next(i for i in dataset.images if i.id == 40083)
    anns = [a for a in dataset.gt.imgToAnns[image.id] if a["num_keypoints"] > 0]
    payload = GTPosePredictor(segmenter, dataset)(image)  # sets the image embedding
    assert [r["gt_id"] for r in payload["gt_kpts"]["segmenter"]] == [a["id"] for a in anns]
    people = segmenter.segment(instances_from_gt(anns, (image.height, image.width)))
    for ann, points, labels in zip(anns, people.prompts, people.prompt_labels, strict=True):
        kpts = np.array(ann["keypoints"], np.float32).reshape(17, 3)
        used = points[labels == 1]
        assert 0 < len(used) <= 6
        # every prompt is a labelled (v > 0) GT keypoint
        dist = np.abs(used[:, None] - kpts[None, :, :2]).sum(-1)
        assert (kpts[dist.argmin(1), 2] > 0).all() and (dist.min(1) == 0).all()


def test_sharded_run_with_two_gloo_processes_matches_the_single_process_run(baseline, rle_ann, tmp_path):
    out = tmp_path / "sharded"
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "bmp", *eval_args(rle_ann, out)]
    env = dict(os.environ, BMP_OFFLINE="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| 2 | segmenter |" in done.stdout
    logs = sorted(p.name for p in out.glob("predictions.rank*.jsonl"))
    assert logs == ["predictions.rank0.jsonl", "predictions.rank1.jsonl"]
    per_rank = [len(p.read_text().splitlines()) for p in sorted(out.glob("predictions.rank*.jsonl"))]
    assert per_rank == [2, 2]
    sharded = json.loads((out / "metrics.json").read_text())
    single = baseline[1]
    assert sharded["metrics"] == single["metrics"] and sharded["subsets"] == single["subsets"]
    for k in (1, 2):
        name = f"results_iter{k}.json"
        assert (out / name).read_text() == (baseline[0] / name).read_text()


def test_eval_cli_errors_are_clear(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(eval_args(COCO_ANN, tmp_path / "o", images=empty)) == 2
    assert "does not match annotations.json" in capsys.readouterr().err
    nobody = tmp_path / "nobody.json"
    nobody.write_text(json.dumps(dict(json.loads(COCO_ANN.read_text()), annotations=[])))
    assert main(eval_args(nobody, tmp_path / "o")) == 2
    assert "no person annotations" in capsys.readouterr().err
    assert main(eval_args(COCO_ANN, tmp_path / "o", "--gt-kpts", "--iters", "2")) == 2
    assert "--iters has no effect" in capsys.readouterr().err


def test_changed_settings_refuse_to_mix_with_saved_predictions(baseline, rle_ann, capsys):
    out, _ = baseline
    assert main(eval_args(rle_ann, out, "--iters", "1")) == 2
    assert "changed: num_iters" in capsys.readouterr().err
