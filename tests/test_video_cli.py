"""``bmp video`` and ``bmp.track`` with the lite config (real YOLO11n-pose weights)
on the shared clips: playable MP4, per-frame JSONL with stable track ids,
Ctrl-C and resume, awkward but valid input, the temporal prior."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

import bmp
from bmp import BMP
from bmp.cli import main
from bmp.config import ConfigError, load_config
from bmp.masks import box_iou, mask_out
from bmp.video import VideoConfig, VideoPipeline
from bmp.video.cli import parse_position
from bmp.video.io import VideoReader, count_frames
from bmp.video.tracking import hungarian
from tests.conftest import MODELS_DIR, ROOT, SHARED, import_pyav, offline_bmp_home

av = import_pyav()

LITE = ROOT / "configs" / "bmp_lite.py"
VIDEO_DIR = SHARED / "data" / "video"
CLIPS = ["street_5frames.mp4", "posetrack_5frames.mp4"]


def video_args(clip: Path, out: Path, *extra: str) -> list[str]:
    return ["video", str(clip), "--config", str(LITE), "--out", str(out),
            "--weights-dir", str(MODELS_DIR), "--device", "cpu", *extra]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def full_runs(tmp_path_factory) -> dict[str, Path]:
    """One uninterrupted ``bmp video`` run per shared clip."""
    outs = {}
    with offline_bmp_home(tmp_path_factory):
        for name in CLIPS:
            out = tmp_path_factory.mktemp(name.split("_")[0])
            assert main(video_args(VIDEO_DIR / name, out)) == 0
            outs[name] = out
    return outs


@pytest.fixture(scope="module")
def lite() -> BMP:
    return BMP.from_config(LITE, device="cpu", weights_dirs=[MODELS_DIR])


@pytest.mark.parametrize("name", CLIPS)
def test_bmp_video_writes_a_playable_mp4_a_frame_log_and_a_summary(full_runs, name):
    out = full_runs[name]
    info = VideoReader(VIDEO_DIR / name).info
    assert count_frames(out / "annotated.mp4") == (5, info.height, info.width)

    records = read_jsonl(out / "frames.jsonl")
    assert [r["frame"] for r in records] == [0, 1, 2, 3, 4]
    assert all((r["height"], r["width"]) == (info.height, info.width) for r in records)
    results = [res for r in records for res in r["results"]]
    assert results and all(isinstance(res["track_id"], int) for res in results)
    assert json.loads((out / "results.json").read_text()) == results

    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == summary["frames_processed"] == 5 and not summary["interrupted"]
    assert [n for _, n in summary["people_per_frame"]] == [len(r["results"]) for r in records]
    assert summary["tracks"] == len({res["track_id"] for res in results} - {-1})
    assert summary["fps"] > 0 and not summary["variable_frame_rate"]


@pytest.mark.parametrize("name", CLIPS)
def test_people_seen_in_consecutive_frames_keep_their_track_id(full_runs, name):
    records = read_jsonl(full_runs[name] / "frames.jsonl")
    boxes, ids = [], []
    for rec in records:
        xyxy = np.array([r["bbox"] for r in rec["results"]], np.float32).reshape(-1, 4)
        xyxy[:, 2:] += xyxy[:, :2]
        boxes.append(xyxy)
        ids.append([r["track_id"] for r in rec["results"]])
    checked = 0
    for t in range(1, len(records)):
        tracked = [i for i in ids[t] if i >= 0]
        assert len(tracked) == len(set(tracked)), f"frame {t}: duplicate ids {ids[t]}"
        # The same person in both frames, judged by an independent cue: a clear box
        # overlap between frames, leaving out the loop's occasional double detections.
        unique = [((box_iou(b, b) > 0.5).sum(1) == 1) for b in (boxes[t - 1], boxes[t])]
        for i, j in hungarian(box_iou(boxes[t - 1], boxes[t]), 0.6):
            if ids[t - 1][i] >= 0 and unique[0][i] and unique[1][j]:
                assert ids[t][j] == ids[t - 1][i], f"frame {t}: id {ids[t - 1][i]} became {ids[t][j]}"
                checked += 1
    assert checked >= 4


def test_ctrl_c_leaves_a_playable_mp4_and_a_valid_log_and_resume_equals_one_full_run(full_runs, tmp_path):
    name = "street_5frames.mp4"
    out = tmp_path / "interrupted"
    env = dict(os.environ, BMP_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "bmp.cli", *video_args(VIDEO_DIR / name, out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "frames.jsonl"
    deadline = time.monotonic() + 180
    while not (log.exists() and log.read_text().count("\n") >= 1):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no frame logged in 180 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 130, stderr[-2000:]
    assert "re-run the same command to resume" in stderr

    done = read_jsonl(log)  # every line is complete JSON
    assert 1 <= len(done) < 5
    assert count_frames(out / "annotated.mp4")[0] == len(done)  # the MP4 plays, frame for frame
    with open(log, "a") as f:  # and a crash in the middle of a write is survived too
        f.write('{"file": "street_5frames.mp4/0000')

    assert main(video_args(VIDEO_DIR / name, out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_resumed"] == len(done) and summary["frames"] == 5
    assert read_jsonl(log) == read_jsonl(full_runs[name] / "frames.jsonl")
    assert count_frames(out / "annotated.mp4")[0] == 5


def test_bmp_track_yields_what_the_command_logs(full_runs, lite):
    name = "posetrack_5frames.mp4"
    logged = read_jsonl(full_runs[name] / "frames.jsonl")
    seen = []
    for index, people in bmp.track(VIDEO_DIR / name, lite):
        record = logged[index]
        assert people.track_id.tolist() == [r["track_id"] for r in record["results"]]
        np.testing.assert_allclose(people.boxes_xywh(), [r["bbox"] for r in record["results"]], atol=0.01)
        assert people.masks.shape[1:] == (720, 1280)
        seen.append(index)
    assert seen == [0, 1, 2, 3, 4]
    assert [i for i, _ in bmp.track(VIDEO_DIR / name, lite, start=1, end=5, every=2)] == [1, 3]


def test_temporal_prior_seeds_the_loop_with_the_previous_frames_tracks(lite):
    first, second = VideoReader(VIDEO_DIR / "street_5frames.mp4").frames(end=2)
    pipeline = VideoPipeline(lite, {"prior": {"enabled": True}})
    assert pipeline.predict_prior(first.image) is None
    people0, _ = pipeline.step(first)
    np.testing.assert_array_equal(lite.detector_inputs[0], first.image)  # nothing to seed yet

    prior = pipeline.predict_prior(second.image)
    assert sorted(prior.track_id.tolist()) == sorted(t for t in people0.track_id.tolist() if t >= 0)
    seeded = lite.seed(second.image, prior)
    assert len(seeded) >= 3 and (seeded.iteration == 0).all()
    people1, _ = pipeline.step(second)
    # The seeded people are blacked out of what the detector sees first ...
    np.testing.assert_array_equal(lite.detector_inputs[0], mask_out(second.image, seeded.masks))
    # ... and whoever the loop keeps (a seed, or a better re-detection) continues its track.
    assert len(set(people1.track_id.tolist()) & set(people0.track_id.tolist())) >= 3
    with pytest.raises(ConfigError, match="prior"):
        VideoConfig.from_dict({"prior": {"enabled": True, "gap": 2}})


def test_odd_sized_rotated_variable_rate_clip_runs_end_to_end(tmp_path):
    source = [f.image for f in VideoReader(VIDEO_DIR / "street_5frames.mp4").frames(end=3)]
    upright = [cv2.resize(f, (481, 271)) for f in source]  # odd width and height
    path = tmp_path / "phone.mp4"
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 271, 481, "yuv444p"  # stored sideways
    stream.codec_context.time_base = Fraction(1, 1000)
    stream.set_display_rotation(90)
    for image, pts in zip(upright, [0, 40, 200], strict=True):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(image, -1)), format="rgb24")
        frame.pts, frame.time_base = pts, stream.codec_context.time_base
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()

    out = tmp_path / "out"
    assert main(video_args(path, out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rotation"] == 90 and summary["variable_frame_rate"]
    assert (summary["width"], summary["height"]) == (481, 271)
    assert [(r["height"], r["width"], r["time"]) for r in read_jsonl(out / "frames.jsonl")] == [
        (271, 481, 0.0), (271, 481, 0.04), (271, 481, 0.2)]
    assert count_frames(out / "annotated.mp4") == (3, 272, 482)  # padded to even for H.264


def test_unreadable_video_is_a_one_line_error(tmp_path, capsys):
    garbage = tmp_path / "clip.mp4"
    garbage.write_bytes(b"\x00not a video" * 100)
    assert main(video_args(garbage, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert err.startswith("bmp: error: cannot open") and "Traceback" not in err


def test_video_config_section_is_accepted_and_checked():
    cfg = load_config(dict(detector=dict(type="X"), pose=dict(type="Y"), segmenter=dict(type="Z"),
                           video=dict(prior=dict(enabled=True), tracker=dict(max_age=3))))
    video = VideoConfig.from_dict(cfg.video)
    assert video.prior.enabled and video.tracker.max_age == 3 and video.propagation is None
    assert not video.with_prior(False).prior.enabled
    with pytest.raises(ConfigError, match="unknown"):
        VideoConfig.from_dict({"tracking": {}})


def test_start_and_end_accept_frames_or_seconds():
    assert parse_position("12", 30.0, "start") == 12
    assert parse_position("2.5s", 30.0, "end") == 75
    assert parse_position(None, 30.0, "end") is None
    with pytest.raises(ConfigError, match="frame index"):
        parse_position("two", 30.0, "start")
    with pytest.raises(ConfigError, match="no frame rate"):
        parse_position("1s", 0.0, "start")
