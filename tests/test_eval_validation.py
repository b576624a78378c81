"""`bmp eval` refuses what it cannot score honestly, before any image runs:
malformed annotation files (one line, exit 2) and file names that leave the
images folder (refused per image, named in the report). No model is loaded:
the predictor is a stand-in that records which files it was asked to read."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import bmp.evaluation.cli as eval_cli
from bmp.cli import main
from bmp.evaluation.dataset import DatasetError, EvalDataset
from bmp.evaluation.report import markdown_table
from tests.conftest import COCO_ANN, COCO_DIR, ROOT

LITE = str(ROOT / "configs" / "bmp_lite.py")
COCO = json.loads(COCO_ANN.read_text())


class Recorder:
    """A predictor without a model: every image it reads is kept, no one is found."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def __call__(self, image: Any) -> None:
        self.paths.append(image.path)
        image.path.read_bytes()

    def to_record(self, output: Any, image: Any) -> dict[str, Any]:
        return {"iterations": [{"detections": [], "people": []}]}

    def progress(self) -> str:
        return ""


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    predictor = Recorder()
    monkeypatch.setattr(eval_cli, "_build_predictor", lambda *args: predictor)
    return predictor


@pytest.fixture
def no_model(monkeypatch) -> None:
    def refuse(*args: Any) -> None:
        raise AssertionError("models were built for an annotation file that should be refused")

    monkeypatch.setattr(eval_cli, "_build_predictor", refuse)


def write(tmp_path: Path, data: Any, name: str = "ann.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def eval_args(ann: Path, out: Path, *extra: str, images: Path = COCO_DIR) -> list[str]:
    return ["eval", "--config", LITE, "--ann", str(ann), "--images", str(images), "--out", str(out),
            "--device", "cpu", "--batch-size", "1", "--workers", "0", *extra]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("bmp: error:")]
    assert len(errors) == 1 and "Traceback" not in "".join(err), err
    return errors[0]


# Item 5: the annotation file -------------------------------------------------------


def test_duplicate_image_ids_are_refused_before_any_model_or_image(tmp_path, capsys, no_model):
    data = copy.deepcopy(COCO)
    data["images"][1]["id"] = 785  # 40083 -> 785: one image would never run, the other twice
    for a in data["annotations"]:
        a["image_id"] = 785 if a["image_id"] == 40083 else a["image_id"]
    out = tmp_path / "out"
    assert main(eval_args(write(tmp_path, data), out)) == 2
    assert "images repeat the id 785" in one_line_error(capsys)
    assert not (out / "predictions.rank0.jsonl").exists()


def test_a_string_image_id_is_refused_before_any_image_runs(tmp_path, capsys, no_model):
    data = copy.deepcopy(COCO)
    data["images"][0]["id"] = "785"  # pycocotools would assert after every image has run
    assert main(eval_args(write(tmp_path, data), tmp_path / "out")) == 2
    assert "images[0]: id is '785' (str), not an integer" in one_line_error(capsys)


def test_a_file_whose_only_category_is_not_person_is_refused_unless_chosen(tmp_path, capsys, no_model):
    data = copy.deepcopy(COCO)
    data["categories"] = [dict(data["categories"][0], id=3, name="car")]
    for a in data["annotations"]:
        a["category_id"] = 3
    ann = write(tmp_path, data)
    assert main(eval_args(ann, tmp_path / "out")) == 2
    line = one_line_error(capsys)
    assert "no single 'person' category (categories: ['car'])" in line and "--category" in line
    for choice in ("car", "CAR", "3"):  # by name, any case, or by id
        assert EvalDataset(ann, COCO_DIR, category=choice).person_id == 3
    with pytest.raises(DatasetError, match="--category 'bus': .* has no such category"):
        EvalDataset(ann, COCO_DIR, category="bus")


def _broken(edit) -> Any:
    """The shared annotations after ``edit``, or what ``edit`` returns in their place."""
    data = copy.deepcopy(COCO)
    replaced = edit(data)
    return data if replaced is None else replaced


