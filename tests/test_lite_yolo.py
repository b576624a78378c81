"""The lite config with the real YOLO11n-pose weights on the shared COCO images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bmp import BMP
from bmp.cli import main
from bmp.masks import box_iou
from tests.conftest import COCO_ANN, COCO_DIR, MODELS_DIR, ROOT

LITE = ROOT / "configs" / "bmp_lite.py"


@pytest.fixture(scope="module")
def lite() -> BMP:
    return BMP.from_config(LITE, device="cpu", weights_dirs=[MODELS_DIR])


def test_lite_loop_finds_every_annotated_person_larger_than_32px(lite, coco_images):
    coco = COCO(str(COCO_ANN))
    by_name = {i["file_name"]: i["id"] for i in coco.dataset["images"]}
    for path in coco_images:
        people = lite.predict(path)
        anns = [a for a in coco.imgToAnns[by_name[path.name]] if a["area"] > 32 * 32]
        gt = np.array([a["bbox"] for a in anns], np.float32)
        gt[:, 2:] += gt[:, :2]
        assert len(people), f"nobody found in {path.name}"
        best = box_iou(gt, people.boxes).max(1)
        assert (best >= 0.5).all(), f"{path.name}: missed people, best IoUs {best.round(2)}"
        assert people.masks.sum(0).max() <= 1
        assert people.visibility.min() >= 0 and people.visibility.max() <= 1


def evaluate(results: Path, iou_type: str) -> float:
    gt = COCO(str(COCO_ANN))
    dt = gt.loadRes(str(results))
    ev = COCOeval(gt, dt, iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats[0]


def test_bmp_run_output_evaluates_with_pycocotools(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", str(COCO_DIR), "--config", str(LITE), "--out", str(out),
                 "--weights-dir", str(MODELS_DIR), "--vis", "--device", "cpu"])
    assert code == 0
    results = out / "results.json"
    data = json.loads(results.read_text())
    assert {r["image_id"] for r in data} == {785, 40083, 196141, 197388}
    assert all(len(r["keypoints"]) == 51 and len(r["visibility"]) == 17 for r in data)
    assert len(list((out / "vis").glob("*.jpg"))) == 4
    bbox_ap = evaluate(results, "bbox")
    kpt_ap = evaluate(results, "keypoints")
    segm_ap = evaluate(results, "segm")
    print(f"lite loop on shared COCO: bbox AP {bbox_ap:.3f}, keypoint AP {kpt_ap:.3f}, "
          f"segm AP {segm_ap:.3f}")
    assert bbox_ap > 0.5 and kpt_ap > 0.4
