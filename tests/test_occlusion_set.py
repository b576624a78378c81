"""The synthetic occlusion benchmark (tools/make_occlusion_set.py) on the shared COCO images."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from pycocotools.coco import COCO

from tests.conftest import COCO_ANN, COCO_DIR, ROOT


def _make(out, seed=0):
    cmd = [sys.executable, str(ROOT / "tools" / "make_occlusion_set.py"), "--ann", str(COCO_ANN),
           "--images", str(COCO_DIR), "--out", str(out), "--seed", str(seed)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return COCO(str(out / "annotations.json"))


def test_occlusion_set_ground_truth_follows_the_pasted_people(tmp_path):
    coco = _make(tmp_path / "a")
    source = COCO(str(COCO_ANN))
    images = coco.dataset["images"]
    assert len(images) >= 10
    for info in images:
        assert (tmp_path / "a" / "images" / info["file_name"]).is_file()
        anns = coco.imgToAnns[info["id"]]
        donor = anns[-1]  # the pasted person comes last
        pasted = coco.annToMask(donor).astype(bool)
        target = source.anns[info["target_id"]]
        before = source.annToMask(target).astype(bool)
        hidden = (before & pasted).sum() / before.sum()
        assert 0.3 <= hidden <= 0.7, (info["file_name"], hidden)
        originals = {a["id"]: a for a in source.imgToAnns[info["source_image_id"]]}
        for ann, orig in zip(anns[:-1], originals.values(), strict=False):
            mask = coco.annToMask(ann).astype(bool)
            assert not (mask & pasted).any()  # the pasted person covers them
            assert ann["area"] == mask.sum()
            kpts = np.asarray(ann["keypoints"]).reshape(-1, 3)
            was = np.asarray(orig["keypoints"]).reshape(-1, 3)
            xi = np.clip(np.round(was[:, 0]).astype(int), 0, pasted.shape[1] - 1)
            yi = np.clip(np.round(was[:, 1]).astype(int), 0, pasted.shape[0] - 1)
            under = (was[:, 2] > 0) & pasted[yi, xi]
            assert (kpts[under, 2] == 1).all() and (kpts[~under, 2] == was[~under, 2]).all()
    # The set loads as results too (what bmp eval does with it).
    results = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 1.0}
               for a in coco.dataset["annotations"]]
    assert len(coco.loadRes(results).anns) == len(results)


def test_the_same_seed_rebuilds_the_same_set(tmp_path):
    a, b = _make(tmp_path / "a", 3), _make(tmp_path / "b", 3)
    assert json.dumps(a.dataset["annotations"]) == json.dumps(b.dataset["annotations"])
    for info in a.dataset["images"]:
        assert (tmp_path / "a" / "images" / info["file_name"]).read_bytes() == \
            (tmp_path / "b" / "images" / info["file_name"]).read_bytes()
    c = _make(tmp_path / "c", 4)
    assert json.dumps(c.dataset["annotations"]) != json.dumps(a.dataset["annotations"])


def test_lite_loop_gains_on_the_occlusion_set_over_its_first_pass(tmp_path):
    """The README's numbers: on the seed-0 set the lite loop's final output
    beats its iteration 1 (YOLO11n-pose's own single pass) in bbox and
    keypoint AP."""
    from bmp import BMP
    from bmp.coco import instances_to_coco
    from bmp.evaluation.cocoeval import coco_metrics
    from tests.conftest import MODELS_DIR

    coco = _make(tmp_path / "set")
    bmp = BMP.from_config(ROOT / "configs" / "bmp_lite.py", device="cpu", weights_dirs=[MODELS_DIR])
    first, final = [], []
    for info in coco.dataset["images"]:
        records = bmp.predict_iterations(tmp_path / "set" / "images" / info["file_name"])
        first += instances_to_coco(records[0].people, info["id"])
        final += instances_to_coco(records[-1].people, info["id"])
    before = coco_metrics(coco, first, ("bbox", "keypoints"))
    after = coco_metrics(coco, final, ("bbox", "keypoints"))
    print({k: (round(before[k]["AP"], 3), round(after[k]["AP"], 3)) for k in before})
    assert after["bbox"]["AP"] > before["bbox"]["AP"]
    assert after["keypoints"]["AP"] > before["keypoints"]["AP"]
