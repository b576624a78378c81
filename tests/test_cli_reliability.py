"""`bmp run` / `bmp eval` / `bmp video` when things go wrong (issue 12): stable
image ids across resumed runs, corrupt log lines, overlays that resume and fail
loudly, one-line errors for bad outputs and config values, resume signatures,
and the permissions of atomically written files.

Most `bmp run` tests stand in a tiny deterministic predictor for the loop, so
they check the command's bookkeeping in well under a second per run."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from bmp import loop
from bmp.cli import main
from bmp.coco import OutputError, PredictionLog, atomic_write, scan_jsonl, write_json_atomic
from bmp.config import ConfigError, LoopConfig, describe_changes
from bmp.images import load_image
from bmp.structures import Instances
from bmp.video.records import FrameLog
from tests.conftest import COCO_ANN, COCO_DIR, MODELS_DIR, ROOT, SHARED

LITE = str(ROOT / "configs" / "bmp_lite.py")


class FakeBMP:
    """One person per image, placed by the image's size: deterministic and instant."""

    def __init__(self, calls: list[Path]) -> None:
        self.calls = calls
        self._image: np.ndarray | None = None

    def predict(self, path: Path) -> Instances:
        self.calls.append(Path(path))
        image = load_image(path)
        self._image = image
        h, w = image.shape[:2]
        masks = np.zeros((1, h, w), bool)
        masks[0, h // 4: h // 2, w // 4: w // 2] = True
        kpts = np.stack([np.linspace(w / 4, w / 2, 17), np.linspace(h / 4, h / 2, 17)], 1)
        return Instances(
            (h, w), boxes=np.array([[w / 4, h / 4, w / 2, h / 2]], np.float32), masks=masks,
            scores=np.array([0.9], np.float32), det_scores=np.array([0.8], np.float32),
            keypoints=kpts[None].astype(np.float32), keypoint_scores=np.full((1, 17), 0.9, np.float32),
            visibility=np.ones((1, 17), np.float32), presence=np.ones((1, 17), np.float32),
            mask_scores=np.array([0.7], np.float32), iteration=np.array([1], np.int32),
        )

    @property
    def detector_inputs(self) -> list[np.ndarray]:
        assert self._image is not None
        return [self._image]

    # The loop's own timer, with no stage timed: the fake takes no time to log.
    times = loop.StageTimes(seconds={})


@pytest.fixture
def fake_loop(monkeypatch) -> list[Path]:
    """Replace the loop by :class:`FakeBMP`; returns the list of predicted paths."""
    calls: list[Path] = []
    monkeypatch.setattr(loop.BMP, "from_config", classmethod(lambda cls, *a, **k: FakeBMP(calls)))
    return calls


@pytest.fixture
def no_model(monkeypatch) -> None:
    """Fail if the command builds the loop at all."""
    def refuse(cls, *args, **kwargs):
        raise AssertionError("the model was built, though every image was logged")

    monkeypatch.setattr(loop.BMP, "from_config", classmethod(refuse))


def copy_images(folder: Path, names: list[str], sources: list[Path] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sources = sources or sorted(COCO_DIR.glob("*.jpg"))
    for name, src in zip(names, sources, strict=False):
        shutil.copy(src, folder / name)
    return folder


def run(out: Path, *inputs: Path | str, extra: tuple[str, ...] = ()) -> int:
    return main(["run", *map(str, inputs), "--config", LITE, "--out", str(out),
                 "--weights-dir", str(MODELS_DIR), "--device", "cpu", *extra])


def image_ids(out: Path) -> dict[str, int]:
    """Resolved file -> image id of every logged image."""
    return {r["file"]: r["image_id"] for r in map(json.loads, (out / "predictions.jsonl").open())
            if "image_id" in r}


def assert_one_line_error(err: str, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.startswith("bmp: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


# --- 2. image ids -------------------------------------------------------------------


def test_a_second_folder_resumed_into_the_same_out_gets_new_ids(tmp_path, fake_loop):
    first = copy_images(tmp_path / "first", ["a.jpg", "b.jpg"])
    second = copy_images(tmp_path / "second", ["c.jpg"], sorted(COCO_DIR.glob("*.jpg"))[2:])
    out = tmp_path / "out"
    assert run(out, first) == 0
    before = image_ids(out)
    assert run(out, second) == 0
    ids = image_ids(out)
    assert {k: ids[k] for k in before} == before  # ids stay with their files
    assert len(set(ids.values())) == 3
    images = json.loads((out / "images.json").read_text())
    assert len({i["id"] for i in images}) == len(images) == 3
    results = json.loads((out / "results.json").read_text())
    assert {r["image_id"] for r in results} == {i["id"] for i in images}


def test_an_added_file_that_sorts_first_does_not_take_a_logged_id(tmp_path, fake_loop):
    folder = copy_images(tmp_path / "images", ["b.jpg", "c.jpg"])
    out = tmp_path / "out"
    assert run(out, folder) == 0
    before = image_ids(out)
    copy_images(folder, ["a.jpg"], sorted(COCO_DIR.glob("*.jpg"))[2:])
    assert run(out, folder) == 0
    ids = image_ids(out)
    assert {k: ids[k] for k in before} == before
    assert len(set(ids.values())) == 3
    assert [p.name for p in fake_loop] == ["b.jpg", "c.jpg", "a.jpg"]  # only the new file is predicted
    assert json.loads((out / "image_ids.json").read_text()) == ids


def test_numeric_names_give_ids_and_a_clash_gets_a_new_one(tmp_path, fake_loop):
    coco = sorted(COCO_DIR.glob("*.jpg"))
    one = copy_images(tmp_path / "one", ["000000000785.jpg"], coco[:1])
    two = copy_images(tmp_path / "two", ["000000000785.jpg"], coco[1:2])
    out = tmp_path / "out"
    assert run(out, one, two) == 0
    ids = image_ids(out)
    assert ids[str((one / "000000000785.jpg").resolve())] == 785
    assert len(set(ids.values())) == 2


def test_ann_ids_that_collide_are_refused(tmp_path, fake_loop, capsys):
    coco = sorted(COCO_DIR.glob("*.jpg"))
    one = copy_images(tmp_path / "one", [coco[0].name], coco[:1])
    two = copy_images(tmp_path / "two", [coco[0].name], coco[1:2])
    assert run(tmp_path / "out", one, two, extra=("--ann", str(COCO_ANN))) == 2
    assert_one_line_error(capsys.readouterr().err, "image id 785", "one", "two")
    assert fake_loop == []


# --- 5. corrupt log lines -------------------------------------------------------------


def test_scan_jsonl_skips_a_corrupt_middle_line_and_truncates_a_torn_last_one(tmp_path, caplog):
    path = tmp_path / "log.jsonl"
    lines = [json.dumps({"file": f"f{i}"}) + "\n" for i in range(5)]
    lines[2] = '{"file": "f2", "resu\n'  # a damaged line in the middle
    path.write_text("".join(lines) + '{"file": "f5"')  # and a torn last one
    records = list(scan_jsonl(path, repair=False))
    assert [r["file"] for _, r in records] == ["f0", "f1", "f3", "f4"]
    assert "line 3" in caplog.text and str(path) in caplog.text
    assert path.read_text().endswith('"f5"')  # repair=False leaves the file alone

    scanned = list(scan_jsonl(path))
    assert [r["file"] for _, r in scanned] == ["f0", "f1", "f3", "f4"]
    assert path.read_text() == "".join(lines[:2] + lines[3:])  # repaired: good lines only
    with open(path, "rb") as f:  # offsets point into the repaired file
        for offset, record in scanned:
            f.seek(offset)
            assert json.loads(f.readline()) == record


def test_frame_log_survives_a_corrupt_middle_line(tmp_path, caplog):
    path = tmp_path / "frames.jsonl"
    log = FrameLog(path)
    for i in range(4):
        log.append({"file": f"v.mp4/{i:06d}", "frame": i, "results": [{"i": i}]})
    text = path.read_text().splitlines(keepends=True)
    text[1] = "garbage\n"
    path.write_text("".join(text))
    log = FrameLog(path)
    assert "v.mp4/000001" not in log and len(log) == 3
    assert "line 2" in caplog.text
    assert log.get("v.mp4/000003")["frame"] == 3
    log.append({"file": "v.mp4/000001", "frame": 1, "results": [{"i": 1}]})  # recomputed
    assert [r["frame"] for r in log.records()] == [0, 1, 2, 3]  # frame order, not file order
    assert log.write_results(tmp_path / "results.json") == 4
    assert json.loads((tmp_path / "results.json").read_text()) == [{"i": i} for i in range(4)]


def test_run_recomputes_only_the_corrupt_record(tmp_path, fake_loop, caplog):
    folder = copy_images(tmp_path / "images", [p.name for p in sorted(COCO_DIR.glob("*.jpg"))])
    out = tmp_path / "out"
    assert run(out, folder) == 0
    first = json.loads((out / "results.json").read_text())
    log = out / "predictions.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    bad = json.loads(lines[1])["file"]
    lines[1] = lines[1][: len(lines[1]) // 2] + "\n"
    log.write_text("".join(lines))
    fake_loop.clear()
    assert run(out, folder) == 0
    assert [str(p) for p in fake_loop] == [bad]  # the 3 good records after it are kept
    assert f"{log}, line 2" in caplog.text
    again = json.loads((out / "results.json").read_text())
    assert sorted(again, key=lambda r: r["image_id"]) == sorted(first, key=lambda r: r["image_id"])
    assert len(PredictionLog(log).records) == 4


def test_eval_recomputes_only_the_corrupt_record(tmp_path, monkeypatch, caplog):
    from bmp.evaluation.gt_poses import GTPosePredictor

    out = tmp_path / "out"
    args = ["eval", "--config", LITE, "--ann", str(COCO_ANN), "--images", str(COCO_DIR),
            "--out", str(out), "--device", "cpu", "--gt-kpts"]
    assert main(args) == 0
    first = json.loads((out / "metrics.json").read_text())["metrics"]
    log = out / "predictions.rank0.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    assert len(lines) == 4
    bad = json.loads(lines[1])["file"]
    lines[1] = "{not json\n"
    log.write_text("".join(lines))
    calls: list[str] = []
    original = GTPosePredictor.__call__
    monkeypatch.setattr(GTPosePredictor, "__call__",
                        lambda self, image: calls.append(image.file_name) or original(self, image))
    assert main(args) == 0
    assert calls == [bad]
    assert "line 2" in caplog.text and str(log) in caplog.text
    assert json.loads((out / "metrics.json").read_text())["metrics"] == first


# --- 6. overlays ------------------------------------------------------------------------


def test_an_overlay_lost_to_an_interrupt_is_drawn_on_resume_without_the_model(
    tmp_path, fake_loop, monkeypatch
):
    from bmp import vis

    folder = copy_images(tmp_path / "images", ["000000000785.jpg", "x.jpg"])
    out = tmp_path / "out"
    original = vis.write_image

    def interrupted(path, image):
        raise KeyboardInterrupt  # SIGINT after the record is logged, before the overlay

    monkeypatch.setattr(vis, "write_image", interrupted)
    assert run(out, folder, extra=("--vis",)) == 130
    assert len(image_ids(out)) == 1 and not list((out / "vis").glob("*.jpg"))

    monkeypatch.setattr(vis, "write_image", original)
    assert run(out, folder, extra=("--vis",)) == 0
    assert len(fake_loop) == 2  # the logged image was not predicted again
    names = sorted(p.name for p in (out / "vis").glob("*.jpg"))
    assert names == ["000000000785.jpg", f"x_{image_ids(out)[str((folder / 'x.jpg').resolve())]}.jpg"]

    (out / "vis" / "000000000785.jpg").unlink()
    monkeypatch.setattr(loop.BMP, "from_config", classmethod(lambda *a, **k: pytest.fail("model built")))
    assert run(out, folder, extra=("--vis",)) == 0
    assert (out / "vis" / "000000000785.jpg").is_file()
    assert not list((out / "vis").glob(".*.tmp"))


def test_same_file_name_in_two_folders_gives_two_overlays(tmp_path, fake_loop):
    coco = sorted(COCO_DIR.glob("*.jpg"))
    one = copy_images(tmp_path / "one", ["person.jpg"], coco[:1])
    two = copy_images(tmp_path / "two", ["person.jpg"], coco[1:2])
    out = tmp_path / "out"
    assert run(out, one, two, extra=("--vis",)) == 0
    ids = image_ids(out)
    assert sorted(ids.values()) == [1, 2]
    assert sorted(p.name for p in (out / "vis").glob("*.jpg")) == ["person_1.jpg", "person_2.jpg"]


def test_an_unwritable_vis_folder_is_an_error_not_a_silent_loss(tmp_path, fake_loop, capsys):
    folder = copy_images(tmp_path / "images", ["a.jpg"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "vis").write_text("not a folder")
    assert run(out, folder, extra=("--vis",)) == 2
    captured = capsys.readouterr()
    assert_one_line_error(captured.err, "vis")
    assert "overlays:" not in captured.out
    assert fake_loop == []  # refused before any work


def test_a_failing_overlay_write_exits_non_zero(tmp_path, fake_loop, monkeypatch, capsys):
    import cv2

    folder = copy_images(tmp_path / "images", ["a.jpg"])
    monkeypatch.setattr(cv2, "imencode", lambda ext, image, params=None: (False, None))
    assert run(tmp_path / "out", folder, extra=("--vis",)) == 2
    assert_one_line_error(capsys.readouterr().err, "a_1.jpg")


# --- 8. clear errors ---------------------------------------------------------------------


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "existing.txt"
    path.write_text("x")
    return path


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_out_that_cannot_be_a_folder_is_a_one_line_error(where, a_file, tmp_path, capsys):
    out = a_file if where == "file" else a_file / "sub"
    coco = sorted(COCO_DIR.glob("*.jpg"))
    commands = {
        "run": ["run", str(coco[0]), "--config", LITE, "--out", str(out), "--device", "cpu"],
        "eval": ["eval", "--config", LITE, "--ann", str(COCO_ANN), "--images", str(COCO_DIR),
                 "--out", str(out), "--device", "cpu", "--gt-kpts"],
        "video": ["video", str(SHARED / "data" / "video" / "street_5frames.mp4"), "--config", LITE,
                  "--out", str(out), "--device", "cpu"],
    }
    for name, argv in commands.items():
        assert main(argv) == 2, name
        assert_one_line_error(capsys.readouterr().err, "--out", str(out))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes into a read-only folder anyway (the file variants above "
                           "cover the error path)")
def test_read_only_out_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        coco = sorted(COCO_DIR.glob("*.jpg"))
        assert main(["run", str(coco[0]), "--config", LITE, "--out", str(out), "--device", "cpu"]) == 2
        assert_one_line_error(capsys.readouterr().err, "--out", "cannot be written")
    finally:
        out.chmod(0o755)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("num_iters", "2", "int"), ("det_score_thr", "0.3", "float"), ("exclusive_masks", "no", "bool"),
    ("naive", 1, "bool"), ("oks_nms_thr", True, "float"),
])
def test_loop_values_of_the_wrong_type_are_refused_at_load_time(key, value, expected, tmp_path, capsys):
    with pytest.raises(ConfigError, match=rf"loop\.{key} must be {expected}, got {value!r}"):
        LoopConfig.from_dict({key: value})
    cfg = tmp_path / "cfg.py"
    cfg.write_text(f"_base_ = [{LITE!r}]\nloop = dict({key}={value!r})\n")
    image = sorted(COCO_DIR.glob("*.jpg"))[0]
    assert main(["run", str(image), "--config", str(cfg), "--out", str(tmp_path / "o"),
                 "--weights-dir", str(MODELS_DIR), "--device", "cpu"]) == 2
    assert_one_line_error(capsys.readouterr().err, f"loop.{key}", expected)


def test_component_arguments_are_checked_against_the_constructor(tmp_path, capsys):
    cfg = tmp_path / "cfg.py"
    cfg.write_text(f"_base_ = [{LITE!r}]\ndetector = dict(imgsz='big')\n")
    image = sorted(COCO_DIR.glob("*.jpg"))[0]
    assert main(["run", str(image), "--config", str(cfg), "--out", str(tmp_path / "o"),
                 "--weights-dir", str(MODELS_DIR), "--device", "cpu"]) == 2
    assert_one_line_error(capsys.readouterr().err, "detector (UltralyticsDetector)", "imgsz", "int", "'big'")


def test_component_argument_types_accept_what_the_hints_allow():
    from bmp.models.base import check_argument_types

    class Part:
        def __init__(self, imgsz: int = 640, thr: float = 0.3, dirs: list[str] | None = None,
                     prompts: dict | None = None, anything=None) -> None: ...

    check_argument_types(Part, {"imgsz": 320, "thr": 1, "dirs": ["a"], "prompts": {"k": 1},
                                "anything": object()}, "part")
    for bad in ({"imgsz": 3.5}, {"thr": "0.3"}, {"dirs": "a"}, {"prompts": [1]}):
        with pytest.raises(ConfigError, match=f"part: {next(iter(bad))} must be"):
            check_argument_types(Part, bad, "part")


def test_run_ann_with_malformed_json_is_a_one_line_error(tmp_path, capsys):
    ann = tmp_path / "ann.json"
    ann.write_text('{"images": [')
    image = sorted(COCO_DIR.glob("*.jpg"))[0]
    assert main(["run", str(image), "--config", LITE, "--out", str(tmp_path / "o"),
                 "--ann", str(ann), "--device", "cpu"]) == 2
    assert_one_line_error(capsys.readouterr().err, str(ann), "not valid JSON")


# --- 9c. eval counts what it evaluates -------------------------------------------------------


def test_eval_with_a_missing_image_counts_only_the_evaluated_persons(tmp_path):
    images = copy_images(tmp_path / "images", [p.name for p in sorted(COCO_DIR.glob("*.jpg"))])
    gone = sorted(images.glob("*.jpg"))[1]
    gone.unlink()
    out = tmp_path / "out"
    assert main(["eval", "--config", LITE, "--ann", str(COCO_ANN), "--images", str(images),
                 "--out", str(out), "--device", "cpu", "--gt-kpts"]) == 0
    data = json.loads(COCO_ANN.read_text())
    kept = {i["id"] for i in data["images"] if i["file_name"] != gone.name}
    persons = sum(1 for a in data["annotations"]
                  if a["image_id"] in kept and not a.get("iscrowd", 0) and a["category_id"] == 1)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["subsets"]["all"] == {"description": "all persons", "images": 3, "instances": persons}
    assert f"3 images, {persons} persons" in (out / "metrics.md").read_text()


# --- 9d. resume signatures ------------------------------------------------------------------


def test_resume_compares_effective_values_not_spellings(tmp_path, fake_loop, monkeypatch):
    folder = copy_images(tmp_path / "images", ["a.jpg"])
    out = tmp_path / "out"
    monkeypatch.chdir(ROOT)
    argv = ["run", str(folder), "--out", str(out), "--device", "cpu"]
    assert main([*argv, "--config", "configs/bmp_lite.py"]) == 0
    assert main([*argv, "--config", "./configs/bmp_lite.py"]) == 0
    assert main([*argv, "--config", LITE, "--iters", "2"]) == 0  # the config's own value
    assert len(fake_loop) == 1


def test_a_changed_run_names_what_changed(tmp_path, fake_loop, capsys):
    folder = copy_images(tmp_path / "images", ["a.jpg"])
    out = tmp_path / "out"
    assert run(out, folder) == 0
    assert run(out, folder, extra=("--iters", "1")) == 2
    assert_one_line_error(capsys.readouterr().err, "changed: iters 2 → 1")


def test_eval_names_the_changed_setting_with_old_and_new_values(tmp_path, capsys):
    out = tmp_path / "out"
    other = tmp_path / "other.json"
    shutil.copy(COCO_ANN, other)
    argv = ["eval", "--config", LITE, "--images", str(COCO_DIR), "--out", str(out), "--device", "cpu",
            "--gt-kpts", "--limit", "1"]
    assert main([*argv, "--ann", str(COCO_ANN)]) == 0
    capsys.readouterr()
    assert main([*argv, "--ann", str(other)]) == 2
    assert_one_line_error(capsys.readouterr().err, f"ann '{COCO_ANN.resolve()}' → '{other.resolve()}'")


def test_describe_changes_lists_each_changed_key_once():
    assert describe_changes({"a": 1, "b": "x"}, {"a": 1, "b": "y", "c": None}) == "b 'x' → 'y'"


# --- 9e. file modes --------------------------------------------------------------------------


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_files_get_the_umask_mode_not_0600(tmp_path, umask_022):
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    assert mode(tmp_path / "a.json") == 0o644
    (tmp_path / "b.json").write_text("{}")
    (tmp_path / "b.json").chmod(0o640)
    write_json_atomic(tmp_path / "b.json", {})
    assert mode(tmp_path / "b.json") == 0o640  # an existing file keeps its mode
    log = FrameLog(tmp_path / "frames.jsonl")
    log.append({"file": "v/000000", "results": []})
    log.write_results(tmp_path / "results.json")
    assert mode(tmp_path / "results.json") == 0o644
    (tmp_path / "nope").write_text("")  # a file where a folder should be
    with pytest.raises(OutputError, match="cannot write"), atomic_write(tmp_path / "nope" / "x"):
        pass


def test_run_and_eval_outputs_are_readable_by_others(tmp_path, fake_loop, umask_022):
    folder = copy_images(tmp_path / "images", ["a.jpg"])
    out = tmp_path / "run"
    assert run(out, folder, extra=("--vis",)) == 0
    for name in ("results.json", "images.json", "run.json", "image_ids.json", "vis/a_1.jpg"):
        assert mode(out / name) == 0o644, name
    ev = tmp_path / "eval"
    assert main(["eval", "--config", LITE, "--ann", str(COCO_ANN), "--images", str(COCO_DIR),
                 "--out", str(ev), "--device", "cpu", "--gt-kpts", "--limit", "1"]) == 0
    for name in ("metrics.json", "metrics.md", "results_gt_kpts.json", "run.json"):
        assert mode(ev / name) == 0o644, name
