"""``report.html`` (bmp.html_report): per-image AP and matches, thumbnails, the
page's size at 5,000 images, atomic and resumable writing; the page in a real
headless Chromium lives in test_html_report_browser.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

import bmp.html_report.thumbs as thumbs_module
from bmp.coco import OutputError
from bmp.evaluation.cocoeval import coco_metrics
from bmp.html_report import REPORT, THUMBS, write_run_report
from bmp.html_report.matching import FALSE_POSITIVE, MATCHED, match_images
from bmp.html_report.page import PAGE_SIZE, render_page
from bmp.html_report.thumbs import NEW_COLOR, THUMB_LONG_SIDE, View, thumbnail_names, write_thumbnails
from bmp.masks import encode_rle


def _gt() -> COCO:
    """Two images: image 1 with persons A (left) and B (right), image 2 with C."""
    gt = COCO()
    gt.dataset = {
        "images": [{"id": 1, "width": 200, "height": 100}, {"id": 2, "width": 200, "height": 100}],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 80], "area": 3200, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [120, 10, 40, 80], "area": 3200, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [50, 10, 60, 80], "area": 4800, "iscrowd": 0},
        ],
    }
    gt.createIndex()
    return gt


def _box(image_id: int, bbox: list[float], score: float) -> dict:
    return {"image_id": image_id, "category_id": 1, "bbox": bbox, "score": score}


def test_per_image_ap_and_matches_are_cocoevals_of_that_image_alone():
    gt = _gt()
    results = {
        1: [_box(1, [11, 11, 40, 78], 0.9), _box(1, [80, 40, 20, 20], 0.8)],  # A found; a false positive
        2: [_box(2, [52, 12, 60, 80], 0.7)],  # C found
    }
    found = match_images(gt, results, "bbox")
    for image_id, people in results.items():
        alone = coco_metrics(gt, people, ["bbox"], [image_id])["bbox"]["AP"]
        assert found[image_id].ap == pytest.approx(alone)
    assert found[1].people == [MATCHED, FALSE_POSITIVE]
    assert found[1].missed == [[120.0, 10.0, 40.0, 80.0]]  # B never found
    assert found[1].num_gt == 2 and found[2].missed == [] and found[2].people == [MATCHED]
    # Nobody found at all: AP 0, every person missed.
    empty = match_images(gt, {1: [], 2: []}, "bbox")
    assert empty[1].ap == 0.0 and len(empty[1].missed) == 2


def _entry(i: int, iters: int = 3) -> dict:
    return {"id": i, "f": f"images/{i:012d}.jpg", "w": 3840, "h": 2160, "n": [3, 4, 5], "new": [3, 1, 1],
            "hit": [3, 1, 0], "fp": [0, 0, 1], "miss": [2, 1, 1], "gt": 5,
            "ap": {"bbox": [0.61234, 0.7, 0.71], "segm": [0.4, 0.45, 0.5], "keypoints": [0.5, 0.6, 0.65]},
            "th": [f"{THUMBS}/{i:012d}_{i}_it{k}_0123456789.jpg" for k in range(1, iters + 1)]}


def test_page_for_5000_images_grows_by_a_bounded_amount_per_image():
    data = {"mode": "eval", "iters": 3, "primary": "keypoints", "iou": ["bbox", "segm", "keypoints"]}
    small = render_page("r", "s", [_entry(i) for i in range(50)], data)
    page = render_page("r", "s", [_entry(i) for i in range(5000)], data)
    per_image = (len(page.encode()) - len(small.encode())) / 4950
    assert per_image < 700, per_image  # 5,000 images: ~3 MB, whatever their resolution
    # The per-image data is one JSON block for the script; no image is in the document itself.
    assert page.count("<img") == 0 and "base64" not in page
    data_block = re.search(r'<script type="application/json" id="bmp-data">(.*?)</script>', page, re.S)
    assert len(json.loads(data_block.group(1))["images"]) == 5000
    assert PAGE_SIZE <= 100  # the script builds one page of table rows and cards at a time


def test_page_data_cannot_close_its_script_block():
    entry = _entry(1)
    entry["f"] = "</script><script>alert(1)</script>.jpg"
    page = render_page("r", "s", [entry], {"mode": "run", "iters": 3, "primary": None, "iou": []})
    assert page.count("</script>") == 2  # the data block's and the script's own


def _photo(path: Path, w: int, h: int) -> Path:
    rng = np.random.default_rng(0)
    image = cv2.resize(rng.integers(0, 255, (h // 40, w // 40, 3), dtype=np.uint8), (w, h))
    cv2.imwrite(str(path), image)
    return path


def _person(w: int, h: int, iteration: int) -> dict:
    mask = np.zeros((h, w), bool)
    mask[h // 4: 3 * h // 4, w // 4: w // 2] = True
    rle = encode_rle(mask)
    return {"image_id": 1, "category_id": 1, "bbox": [w / 4, h / 4, w / 4, h / 2], "score": 0.9,
            "keypoints": [w / 3, h / 3, 0.9] * 17, "segmentation": rle, "iteration": iteration}


def test_thumbnails_are_small_jpegs_whatever_the_image_size(tmp_path):
    image = _photo(tmp_path / "big.png", 4000, 3000)
    views = [View([_person(4000, 3000, 1)], [NEW_COLOR]), View([_person(4000, 3000, 1)], [None])]
    names = thumbnail_names("big_1", image, views)
    assert len(set(names)) == 2  # what differs between iterations gets its own file
    write_thumbnails(tmp_path, names, image, views)
    for name in names:
        data = (tmp_path / name).read_bytes()
        assert data[:2] == b"\xff\xd8"  # JPEG
        assert len(data) < 80_000, len(data)
        thumb = cv2.imread(str(tmp_path / name))
        assert max(thumb.shape[:2]) == THUMB_LONG_SIDE and thumb.shape[1] * 3 == thumb.shape[0] * 4


def _run_record(image: Path, image_id: int, iterations: list[int]) -> dict:
    h, w = cv2.imread(str(image)).shape[:2]
    return {"file": str(image), "image_id": image_id, "height": h, "width": w,
            "results": [_person(w, h, k) for k in iterations], "times": {"detect": 0.1, "pose": 0.05}}


def test_run_report_is_written_atomically_and_finished_by_a_rerun(tmp_path, monkeypatch):
    images = [_photo(tmp_path / f"{n}.png", 640, 480) for n in range(3)]
    records = [_run_record(p, n + 1, [1, 2][: n + 1]) for n, p in enumerate(images)]
    out = tmp_path / "out"
    real_write = thumbs_module.write_image
    calls = []

    def failing(path, image, params=()):
        calls.append(path)
        if len(calls) == 3:
            raise OutputError(f"cannot write {path}: disk full")
        real_write(path, image, params)

    monkeypatch.setattr(thumbs_module, "write_image", failing)
    with pytest.raises(OutputError, match="disk full"):
        write_run_report(out, records, 2, "configs/bmp_lite.py")
    assert not (out / REPORT).exists()  # no page naming thumbnails that are not there
    assert not list(out.rglob(".*.tmp"))
    monkeypatch.setattr(thumbs_module, "write_image", real_write)
    page = write_run_report(out, records, 2, "configs/bmp_lite.py").read_text()
    thumbs = sorted((out / THUMBS).iterdir())
    assert len(thumbs) == 6  # 3 images x 2 iterations, the 2 already written reused
    # Self-contained: no network resources; every image it names is in the folder.
    assert not re.search(r"(https?:)?//[a-z]", page.replace("http://www.w3.org", ""))
    assert "<link" not in page
    data = json.loads(re.search(r'id="bmp-data">(.*?)</script>', page, re.S).group(1))
    named = [t for e in data["images"] for t in e["th"]]
    assert sorted(named) == sorted(f"{THUMBS}/{p.name}" for p in thumbs)
    assert [e["n"] for e in data["images"]] == [[1, 1], [1, 2], [1, 2]]
    assert data["images"][0]["tm"] == {"detect": 100.0, "pose": 50.0}
    # A changed result redraws only its own thumbnails and drops the stale ones.
    before = {p.name: p.stat().st_mtime_ns for p in thumbs}
    records[2]["results"][1]["score"] = 0.5
    write_run_report(out, records, 2, "configs/bmp_lite.py")
    after = {p.name: p.stat().st_mtime_ns for p in (out / THUMBS).iterdir()}
    assert len(after) == 6 and len(set(after) - set(before)) == 1
    assert all(after[n] == before[n] for n in set(after) & set(before))


def test_a_missing_image_keeps_its_numbers_without_thumbnails(tmp_path):
    image = _photo(tmp_path / "gone.png", 320, 240)
    record = _run_record(image, 1, [1])
    image.unlink()
    page = write_run_report(tmp_path / "out", [record], 1, "c.py").read_text()
    data = json.loads(re.search(r'id="bmp-data">(.*?)</script>', page, re.S).group(1))
    assert data["images"][0]["th"] == [None] and data["images"][0]["n"] == [1]
