"""No command writes outside --out, whatever its inputs are called (issue 22,
item 1): every output path built from an input name goes through
:func:`bmp.safe_names.safe_name`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bmp import loop
from bmp.cli import main, overlay_path
from bmp.config import ConfigError
from bmp.finetune.config import load_train_config
from bmp.safe_names import MAX_NAME_BYTES, name_clashes, safe_name
from bmp.video.cli import plan_outputs
from tests.conftest import COCO_ANN, COCO_DIR, MODELS_DIR, ROOT, SHARED
from tests.test_cli_reliability import FakeBMP

LITE = str(ROOT / "configs" / "bmp_lite.py")
CLIP = SHARED / "data" / "video" / "street_5frames.mp4"

#: Stems an attacker (or an unlucky user) can give a file.
HOSTILE_STEMS = ["..", ".", "...", "", "-rf", "new\nline", "tab\there", "esc\x1b[2J", "a\u202eb",
                 "bad\udcffbyte", "x" * 250, "é" * 200]


def snapshot(folder: Path) -> set[str]:
    """Every path under ``folder``, relative to it."""
    return {os.path.relpath(os.path.join(d, n), folder)
            for d, dirs, files in os.walk(folder) for n in (*dirs, *files)}


def written_outside(parent: Path, before: set[str], out: Path) -> set[str]:
    inside = os.path.relpath(out, parent)
    return {p for p in snapshot(parent) - before if p != inside and not p.startswith(inside + os.sep)}


@pytest.mark.parametrize("stem", HOSTILE_STEMS)
def test_a_safe_name_is_one_harmless_path_component(stem):
    name = safe_name(stem)
    assert name not in ("", ".", "..") and name.strip(".")
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert all(c.isprintable() for c in name)
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert safe_name(stem) == name  # deterministic
    assert Path("/out", name).parent == Path("/out")


def test_safe_names_keep_safe_names_and_long_names_apart():
    for stem in ("000000000785", "IMG_0001", "-leading-dash", ".hidden", "é", "a b"):
        assert safe_name(stem) == stem
    assert safe_name("x" * 300 + "a") != safe_name("x" * 300 + "b")
    assert name_clashes([("a", "x"), ("b", "y"), ("c", "X")]) == [("a", "c")]


def test_video_stems_cannot_climb_out_of_out(tmp_path):
    out = tmp_path / "P" / "out"
    names = [f"{stem}.mp4" for stem in HOSTILE_STEMS if stem]
    for video, folder in plan_outputs([str(tmp_path / "P" / n) for n in names], str(out)):
        assert folder.resolve().parent == out.resolve(), (video, folder)


@pytest.mark.parametrize("pair", [("a/x.mp4", "b/x.mp4"), ("new\nline.mp4", "new_line.mp4"),
                                  ("Clip.mp4", "clip.mp4")])
def test_video_inputs_that_would_share_a_folder_are_refused(pair):
    with pytest.raises(ConfigError, match="would both write to"):
        plan_outputs(list(pair), "out")


def test_bmp_video_writes_nothing_outside_out(tmp_path):
    parent = tmp_path / "P"
    parent.mkdir()
    inputs = []
    for name in ("other.mp4", "...mp4", "-rf.mp4", "new\nline.mp4"):
        shutil.copy(CLIP, parent / name)
        inputs.append(str(parent / name))
    out = parent / "out"
    before = snapshot(parent)
    argv = ["video", *inputs, "--config", LITE, "--out", str(out), "--weights-dir", str(MODELS_DIR),
            "--device", "cpu", "--end", "1"]
    assert main(argv) == 0
    assert written_outside(parent, before, out) == set()
    assert sorted(p.name for p in out.iterdir()) == sorted(["-rf", "__", "new_line", "other"])
    assert all((out / d / "results.json").is_file() for d in ("-rf", "__", "new_line", "other"))


@pytest.fixture
def fake_loop(monkeypatch) -> list[Path]:
    calls: list[Path] = []
    monkeypatch.setattr(loop.BMP, "from_config", classmethod(lambda cls, *a, **k: FakeBMP(calls)))
    return calls


def test_run_overlays_stay_in_vis_whatever_the_image_names(tmp_path, fake_loop):
    parent = tmp_path / "P"
    images = parent / "images"
    images.mkdir(parents=True)
    names = ["...jpg", "..jpg", "-rf.jpg", "new\nline.jpg", "x" * 250 + ".jpg", "esc\x1b[2J.jpg"]
    for name, source in zip(names, sorted(COCO_DIR.glob("*.jpg")) * 2, strict=False):
        shutil.copy(source, images / name)
    out = parent / "out"
    before = snapshot(parent)
    assert main(["run", str(images), "--config", LITE, "--out", str(out), "--device", "cpu", "--vis"]) == 0
    assert written_outside(parent, before, out) == set()
    overlays = sorted((out / "vis").iterdir())
    assert len(overlays) == len(names)
    assert all(p.parent == out / "vis" and p.name.isprintable() for p in overlays)


def test_overlay_path_is_always_a_file_in_vis():
    vis = Path("/out/vis")
    for stem in HOSTILE_STEMS:
        for image_id in (1, 785):
            path = overlay_path(vis, Path(f"/in/{stem}.jpg"), image_id)
            assert path.parent == vis and len(path.name.encode()) < 255, path


def test_eval_writes_nothing_outside_out(tmp_path):
    parent = tmp_path / "P"
    images = parent / "images"
    images.mkdir(parents=True)
    data = json.loads(COCO_ANN.read_text())
    for info, name in zip(data["images"], ["...jpg", "-rf.jpg", "new\nline.jpg", "x" * 250 + ".jpg"],
                          strict=False):
        shutil.copy(COCO_DIR / info["file_name"], images / name)
        info["file_name"] = name
    ann = parent / "ann.json"
    ann.write_text(json.dumps(data))
    out = parent / "out"
    before = snapshot(parent)
    assert main(["eval", "--config", LITE, "--ann", str(ann), "--images", str(images), "--out", str(out),
                 "--device", "cpu", "--gt-kpts"]) == 0
    assert written_outside(parent, before, out) == set()


@pytest.mark.parametrize("name", ["../escape.pt", "sub/model.pt", "..", ""])
def test_train_export_name_must_be_a_plain_file_name(name):
    config = ROOT / "configs" / "train_sam_pose2seg_tiny.py"
    with pytest.raises(ConfigError, match="checkpoint.export_name must be a plain file name"):
        load_train_config(config, {"checkpoint.export_name": name})
