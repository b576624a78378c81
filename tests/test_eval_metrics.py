"""`bmp eval`'s scoring without models: ground truth as results, hand-perturbed
results against pycocotools called directly, OCHuman subsets, dataset errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bmp.evaluation.dataset import DatasetError, EvalDataset
from bmp.evaluation.evaluate import evaluate_records
from bmp.evaluation.records import LOOP_STAGES
from bmp.evaluation.report import markdown_table, plot_ap
from bmp.masks import encode_rle
from tests.conftest import COCO_ANN, COCO_DIR

IOU_TYPES = ("bbox", "segm", "keypoints")


def ochuman_style(src: Path, dst: Path) -> Path:
    """The shared COCO annotations as OCHuman ships them: compressed RLE masks
    (string counts) and no ``iscrowd`` field."""
    data = json.loads(src.read_text())
    coco = COCO(str(src))
    for ann in data["annotations"]:
        ann["segmentation"] = encode_rle(coco.annToMask(ann).astype(bool))
        del ann["iscrowd"]
    dst.write_text(json.dumps(data))
    return dst


@pytest.fixture(params=["polygons", "rle"])
def ann_file(request, tmp_path) -> Path:
    if request.param == "polygons":
        return COCO_ANN
    return ochuman_style(COCO_ANN, tmp_path / "ochuman_style.json")


def gt_as_results(ann: Path) -> dict[int, list[dict]]:
    """Every GT person as a result with score 1, per image id (a person without
    labelled keypoints has no pose to report)."""
    data = json.loads(ann.read_text())
    out: dict[int, list[dict]] = {i["id"]: [] for i in data["images"]}
    for a in data["annotations"]:
        result = {"image_id": a["image_id"], "category_id": 1, "score": 1.0, "bbox": a["bbox"],
                  "segmentation": a["segmentation"], "iteration": 1}
        if a.get("num_keypoints"):
            result["keypoints"] = a["keypoints"]
        out[a["image_id"]].append(result)
    return out


def as_records(results: dict[int, list[dict]]) -> dict[int, dict]:
    """Loop-mode records of one iteration in which detector, pose and segmenter
    all output ``results``."""
    records = {}
    for image_id, people in results.items():
        people = [dict(p, det_index=i) for i, p in enumerate(people)]
        records[image_id] = {"iterations": [{"detections": copy.deepcopy(people), "people": people}]}
    return records


def direct_cocoeval(ann: Path, results: list[dict], iou_type: str) -> np.ndarray:
    """pycocotools by the book; only ``iscrowd`` is filled in, which COCOeval
    reads but OCHuman files lack."""
    data = json.loads(ann.read_text())
    for a in data["annotations"]:
        a.setdefault("iscrowd", 0)
    gt = COCO()
    gt.dataset = data
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats


def test_ground_truth_as_results_scores_ap_one(ann_file):
    dataset = EvalDataset(ann_file, COCO_DIR)
    assert dataset.iou_types == IOU_TYPES and not dataset.skipped
    metrics = evaluate_records(dataset, as_records(gt_as_results(ann_file)), [1], LOOP_STAGES)
    for stage in LOOP_STAGES:
        cell = metrics["metrics"]["all"]["1"][stage]
        for iou_type in IOU_TYPES:
            assert cell[iou_type]["AP"] == 1.0, (stage, iou_type)
            assert cell[iou_type]["AP50"] == 1.0


def perturbed(ann: Path, seed: int = 0) -> list[dict]:
    """GT moved, reshaped and rescored by hand: one person dropped, one false positive."""
    rng = np.random.default_rng(seed)
    coco = COCO(str(ann))
    results = []
    for a in coco.dataset["annotations"]:
        dx, dy = rng.integers(-6, 7, size=2)
        x, y, w, h = a["bbox"]
        mask = np.roll(coco.annToMask(a), (int(dy), int(dx)), axis=(0, 1)).astype(bool)
        kpts = np.array(a["keypoints"], np.float64).reshape(17, 3)
        kpts[:, :2] += rng.normal(0, 4, size=(17, 2))
        kpts[:, 2] = rng.uniform(0.2, 1.0, 17)
        results.append({
            "image_id": a["image_id"], "category_id": 1, "score": float(rng.uniform(0.3, 1.0)),
            "bbox": [x + dx, y + dy, w * rng.uniform(0.85, 1.15), h * rng.uniform(0.85, 1.15)],
            "segmentation": encode_rle(mask), "keypoints": kpts.reshape(-1).round(2).tolist(),
            "iteration": 1,
        })
    results.pop(3)
    fp = copy.deepcopy(results[0])
    fp["bbox"] = [5.0, 5.0, 60.0, 120.0]
    fp["score"] = 0.95
    results.append(fp)
    return results


def test_perturbed_results_give_exactly_the_numbers_of_pycocotools(ann_file):
    results = perturbed(ann_file)
    by_image: dict[int, list[dict]] = {i: [] for i in COCO(str(ann_file)).getImgIds()}
    for r in results:
        by_image[r["image_id"]].append(r)
    dataset = EvalDataset(ann_file, COCO_DIR)
    metrics = evaluate_records(dataset, as_records(by_image), [1], LOOP_STAGES)
    cell = metrics["metrics"]["all"]["1"]["segmenter"]
    ordered = [r for image_id in sorted(by_image) for r in by_image[image_id]]
    for iou_type in IOU_TYPES:
        direct = direct_cocoeval(ann_file, ordered, iou_type)
        assert list(cell[iou_type].values()) == direct.tolist(), iou_type
        assert 0.05 < cell[iou_type]["AP"] < 0.99  # really perturbed


def crowded(tmp_path: Path) -> Path:
    """Image 785 (one person) with two shifted copies of its person: the copies
    make a Moderate pair (MaxIoU ~0.6) and a Hard one (~0.9) by box overlap."""
    data = json.loads(COCO_ANN.read_text())
    person = next(a for a in data["annotations"] if a["image_id"] == 785)
    x, y, w, h = person["bbox"]
    for new_id, shift in ((9001, 0.25 * w), (9002, 0.03 * w)):
        copy_ = copy.deepcopy(person)
        copy_["id"] = new_id
        copy_["bbox"] = [x + shift, y, w, h]
        copy_["keypoints"] = [v + shift if i % 3 == 0 and v else v for i, v in enumerate(person["keypoints"])]
        copy_["segmentation"] = [[v + shift if i % 2 == 0 else v for i, v in enumerate(poly)]
                                 for poly in person["segmentation"]]
        data["annotations"].append(copy_)
    path = tmp_path / "crowded.json"
    path.write_text(json.dumps(data))
    return path


def test_occlusion_subsets_follow_the_ochuman_protocol(tmp_path):
    ann = crowded(tmp_path)
    dataset = EvalDataset(ann, COCO_DIR)
    max_iou = dataset.max_ious()
    person = next(a["id"] for a in dataset.gt.dataset["annotations"] if a["image_id"] == 785
                  and a["id"] not in (9001, 9002))
    assert 0.75 <= max_iou[9002] == max_iou[person] and 0.5 <= max_iou[9001] < 0.75
    subsets = {s.name: s for s in dataset.subsets()}
    assert subsets["hard"].img_ids == {785} and subsets["hard"].num_instances == 2
    assert subsets["moderate"].img_ids == {785} and subsets["moderate"].num_instances == 1

    results = perturbed(ann, seed=1)
    by_image: dict[int, list[dict]] = {i: [] for i in dataset.gt.getImgIds()}
    for r in results:
        by_image[r["image_id"]].append(r)
    metrics = evaluate_records(dataset, as_records(by_image), [1], LOOP_STAGES)
    assert metrics["subsets"]["hard"] == {"description": "MaxIoU >= 0.75", "images": 1, "instances": 2}
    # The subset file OCHuman's toolkit would write: in-range persons of the images holding any.
    data = json.loads(ann.read_text())
    data["images"] = [i for i in data["images"] if i["id"] == 785]
    data["annotations"] = [a for a in data["annotations"] if a["id"] in (person, 9002)]
    hard_file = tmp_path / "hard.json"
    hard_file.write_text(json.dumps(data))
    for iou_type in IOU_TYPES:
        direct = direct_cocoeval(hard_file, by_image[785], iou_type)
        got = metrics["metrics"]["hard"]["1"]["segmenter"][iou_type]
        assert list(got.values()) == direct.tolist(), iou_type


def test_table_and_plot_show_every_iteration(tmp_path):
    records = as_records(gt_as_results(COCO_ANN))
    for record in records.values():  # a second iteration that found nobody new
        record["iterations"].append({"detections": [], "people": record["iterations"][0]["people"]})
    dataset = EvalDataset(COCO_ANN, COCO_DIR)
    metrics = {
        "mode": "loop", "config": "cfg.py", "num_iters": 2, "dataset": {"ann": "a.json", "images": "."},
        "iou_types": list(dataset.iou_types), "skipped": {},
        "images": {"selected": 4, "evaluated": 4, "failed": []},
        **evaluate_records(dataset, records, [1, 2], LOOP_STAGES),
    }
    table = markdown_table(metrics)
    assert "| 2 | segmenter | 14 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 |" in table
    assert "| 2 | detector | 14 |" in table
    assert "loop gain (iteration 1 → 2, segmenter): bbox AP +0.000" in table
    assert "Hard (MaxIoU >= 0.75): no ground-truth persons" in table
    assert plot_ap(metrics, tmp_path / "ap.png")
    assert (tmp_path / "ap.png").read_bytes()[:4] == b"\x89PNG"


# Datasets it must accept or refuse clearly ------------------------------------------


def write(tmp_path: Path, data: dict, name: str = "ann.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_crowdpose_style_14_keypoints_skip_keypoint_ap_with_a_reason(tmp_path):
    data = json.loads(COCO_ANN.read_text())
    data["categories"][0]["keypoints"] = data["categories"][0]["keypoints"][3:]
    for a in data["annotations"]:
        a["keypoints"] = a["keypoints"][9:]
    ann = write(tmp_path, data)
    dataset = EvalDataset(ann, COCO_DIR)
    assert dataset.iou_types == ("bbox", "segm")
    assert "14 keypoints" in dataset.skipped["keypoints"]
    metrics = evaluate_records(dataset, as_records(gt_as_results(ann)), [1], ["segmenter"])
    cell = metrics["metrics"]["all"]["1"]["segmenter"]
    assert cell["bbox"]["AP"] == cell["segm"]["AP"] == 1.0 and "keypoints" not in cell


def test_cihp_style_masks_without_keypoints_or_area_are_accepted(tmp_path):
    data = json.loads(ochuman_style(COCO_ANN, tmp_path / "rle.json").read_text())
    for a in data["annotations"]:
        for key in ("keypoints", "num_keypoints", "area", "bbox"):
            del a[key]
    dataset = EvalDataset(write(tmp_path, data), COCO_DIR)
    assert dataset.iou_types == ("bbox", "segm")
    assert "no keypoints" in dataset.skipped["keypoints"]
    first = dataset.gt.dataset["annotations"][0]
    assert first["area"] == mask_utils.area(first["segmentation"]) and len(first["bbox"]) == 4


def test_dataset_errors_are_clear(tmp_path):
    with pytest.raises(DatasetError, match="annotation file not found"):
        EvalDataset(tmp_path / "nope.json", COCO_DIR)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        EvalDataset(tmp_path / "bad.json", COCO_DIR)

    data = json.loads(COCO_ANN.read_text())
    cars = dict(data, categories=[{"id": 3, "name": "car"}, {"id": 4, "name": "bus"}])
    with pytest.raises(DatasetError, match="no single 'person' category"):
        EvalDataset(write(tmp_path, cars), COCO_DIR)
    nobody = dict(data, annotations=[])
    with pytest.raises(DatasetError, match="has no person annotations"):
        EvalDataset(write(tmp_path, nobody), COCO_DIR)

    with pytest.raises(DatasetError, match="images folder not found"):
        EvalDataset(COCO_ANN, tmp_path / "missing")
    other = tmp_path / "other_images"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="does not match annotations.json: none of its 4 images"):
        EvalDataset(COCO_ANN, other)


def test_some_missing_images_are_listed_not_fatal(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for p in sorted(COCO_DIR.glob("*.jpg"))[:3]:
        (folder / p.name).symlink_to(p)
    dataset = EvalDataset(COCO_ANN, folder)
    assert [i.id for i in dataset.missing_images] == [197388]