def _set(where: str, index: int, key: str, value: Any):
    def edit(data: dict[str, Any]) -> None:
        data[where][index][key] = value
    return edit


def _without(key: str):
    def edit(data: dict[str, Any]) -> None:
        del data[key]
    return edit


def _delete(where: str, index: int, key: str):
    def edit(data: dict[str, Any]) -> None:
        del data[where][index][key]
    return edit


BROKEN_FILES = {
    # layout
    "a list, not an object": (lambda d: [d], "a list, not an object"),
    "no images key": (_without("images"), "has no 'images' list"),
    "no categories key": (_without("categories"), "has no 'categories' list"),
    "annotations not a list": (lambda d: d.update(annotations={}), "'annotations' is a dict, not a list"),
    "no images at all": (lambda d: d.update(images=[]), "has no images"),
    "image not an object": (lambda d: d["images"].append("x.jpg"), "images[4]: is a str"),
    # required keys and integral ids (bool is not an int)
    "image without width": (_delete("images", 2, "width"), "images[2] (id 196141): has no width"),
    "image height 0": (_set("images", 1, "height", 0), "height 0 is out of range [1, 2**63)"),
    "image height NaN": (_set("images", 1, "height", float("nan")), "height is nan (float)"),
    "bool image id": (_set("images", 0, "id", True), "images[0]: id is True (bool), not an integer"),
    "huge image id": (_set("images", 0, "id", 2**70), "id 1180591620717411303424 is out of range"),
    "float image id": (_set("images", 0, "id", 785.0), "images[0]: id is 785.0 (float)"),
    "file name not a string": (_set("images", 0, "file_name", 785), "file_name 785 does not name a file"),
    "empty file name": (_set("images", 0, "file_name", ""), "file_name '' does not name a file"),
    "string category id": (_set("categories", 0, "id", "1"), "categories[0]: id is '1' (str)"),
    "annotation without image_id": (_delete("annotations", 3, "image_id"),
                                    "annotations[3] (id 1202706): has no image_id"),
    "string annotation image_id": (_set("annotations", 0, "image_id", "785"), "image_id is '785' (str)"),
    # uniqueness
    "duplicate file names": (_set("images", 1, "file_name", "./000000000785.jpg"),
                             "images repeat the file_name '000000000785.jpg'"),
    "duplicate annotation ids": (_set("annotations", 1, "id", 442619), "annotations repeat the id 442619"),
    "duplicate category ids": (lambda d: d["categories"].append({"id": 1, "name": "car"}),
                               "categories repeat the id 1"),
    "two person categories": (lambda d: d["categories"].append({"id": 2, "name": "Person"}),
                              "no single 'person' category"),
    # references
    "annotation of an unknown image": (_set("annotations", 4, "image_id", 7),
                                       "annotations[4] (id 460541): image_id 7 is not the id of any image"),
    "annotation of an unknown category": (_set("annotations", 5, "category_id", 2),
                                          "category_id 2 is not the id of any category"),
    # the geometry of scored persons
    "non-numeric bbox": (_set("annotations", 0, "bbox", ["1", 2, 3, 4]), "annotations[0] (id 442619): bbox"),
    "NaN in bbox": (_set("annotations", 0, "bbox", [1, 2, float("nan"), 4]), "is not [x, y, width, height]"),
    "bbox of 3 numbers": (_set("annotations", 0, "bbox", [1, 2, 3]), "is not [x, y, width, height]"),
    "negative bbox width": (_set("annotations", 0, "bbox", [1, 2, -3, 4]), "width, height >= 0"),
    "infinite area": (_set("annotations", 2, "area", float("inf")), "area inf is not a finite number"),
    "iscrowd 2": (_set("annotations", 2, "iscrowd", 2), "iscrowd is 2, not 0 or 1"),
    "16 keypoints for 17 names": (_set("annotations", 3, "keypoints", [1, 1, 2] * 16),
                                  "has 48 keypoint values; the category's 17 keypoints make 51"),
    "keypoints not triples": (_set("annotations", 3, "keypoints", [1] * 50), "has 50 keypoint values"),
    "NaN keypoint": (_set("annotations", 3, "keypoints", [float("nan")] * 51), "are not all finite"),
    "bool keypoint": (_set("annotations", 3, "keypoints", [True] * 51), "are not all finite"),
    "polygon of two points": (_set("annotations", 6, "segmentation", [[1, 2, 3, 4]]),
                              "segmentation polygon [1, 2, 3, 4] is not >= 3 (x, y) points"),
    "RLE of another size": (_set("annotations", 6, "segmentation", {"counts": "abc", "size": [10, 10]}),
                            "RLE size [10, 10] is not the image's [height, width] [429, 640]"),
    "RLE counts short": (_set("annotations", 6, "segmentation", {"counts": [5, 5], "size": [429, 640]}),
                         "counts do not add up"),
    "segmentation a string": (_set("annotations", 6, "segmentation", "mask"), "neither polygons nor an RLE"),
    "neither box nor mask": (lambda d: d["annotations"][0].update(bbox=[], segmentation=[]),
                             "has neither bbox nor segmentation"),
}


