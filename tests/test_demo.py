"""`bmp demo` without a browser: config discovery, missing checkpoints, bad
inputs, overlays per iteration, and a JSON download equal to `bmp run`'s."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bmp.cli import main
from bmp.config import ConfigError
from bmp.demo.catalog import default_choice, discover_configs, loop_defaults, repo_configs_dir
from bmp.demo.cli import NEEDS_GRADIO
from bmp.demo.inference import DemoResult, LoopSettings
from bmp.demo.service import DemoInputError, DemoOptions, DemoService, describe_error
from bmp.images import ImageError
from bmp.structures import Instances
from bmp.vis import draw_instances
from bmp.weights import WeightsError
from tests.conftest import COCO_DIR, MODELS_DIR, ROOT, import_extra

LITE = ROOT / "configs" / "bmp_lite.py"
FULL = ROOT / "configs" / "bmp_rtmdet_vitpose_sam2.py"
IMAGE = COCO_DIR / "000000197388.jpg"


#: Result fields left out of the comparison with `bmp run`: the lite config's GrabCut
#: prior draws from OpenCV's unseeded RNG, so two runs of the same loop can differ
#: in a few mask pixels (reported; compare everything once it is seeded).
UNSEEDED_FIELDS: tuple[str, ...] = ()


def without_unseeded(results: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in UNSEEDED_FIELDS} for r in results]


def bmp_run_results(image: Path, tmp_path: Path) -> list[dict]:
    """`bmp run` with the lite config on that one image: its results.json."""
    folder = tmp_path / "bmp_run_input"
    folder.mkdir()
    shutil.copy(image, folder / image.name)
    out = tmp_path / "bmp_run_out"
    assert main(["run", str(folder), "--config", str(LITE), "--out", str(out),
                 "--weights-dir", str(MODELS_DIR), "--device", "cpu"]) == 0
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> DemoService:
    """The demo's service as `bmp demo --weights-dir ../shared/models --device cpu` builds it."""
    return DemoService(DemoOptions(
        results_root=tmp_path_factory.mktemp("demo_results"), weights_dirs=[str(MODELS_DIR)],
        device="cpu", config_folders=[repo_configs_dir()], sample_folders=[COCO_DIR],
    ))


def test_configs_with_checkpoints_on_disk_are_offered_lite_first():
    choices = discover_configs([repo_configs_dir()], weights_dirs=[MODELS_DIR])
    by_name = {c.name: c for c in choices}
    assert by_name["bmp_lite"].available
    assert by_name["bmp_rtmdet_vitpose_sam2"].missing == {
        "detector": "rtmdet-ins-l-mask", "pose": "vitpose-b", "segmenter": "sam2.1-hiera-b+"}
    assert "train_sam_pose2seg" not in by_name  # a training config is no loop
    assert default_choice(choices).name == "bmp_lite"
    # Without the shared weights nothing can run, and nothing is downloaded to find out.
    assert default_choice(discover_configs([repo_configs_dir()])) is None


def test_an_extra_config_that_is_not_a_loop_is_a_config_error():
    with pytest.raises(ConfigError):
        discover_configs(extra=[ROOT / "configs" / "train_sam_pose2seg.py"])


def test_missing_checkpoint_is_one_line_naming_the_files(service):
    assert "bmp_rtmdet_vitpose_sam2" not in [c.name for c in service.available]
    note = service.unavailable_note()
    assert "rtmdet-ins-l-mask" in note and "--weights-dir" in note
    with pytest.raises(WeightsError) as caught:
        service.run(None, IMAGE.name, "bmp_rtmdet_vitpose_sam2")
    message = describe_error(caught.value)
    assert "\n" not in message
    assert "'rtmdet-ins-l-mask'" in message and "'sam2.1-hiera-b+'" in message


def test_bad_requests_are_one_line_errors(service, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ImageError):
        service.run(text, None, "bmp_lite")
    with pytest.raises(DemoInputError, match="upload an image"):
        service.run(None, None, "bmp_lite")
    with pytest.raises(DemoInputError, match="unknown sample"):
        service.run(None, "../../etc/passwd", "bmp_lite")
    with pytest.raises(DemoInputError, match="unknown config"):
        service.run(None, IMAGE.name, "nope")


def test_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    small = DemoService(DemoOptions(results_root=tmp_path, weights_dirs=[str(MODELS_DIR)], device="cpu",
                                    configs=[LITE], max_image_pixels=10_000))
    with pytest.raises(ImageError, match="megapixels, over the limit"):
        small.run(IMAGE, None, "bmp_lite")


