"""`bmp run` behaviour that users rely on: bad inputs, resume, atomic output."""

from __future__ import annotations

import json
import shutil

import pytest
from pycocotools.coco import COCO

from bmp.cli import main
from tests.conftest import COCO_ANN, MODELS_DIR, ROOT

LITE = str(ROOT / "configs" / "bmp_lite.py")


@pytest.fixture
def images(tmp_path, coco_images):
    folder = tmp_path / "images"
    folder.mkdir()
    for p in coco_images[:2]:
        shutil.copy(p, folder / p.name)
    (folder / "000000000999.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    return folder


def run(images, out, *extra):
    return main(["run", str(images), "--config", LITE, "--out", str(out),
                 "--weights-dir", str(MODELS_DIR), "--device", "cpu", *extra])


def test_unreadable_image_is_skipped_and_the_rest_written(images, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(images, out) == 0
    captured = capsys.readouterr()
    assert "000000000999.jpg" in captured.out + captured.err
    results = json.loads((out / "results.json").read_text())
    assert {r["image_id"] for r in results} == {785, 40083}
    gt = COCO(str(COCO_ANN))
    assert len(gt.loadRes(str(out / "results.json")).anns) == len(results)
    assert not list(out.glob(".*.tmp"))


def test_rerun_resumes_without_redoing_images(images, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert run(images, out) == 0
    first = (out / "results.json").read_text()
    calls = []
    from bmp import loop

    original = loop.BMP.predict
    monkeypatch.setattr(loop.BMP, "predict",
                        lambda self, image, **kw: calls.append(image) or original(self, image, **kw))
    assert run(images, out) == 0
    assert [c.name for c in calls] == ["000000000999.jpg"]  # only the failed one is retried
    assert (out / "results.json").read_text() == first


def test_changed_config_refuses_to_mix_results(images, tmp_path):
    out = tmp_path / "out"
    assert run(images, out) == 0
    assert run(images, out, "--iters", "1") == 2
    assert run(images, out, "--iters", "1", "--overwrite") == 0


def test_clear_errors_for_missing_inputs_and_config(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope"), "--config", LITE, "--out", str(tmp_path)]) == 2
    assert "input not found" in capsys.readouterr().err
    assert main(["run", str(tmp_path), "--config", str(tmp_path / "x.py"),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no images" in err or "config file not found" in err


def test_missing_sam_weights_name_the_url(tmp_path, coco_images, capsys):
    cfg = tmp_path / "cfg.py"
    cfg.write_text(
        f"_base_ = ['{ROOT / 'configs' / 'bmp_lite.py'}']\n"
        "segmenter = dict(_delete_=True, type='SAM2Segmenter', "
        "config='configs/sam2.1/sam2.1_hiera_b+.yaml', checkpoint='sam2.1-hiera-b+')\n"
    )
    code = main(["run", str(coco_images[0]), "--config", str(cfg), "--out", str(tmp_path / "o"),
                 "--weights-dir", str(MODELS_DIR)])
    assert code == 2
    err = capsys.readouterr().err
    assert "sam2.1_hiera_base_plus.pt" in err and "https://" in err