@pytest.mark.parametrize("case", list(BROKEN_FILES))
def test_every_malformed_annotation_file_is_one_line_error(case, tmp_path):
    edit, message = BROKEN_FILES[case]
    data = _broken(edit)
    with pytest.raises(DatasetError) as info:
        EvalDataset(write(tmp_path, data), COCO_DIR)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_cli_reports_a_broken_rule_with_its_entry_and_how_many_break_it(tmp_path, capsys, no_model):
    data = copy.deepcopy(COCO)
    for a in data["annotations"][:3]:
        a["keypoints"] = a["keypoints"][:-3]
    assert main(eval_args(write(tmp_path, data), tmp_path / "out")) == 2
    line = one_line_error(capsys)
    assert line.startswith(f"bmp: error: {tmp_path / 'ann.json'}: annotations[0] (id 442619): has 48")
    assert line.endswith("(2 more annotations break this rule)")


def test_annotations_of_other_categories_are_checked_but_not_scored(tmp_path):
    data = copy.deepcopy(COCO)
    data["categories"].append({"id": 3, "name": "car"})
    car = dict(data["annotations"][0], id=1, category_id=3, keypoints=[1, 2])  # not scored: not checked
    data["annotations"].append(car)
    dataset = EvalDataset(write(tmp_path, data), COCO_DIR)
    assert len(dataset.gt.dataset["annotations"]) == len(COCO["annotations"])
    assert dataset.gt.getCatIds() == [1]


def test_missing_annotation_ids_never_collide_with_given_ones(tmp_path):
    data = copy.deepcopy(COCO)
    data["annotations"][1]["id"] = 1
    del data["annotations"][0]["id"]  # was numbered 1 before: two persons with id 1
    dataset = EvalDataset(write(tmp_path, data), COCO_DIR)
    ids = [a["id"] for a in dataset.gt.dataset["annotations"]]
    assert len(set(ids)) == len(ids)


def test_every_image_left_out_is_named_with_its_reason_in_the_table():
    failed = [{"file": f"{n}.jpg", "error": "image file not found"} for n in range(25)]
    metrics = {"mode": "loop", "config": "c.py", "num_iters": 1, "dataset": {"ann": "a.json"},
               "iou_types": ["bbox"], "skipped": {}, "subsets": {}, "metrics": {},
               "images": {"selected": 30, "evaluated": 5, "failed": failed}}
    table = markdown_table(metrics)
    assert "- not evaluated: 0.jpg: image file not found" in table
    assert "- not evaluated: 19.jpg: image file not found" in table
    assert "- and 5 more not evaluated: see metrics.json" in table


# Item 3: file names that leave --images --------------------------------------------


