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


class _NoSharing(dict):
    """A model cache that keeps nothing: every stage loads its own model, as before."""

    def __setitem__(self, key, value) -> None:
        pass


def test_lite_loads_its_yolo_checkpoint_once_for_both_stages(monkeypatch, coco_images):
    import weakref

    import ultralytics

    from bmp.models import yolo

    loads: list[str] = []
    real = ultralytics.YOLO

    def counting_yolo(model, *args, **kwargs):
        loads.append(Path(model).name)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(ultralytics, "YOLO", counting_yolo)
    monkeypatch.setattr(yolo, "_LOADED", weakref.WeakValueDictionary())  # not the module fixture's
    shared = BMP.from_config(LITE, device="cpu", weights_dirs=[MODELS_DIR])
    assert loads == ["yolo11n-pose.pt"]
    assert shared.detector.model is shared.pose.model

    # Same people as with one model per stage: the detector's arguments (iou,
    # max_det, rect) do not leak into the pose crops' calls, nor back.
    monkeypatch.setattr(yolo, "_LOADED", _NoSharing())
    separate = BMP.from_config(LITE, device="cpu", weights_dirs=[MODELS_DIR])
    assert len(loads) == 3 and separate.detector.model is not separate.pose.model
    for path in coco_images[:2]:
        a, b = shared.predict(path), separate.predict(path)
        assert len(a) == len(b) > 0
        for field in ("boxes", "det_scores", "keypoints", "keypoint_scores", "masks"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def test_threads_sharing_the_lite_model_get_their_own_arguments(lite, coco_images):
    """Detector and pose calls from several threads on the one shared YOLO
    model: without the per-model lock in bmp.models.yolo.predict, a call ran
    with another stage's arguments now and then (5 of 24 results differed)."""
    import threading

    reference = {path: lite.predict(path) for path in coco_images}
    found: dict = {}
    errors: list[str] = []

    def work(i: int) -> None:
        try:
            for path in coco_images[i:] + coco_images[:i]:
                found[i, path] = lite.predict(path)
        except Exception as exc:  # reported below, not lost in the thread
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors and len(found) == 4 * len(coco_images)
    for (_, path), people in found.items():
        np.testing.assert_array_equal(people.boxes, reference[path].boxes)
        np.testing.assert_array_equal(people.keypoints, reference[path].keypoints)
