"""Decoding and encoding video: the shared clips, bad inputs, rotation, odd sizes,
variable frame rate, and a writer that leaves playable files."""

from __future__ import annotations

import shutil
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from bmp.video.io import VideoError, VideoReader, VideoWriter, _Prefetch, count_frames
from tests.conftest import SHARED, import_pyav

av = import_pyav()

VIDEO_DIR = SHARED / "data" / "video"
CLIPS = {"street_5frames.mp4": (5, 540, 960, 5.0), "posetrack_5frames.mp4": (5, 720, 1280, 30.0)}
BACKENDS = ["pyav", "opencv"]


def write_clip(path: Path, frames: list[np.ndarray], pts_ms: list[int] | None = None,
               rotation: int = 0, pix_fmt: str = "yuv420p") -> Path:
    """An H.264 MP4 with PyAV; ``pts_ms`` gives (variable) timestamps, ``rotation``
    display-matrix metadata as phones write it (counter-clockwise degrees)."""
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=25)
    stream.height, stream.width = frames[0].shape[:2]
    stream.pix_fmt = pix_fmt
    stream.codec_context.time_base = Fraction(1, 1000)
    if rotation:
        stream.set_display_rotation(rotation)
    for i, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = pts_ms[i] if pts_ms else i * 40
        frame.time_base = Fraction(1, 1000)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


@pytest.fixture(scope="module")
def street_frames() -> list[np.ndarray]:
    return [f.image for f in VideoReader(VIDEO_DIR / "street_5frames.mp4").frames()]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CLIPS))
def test_shared_clips_decode_every_frame_upright_with_times(name, backend):
    frames_expected, h, w, fps = CLIPS[name]
    reader = VideoReader(VIDEO_DIR / name, backend=backend)
    assert (reader.info.width, reader.info.height, reader.info.rotation) == (w, h, 0)
    assert reader.info.fps == pytest.approx(fps)
    frames = list(reader.frames())
    assert [f.index for f in frames] == list(range(frames_expected))
    assert all(f.image.shape == (h, w, 3) and f.image.dtype == np.uint8 for f in frames)
    np.testing.assert_allclose([f.time for f in frames], np.arange(frames_expected) / fps, atol=1e-3)


def test_frame_range_and_step_select_source_indices():
    reader = VideoReader(VIDEO_DIR / "posetrack_5frames.mp4")
    assert [f.index for f in reader.frames(start=1, end=5, every=2)] == [1, 3]
    assert [f.index for f in reader.frames(start=3)] == [3, 4]
    assert reader.expected_frames(start=1, end=5, every=2) == 2
    assert list(reader.frames(start=7)) == []
    with pytest.raises(VideoError, match="range"):
        reader.frames(start=3, end=3)


def test_bad_inputs_fail_fast_with_a_clear_message(tmp_path, street_frames):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(20000))
    # A valid container with a video track but no frames at all.
    no_frames = tmp_path / "no_frames.mp4"
    container = av.open(str(no_frames), "w")
    stream = container.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()
    container.close()
    # Frames listed in the index whose data was wiped.
    wiped = tmp_path / "wiped.mp4"
    data = bytearray((VIDEO_DIR / "street_5frames.mp4").read_bytes())
    start, end = data.find(b"mdat") + 4, data.find(b"moov")
    data[start:end] = bytes(end - start)
    wiped.write_bytes(bytes(data))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes((VIDEO_DIR / "street_5frames.mp4").read_bytes()[:50000])

    cases = {
        tmp_path / "missing.mp4": "not found", tmp_path: "not a regular file", empty: "empty",
        garbage: "cannot open", no_frames: "no video stream|no decodable|cannot open", wiped: "no decodable",
        truncated: "cannot open|no decodable",
    }
    for backend in BACKENDS:
        for path, message in cases.items():
            began = time.perf_counter()
            with pytest.raises(VideoError, match=message):
                list(VideoReader(path, backend=backend, timeout=10).frames())
            assert time.perf_counter() - began < 10, f"{path.name} ({backend}) took too long"


def test_a_stalled_decoder_times_out_instead_of_hanging():
    def stalled():
        time.sleep(30)
        yield None

    began = time.perf_counter()
    with pytest.raises(VideoError, match="no frame for 0.5 s"):
        list(_Prefetch(stalled, timeout=0.5))
    assert time.perf_counter() - began < 5


@pytest.mark.parametrize("backend", BACKENDS)
def test_rotated_phone_video_comes_out_upright(tmp_path, street_frames, backend):
    upright = [cv2.resize(f, (240, 136)) for f in street_frames[:2]]
    # A phone stores the sensor's landscape image and a display rotation.
    stored = [np.ascontiguousarray(np.rot90(f, -1)) for f in upright]
    path = write_clip(tmp_path / "phone.mp4", stored, rotation=90)
    reader = VideoReader(path, backend=backend)
    assert (reader.info.width, reader.info.height, reader.info.rotation) == (240, 136, 90)
    frames = list(reader.frames())
    assert len(frames) == 2 and frames[0].image.shape == (136, 240, 3)
    assert np.abs(frames[0].image.astype(int) - upright[0]).mean() < 12


def test_odd_sized_variable_rate_video_keeps_its_size_and_timestamps(tmp_path, street_frames):
    frames = [cv2.resize(f, (241, 135)) for f in street_frames[:3]]
    path = write_clip(tmp_path / "vfr.mp4", frames, pts_ms=[0, 40, 200], pix_fmt="yuv444p")
    for backend in BACKENDS:
        decoded = list(VideoReader(path, backend=backend).frames())
        assert [f.image.shape for f in decoded] == [(135, 241, 3)] * 3
        np.testing.assert_allclose([f.time for f in decoded], [0, 0.04, 0.2], atol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_writer_output_decodes_back_and_odd_sizes_are_padded_to_even(tmp_path, backend):
    path = tmp_path / f"out_{backend}.mp4"
    with VideoWriter(path, fps=5, backend=backend) as writer:
        for i in range(6):
            writer.write(np.full((51, 63, 3), 40 * i, np.uint8))
    assert writer.frames_written == 6 and writer.size == (52, 64)
    assert count_frames(path) == (6, 52, 64)


def decodable_frames(path: Path) -> int:
    """Frames a player gets out of a possibly unfinished MP4 (0 when none)."""
    try:
        return count_frames(path)[0]
    except VideoError:
        return 0


def test_unclosed_writer_file_already_plays(tmp_path):
    """A killed process cannot close the MP4: after every write, every frame but the
    newest is already on disk. At 25 fps a GOP is 25 frames, longer than the clip,
    so this holds only with a fragment per frame, not per keyframe."""
    path = tmp_path / "live.mp4"
    writer = VideoWriter(path, fps=25, backend="pyav")
    rng = np.random.default_rng(0)
    on_disk = []
    for i in range(8):
        writer.write(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
        snapshot = shutil.copy(path, tmp_path / f"snapshot{i}.mp4")
        on_disk.append((decodable_frames(snapshot), writer.frames_on_disk))
    assert on_disk == [(i, i) for i in range(8)]
    writer.close()
    assert writer.frames_on_disk == 8
    assert count_frames(path) == (8, 64, 96)