@pytest.fixture
def hostile(tmp_path) -> tuple[Path, Path, Path]:
    """An images folder, a secret folder beside it, and an annotation file whose
    names reach the secret folder in every way a name can leave the folder."""
    images, secret = tmp_path / "images", tmp_path / "secret"
    images.mkdir()
    secret.mkdir()
    names = sorted(p.name for p in COCO_DIR.glob("*.jpg"))
    shutil.copy(COCO_DIR / names[0], images / names[0])
    (images / "linked.jpg").symlink_to(COCO_DIR / names[1])  # a link to a file: followed
    for name in names[1:]:
        shutil.copy(COCO_DIR / name, secret / name)
    (images / "up").symlink_to("..")  # a link to a folder that leads out
    (images / "sub").mkdir()
    data = copy.deepcopy(COCO)
    hostile_names = [
        names[0],
        "linked.jpg",
        f"../secret/{names[2]}",
        str(secret / names[3]),
    ]
    for info, name in zip(data["images"], hostile_names, strict=True):
        info["file_name"] = name
    for name in (f"sub/../../secret/{names[1]}", f"up/secret/{names[3]}", f"//{secret}/{names[1]}"):
        image_id = len(data["images"]) + 1
        data["images"].append(dict(data["images"][3], id=image_id, file_name=name))
    return write(tmp_path, data), images, secret


def test_file_names_that_leave_the_images_folder_are_refused(hostile):
    ann, images, secret = hostile
    dataset = EvalDataset(ann, images)
    read = {i.file_name: i for i in dataset.images if i.path is not None}
    assert sorted(read) == ["000000000785.jpg", "linked.jpg"]
    refused = {i.file_name: i.refused for i in dataset.images if i.refused}
    assert len(refused) == 5
    for name, reason in refused.items():
        assert name in reason and "images folder" in reason
    assert "goes up with '..'" in refused["../secret/000000196141.jpg"]
    assert "is absolute" in refused[str(secret / "000000197388.jpg")]
    assert "through a link" in refused["up/secret/000000197388.jpg"]

    allowed = EvalDataset(ann, images, allow_outside=True)
    assert all(i.path is not None and i.refused is None for i in allowed.images)


def test_eval_never_reads_a_refused_image_and_names_it_in_the_report(hostile, tmp_path, recorder, capsys):
    ann, images, secret = hostile
    out = tmp_path / "out"
    assert main(eval_args(ann, out, images=images)) == 0
    assert sorted(p.name for p in recorder.paths) == ["000000000785.jpg", "linked.jpg"]
    assert not any(secret in p.resolve().parents for p in recorder.paths)
    metrics = json.loads((out / "metrics.json").read_text())
    failed = {f["file"]: f["error"] for f in metrics["images"]["failed"]}
    assert len(failed) == 5 and all("refused" in e and "--allow-outside-images" in e for e in failed.values())
    table = (out / "metrics.md").read_text()
    assert "- not evaluated: ../secret/000000196141.jpg: refused: file name" in table
    assert "2 of 7 images evaluated, 5 failed" in table

    assert main(eval_args(ann, out, "--allow-outside-images", images=images)) == 0  # resumes
    assert len(recorder.paths) == 7
    assert json.loads((out / "metrics.json").read_text())["images"]["failed"] == []


def test_when_every_image_is_refused_the_run_stops_with_the_reason(tmp_path, capsys, no_model):
    data = copy.deepcopy(COCO)
    for info in data["images"]:
        info["file_name"] = str(COCO_DIR / info["file_name"])
    empty = tmp_path / "images"
    empty.mkdir()
    assert main(eval_args(write(tmp_path, data), tmp_path / "out", images=empty)) == 2
    line = one_line_error(capsys)
    assert "none of the 4 images" in line and "is absolute" in line and "--allow-outside-images" in line


def test_a_name_through_a_link_loop_is_refused_not_a_traceback(tmp_path):
    from bmp.evaluation.validation import outside_images

    (tmp_path / "loop").symlink_to("loop")
    reason = outside_images("loop/000000000785.jpg", tmp_path)
    assert reason is not None and "cannot be resolved" in reason
