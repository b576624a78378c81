"""SAM 2 video-memory propagation, streamed frame by frame: a real SAM 2.1
Hiera-T with random weights (at a 128 px input to stay fast on a CPU)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from bmp import BMP
from bmp.video.io import VideoReader
from bmp.video.pipeline import VideoPipeline, build_propagator
from bmp.video.propagation import SAM2MemoryPropagator
from tests.conftest import MODELS_DIR, ROOT, SHARED

SAM21_T = "configs/sam2.1/sam2.1_hiera_t.yaml"
STREET = SHARED / "data" / "video" / "street_5frames.mp4"


@pytest.fixture(scope="module")
def sam_checkpoint(tmp_path_factory):
    from sam2.build_sam import build_sam2

    torch.manual_seed(2)
    model = build_sam2(SAM21_T, ckpt_path=None, device="cpu", mode="eval")
    path = tmp_path_factory.mktemp("sam") / "sam21_hiera_t_random.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def propagator(sam_checkpoint) -> SAM2MemoryPropagator:
    return SAM2MemoryPropagator(SAM21_T, str(sam_checkpoint), image_size=128, max_cond_frames=2)


@pytest.fixture(scope="module")
def frames():
    return [f.image for f in VideoReader(STREET).frames(end=3)]


def box_mask(shape, x0, y0, x1, y1):
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_masks_propagate_to_the_next_frame_and_memory_stays_bounded(propagator, frames):
    prop = propagator
    prop.reset()
    small = [f[::4, ::4].copy() for f in frames]  # the model resizes to its input anyway
    shape = small[0].shape[:2]
    assert prop.propagate(small[0]) == {}  # nothing remembered yet
    prop.remember({1: box_mask(shape, 10, 20, 40, 100), 2: box_mask(shape, 150, 30, 190, 120)}, {1, 2})

    out = prop.propagate(small[1])
    assert sorted(out) == [1, 2]
    assert all(m.shape == shape and m.dtype == bool for m in out.values())
    prop.remember({1: box_mask(shape, 12, 20, 42, 100)}, {1})  # track 2 died
    assert sorted(prop.memory) == [1]

    for step in range(2, 9):  # matched every other frame, propagated in between
        prop.propagate(small[step % len(small)])
        prop.remember({1: box_mask(shape, 12, 20, 42, 100)} if step % 2 else {}, {1})
    memory = prop.memory[1]
    assert len(memory["cond_frame_outputs"]) == 2
    spatial = [s for s, o in memory["non_cond_frame_outputs"].items() if o["maskmem_features"] is not None]
    assert len(spatial) + 2 <= prop.model.num_maskmem + 2
    assert min(spatial) > prop.step - prop.model.num_maskmem


def test_pipeline_associates_with_propagated_masks_and_restore_rebuilds_the_memory(propagator):
    lite = BMP.from_config(ROOT / "configs" / "bmp_lite.py", device="cpu", weights_dirs=[MODELS_DIR])
    propagator.reset()
    live = VideoPipeline(lite, None, propagator)
    reader = VideoReader(STREET)
    records, ids = [], []
    for frame in reader.frames(end=2):
        people, record = live.step(frame, STREET.name)
        records.append(record)
        ids.append(set(people.track_id.tolist()))
    assert live.seconds["propagate"] > 0
    assert len(propagator.memory) == len(live.tracker.tracks)
    assert len(ids[0] & ids[1]) >= 2
    state = (propagator.step, propagator.memory_frames(), sorted(propagator.memory))

    propagator.reset()  # resume: the memory is rebuilt from the log, the loop is not run
    resumed = VideoPipeline(lite, None, propagator)
    for frame, record in zip(reader.frames(end=2), records, strict=True):
        resumed.restore(frame, record)
    assert (propagator.step, propagator.memory_frames(), sorted(propagator.memory)) == state
    assert resumed.tracker.tracks.keys() == live.tracker.tracks.keys()
    assert "detect" not in resumed.seconds


def test_propagation_is_skipped_with_a_warning_when_sam2_weights_are_missing(caplog):
    with caplog.at_level(logging.WARNING):
        assert build_propagator({"config": SAM21_T, "checkpoint": "sam2.1-hiera-b+"}, "cpu", []) is None
    assert "propagation is off" in caplog.text