def test_overlay_k_shows_the_people_found_up_to_iteration_k():
    image = np.full((60, 80, 3), 100, np.uint8)
    masks = np.zeros((3, 60, 80), bool)
    masks[0, 5:20, 5:20] = masks[1, 5:20, 40:55] = masks[2, 30:55, 20:40] = True
    boxes = np.array([[5, 5, 20, 20], [40, 5, 55, 20], [20, 30, 40, 55]], np.float32)
    people = Instances((60, 80), boxes=boxes, scores=np.array([0.9, 0.8, 0.7], np.float32), masks=masks,
                       iteration=np.array([1, 1, 2], np.int32))
    result = DemoResult(image=image, people=people, iterations_run=3, seconds={}, image_id=1,
                        name="x.jpg", device="cpu", kpt_thr=0.3)
    overlays = result.overlays()
    assert len(overlays) == 3 and overlays[0].shape == (60, 80, 3)
    assert np.array_equal(overlays[0], draw_instances(image, people[:2])[..., ::-1])  # RGB for the page
    assert np.array_equal(overlays[1], draw_instances(image, people)[..., ::-1])
    assert np.array_equal(overlays[2], overlays[1])  # iteration 3 found nobody new
    assert not np.array_equal(overlays[0][30:55, 20:40], overlays[1][30:55, 20:40])
    assert result.found_up_to() == [2, 3, 3]
    assert result.summary() == "3 people (iteration 1: 2, iteration 2: 1, iteration 3: 0)"


def test_json_download_is_what_bmp_run_writes(service, tmp_path):
    result, path = service.run(None, IMAGE.name, "bmp_lite", service.settings("bmp_lite"))
    served, expected = json.loads(path.read_text()), bmp_run_results(IMAGE, tmp_path)
    assert without_unseeded(served) == without_unseeded(expected)
    assert all(r.keys() == e.keys() for r, e in zip(served, expected, strict=True))
    assert path.name == "000000197388_results.json" and result.image_id == 197388
    assert len(result.people_rows()) == len(result.people) > 0
    assert [row[0] for row in result.stage_rows()][-1] == "total"


def test_models_are_built_once_and_thresholds_change_only_the_request(service):
    service.run(None, IMAGE.name, "bmp_lite")
    built = service.cache.get(service.choice("bmp_lite"), "cpu")
    default = service.settings("bmp_lite")
    strict = LoopSettings(1, 0.95, default.det_nms_iou, default.oks_nms_thr, default.oks_kpt_thr)
    fewer, _ = service.run(None, IMAGE.name, "bmp_lite", strict)
    again, _ = service.run(None, IMAGE.name, "bmp_lite")
    assert service.cache.get(service.choice("bmp_lite"), "cpu") is built
    assert len(service.cache) == 1
    assert fewer.iterations_run == 1 and len(fewer.people) < len(again.people)
    assert built.loop.det_score_thr == default.det_score_thr  # the cached loop kept its config


def test_slider_values_are_checked_like_a_config():
    config = loop_defaults(LITE)
    sliders = LoopSettings(2.0, 0.30000000000000004, 0.3, 0.7, 0.3)  # what a browser sends
    assert sliders.applied_to(config) == config
    with pytest.raises(ConfigError, match="num_iters"):
        LoopSettings(0, 0.3, 0.3, 0.7, 0.3).applied_to(config)


def test_the_page_shows_a_failed_run_as_one_status_line(service, tmp_path):
    import_extra("gradio")
    from bmp.demo.app import _run

    bad = tmp_path / "holiday.jpg"
    bad.write_bytes(b"\xff\xd8 truncated jpeg")
    outputs = _run(service, str(bad), None, "bmp_lite", 2, 0.3, 0.3, 0.7, 0.3)
    assert len(outputs) == 6 and outputs[2] == []  # status, count, gallery, times, people, JSON
    status = outputs[0]
    assert status.startswith("**Error:**") and "\n" not in status
    assert "holiday.jpg" in status and str(tmp_path) not in status  # no server paths in the page
    outputs = _run(service, None, IMAGE.name, "bmp_rtmdet_vitpose_sam2", 2, 0.3, 0.3, 0.8, 0.3)
    assert "rtmdet-ins-l-mask" in outputs[0] and "\n" not in outputs[0]
    assert "bmp\\_rtmdet" in outputs[0]  # names are escaped, not read as markdown


def test_without_gradio_bmp_demo_says_how_to_get_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    monkeypatch.delitem(sys.modules, "bmp.demo.app", raising=False)
    assert main(["demo"]) == 2
    assert capsys.readouterr().err.strip() == NEEDS_GRADIO


def test_importing_bmp_and_its_cli_never_imports_gradio():
    code = ("import sys, bmp, bmp.cli, bmp.demo.cli, bmp.demo.service; bmp.cli.build_parser(); "
            "print('gradio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
