"""``report.html`` in a real headless Chromium: the page of ``bmp eval --report``
and ``bmp run --report`` on the shared COCO images (lite config, real
YOLO11n-pose weights) loads from file:// without console errors, steps each
image through its iterations, sorts, and pages through 5,000 images."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from bmp.cli import main
from bmp.html_report import REPORT, THUMBS
from bmp.html_report.page import PAGE_SIZE, render_page
from tests.browser import artifact_dir, console_errors, headless_chromium
from tests.conftest import COCO_ANN, COCO_DIR, MODELS_DIR, ROOT, import_extra, offline_bmp_home

import_extra("selenium")  # skips this module only under BMP_WITHOUT_EXTRAS=1

LITE = str(ROOT / "configs" / "bmp_lite.py")


@pytest.fixture(scope="module")
def eval_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval_report")
    with offline_bmp_home(tmp_path_factory):
        code = main(["eval", "--config", LITE, "--ann", str(COCO_ANN), "--images", str(COCO_DIR),
                     "--out", str(out), "--weights-dir", str(MODELS_DIR), "--device", "cpu", "--report"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def browser() -> Any:
    with headless_chromium() as driver:
        yield driver


def _data(page: Path) -> dict[str, Any]:
    return json.loads(re.search(r'id="bmp-data">(.*?)</script>', page.read_text(), re.S).group(1))


def _open(driver: Any, page: Path) -> None:
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(page.resolve().as_uri())
    for _ in range(50):  # the script builds the page on load
        if driver.execute_script("return document.querySelectorAll('.card').length"):
            return
        time.sleep(0.1)
    raise AssertionError(f"no gallery cards in {page}")


def _card_ids(driver: Any) -> list[int]:
    return driver.execute_script("return [...document.querySelectorAll('.card')].map(c => +c.dataset.id)")


def _card(driver: Any, image_id: int) -> dict[str, str]:
    return driver.execute_script(
        "const c = document.getElementById('card-' + arguments[0]);"
        "return {src: c.querySelector('img').getAttribute('src'),"
        " label: c.querySelector('.iter-label').textContent,"
        " added: c.querySelector('.new-count').textContent, text: c.querySelector('.caption').textContent};",
        image_id)


def _select(driver: Any, element_id: str, label: str) -> None:
    driver.execute_script(
        "const s = document.getElementById(arguments[0]);"
        "s.value = [...s.options].find(o => o.text === arguments[1]).value;"
        "s.dispatchEvent(new Event('change'));", element_id, label)


def test_eval_report_steps_through_iterations_and_sorts_in_a_browser(eval_report, browser):
    page = eval_report / REPORT
    data = _data(page)
    assert len(data["images"]) == 4 and data["iters"] == 2 and data["primary"] == "keypoints"
    assert all(e["tm"]["detect"] > 0 for e in data["images"])  # each image's loop stage times
    _open(browser, page)
    assert console_errors(browser) == []
    assert browser.execute_script("return document.querySelectorAll('#table tbody tr').length") == 4
    # Every thumbnail on the page loaded (relative paths next to the page). They load
    # lazily, so each is scrolled into view first: one below the fold would never decode.
    loaded = browser.execute_script(
        "const images = [...document.images]; images.forEach(i => i.scrollIntoView());"
        "return Promise.all(images.map(i => i.decode())).then(() => images.every(i => i.naturalWidth > 0))")
    assert loaded
    browser.execute_script("window.scrollTo(0, 0)")
    assert "bbox AP" in browser.find_element("id", "metrics").text
    assert "detect" in browser.find_element("id", "times").text  # mean milliseconds per stage

    first = data["images"][0]
    shown = _card(browser, first["id"])
    assert shown["label"] == "iteration 2 / 2" and shown["src"] == first["th"][1]
    browser.execute_script(f"document.querySelector('#card-{first['id']} .step-prev').click()")
    stepped = _card(browser, first["id"])
    assert stepped["label"] == "iteration 1 / 2" and stepped["src"] == first["th"][0] != shown["src"]
    assert stepped["added"] == str(first["new"][0]) and int(stepped["added"]) == first["n"][0] > 0
    assert (eval_report / stepped["src"]).is_file()

    def final_ap(entry: dict[str, Any]) -> float:
        return entry["ap"]["keypoints"][-1]

    _select(browser, "sort", "worst AP first")
    expected = [e["id"] for e in sorted(data["images"], key=lambda e: (final_ap(e), e["id"]))]
    assert _card_ids(browser) == expected != sorted(expected)
    _select(browser, "sort", "loop gain (largest first)")
    gain = {e["id"]: final_ap(e) - e["ap"]["keypoints"][0] for e in data["images"]}
    assert _card_ids(browser) == sorted(gain, key=lambda i: (-gain[i], i))
    _select(browser, "iteration", "1")  # every card to iteration 1
    assert {_card(browser, i)["label"] for i in gain} == {"iteration 1 / 2"}
    assert console_errors(browser) == []
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1280, min(6000, height + 100))
    browser.save_screenshot(str(artifact_dir() / "eval_report.png"))
    browser.set_window_size(1280, 900)


def test_run_report_shows_people_and_stage_times_per_image_in_a_browser(tmp_path, browser):
    out = tmp_path / "run"
    images = sorted(COCO_DIR.glob("*.jpg"))[:2]
    assert main(["run", *map(str, images), "--config", LITE, "--out", str(out), "--weights-dir",
                 str(MODELS_DIR), "--device", "cpu", "--report"]) == 0
    logged = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert all(set(r["times"]) >= {"detect", "pose"} for r in logged)
    data = _data(out / REPORT)
    # In input order, each as the run logged it (inputs reached through a symlink are logged resolved).
    assert [Path(e["f"]).name for e in data["images"]] == [p.name for p in images]
    assert {e["f"] for e in data["images"]} == {r["file"] for r in logged}
    assert all(e["tm"]["detect"] > 0 for e in data["images"])
    _open(browser, out / REPORT)
    assert console_errors(browser) == []
    assert len(_card_ids(browser)) == 2
    assert "detect" in browser.find_element("id", "summary").text
    first = data["images"][0]
    browser.execute_script(f"document.querySelector('#card-{first['id']} .step-prev').click()")
    assert _card(browser, first["id"])["src"] == first["th"][0]
    assert len(list((out / THUMBS).glob("*.jpg"))) == sum(len(e["th"]) for e in data["images"])
    browser.save_screenshot(str(artifact_dir() / "run_report.png"))


def test_5000_images_open_one_page_at_a_time(tmp_path, browser):
    entries = [{"id": i, "f": f"{i:012d}.jpg", "w": 640, "h": 480, "n": [2, 3], "new": [2, 1], "hit": [2, 1],
                "fp": [0, 0], "miss": [1, 0], "gt": 3, "ap": {"bbox": [i / 5000, 0.5]}, "th": [None, None]}
               for i in range(5000)]
    page = tmp_path / REPORT
    page.write_text(render_page("r", "s", entries, {"mode": "eval", "iters": 2, "primary": "bbox",
                                                   "iou": ["bbox"]}))
    start = time.perf_counter()
    _open(browser, page)
    assert time.perf_counter() - start < 10
    assert console_errors(browser) == []
    assert len(_card_ids(browser)) == PAGE_SIZE  # only one page of cards exists
    assert browser.find_element("id", "page-label").text == f"page 1 of {5000 // PAGE_SIZE} (5000 images)"
    browser.find_element("id", "next").click()
    assert _card_ids(browser) == list(range(PAGE_SIZE, 2 * PAGE_SIZE))
    _select(browser, "sort", "worst AP first")  # back to page 1, lowest final AP... all 0.5: by id
    assert _card_ids(browser)[0] == 0
    _select(browser, "sort", "loop gain (largest first)")  # gain 0.5 - i/5000: image 0 first
    assert _card_ids(browser)[:3] == [0, 1, 2]


def test_eval_report_rerun_reuses_every_thumbnail(eval_report, tmp_path_factory):
    before = {p.name: p.stat().st_mtime_ns for p in (eval_report / THUMBS).iterdir()}
    with offline_bmp_home(tmp_path_factory):  # all images done: evaluates and reports again
        assert main(["eval", "--config", LITE, "--ann", str(COCO_ANN), "--images", str(COCO_DIR),
                     "--out", str(eval_report), "--weights-dir", str(MODELS_DIR), "--device", "cpu",
                     "--report"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (eval_report / THUMBS).iterdir()} == before
    assert not list(eval_report.rglob(".*.tmp"))


def test_eval_report_refuses_gt_pose_mode(tmp_path, capsys):
    assert main(["eval", "--config", LITE, "--ann", str(COCO_ANN), "--images", str(COCO_DIR),
                 "--out", str(tmp_path), "--gt-kpts", "--report", "--device", "cpu"]) == 2
    assert "--report shows the loop's iterations" in capsys.readouterr().err
