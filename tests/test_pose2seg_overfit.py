"""Pose2Seg trained by tools/train_pose2seg_net.py on the shared COCO images:
it overfits them, resumes, loads through bmp.weights and runs in the loop.

The smoke network is small (ResNet-18 stem + first stage as P2, frozen at
random init, cached features; the full-width SegModule of 10 residual units at
32 channels) so that training takes well under a minute on one CPU core."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest
import torch
from mmengine.config import Config

from bmp import BMP
from bmp.models.pose2seg.segmenter import Pose2SegSegmenter
from bmp.models.pose2seg.training import CHECKPOINT_NAME, CocoPoseMasks, mask_ious
from bmp.weights import load_checkpoint
from tests.conftest import COCO_ANN, COCO_DIR, MODELS_DIR, ROOT

CONFIG = ROOT / "configs" / "bmp_pose2seg.py"
SMALL = dict(backbone="resnet18", fpn_levels=(1,), fpn_channels=16, seg_channels=32)
ITERS = 60


def load_tool():
    path = ROOT / "tools" / "train_pose2seg_net.py"
    spec = importlib.util.spec_from_file_location("train_pose2seg_net", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def tool_args(work_dir, iters: int) -> list[str]:
    args = ["--config", str(CONFIG), "--ann", str(COCO_ANN), "--images", str(COCO_DIR),
            "--work-dir", str(work_dir), "--iters", str(iters), "--lr", "5e-3",
            "--images-per-step", "4", "--no-augment", "--freeze-backbone", "--cache",
            "--save-every", "25", "--seed", "0",
            "--set", f"templates={ROOT / 'configs/pose2seg/templates_coco_sample.json'}"]
    for key, value in SMALL.items():
        args += ["--set", f"{key}={value!r}"]
    return args


def network() -> dict:
    cfg = Config.fromfile(str(CONFIG)).segmenter.network.to_dict()
    return {**cfg, "templates": str(ROOT / cfg["templates"]), **SMALL}


def run_tool(work_dir, iters: int) -> None:
    """The training tool on one thread: on a shared, busy CPU that is several
    times faster than two threads waiting for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert load_tool().main(tool_args(work_dir, iters)) == 0
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Work dir of a finished smoke training run."""
    work_dir = tmp_path_factory.mktemp("pose2seg")
    run_tool(work_dir, ITERS)
    return work_dir


def test_overfit_run_reaches_mask_iou_above_08_on_the_shared_images(trained, capsys):
    # Loaded by registry-style lookup: the checkpoint's file name in a weights dir.
    segmenter = Pose2SegSegmenter(network=network(), checkpoint=CHECKPOINT_NAME,
                                  weights_dirs=[str(trained)])
    ious = mask_ious(segmenter, CocoPoseMasks(COCO_ANN, COCO_DIR))
    with capsys.disabled():
        print(f"\nPose2Seg overfit ({ITERS} steps): mask IoU mean {ious.mean():.3f}, "
              f"min {ious.min():.3f} over {len(ious)} people")
    assert len(ious) == 12  # every person with a labelled keypoint
    assert ious.mean() > 0.8


def test_training_resumes_from_its_atomic_checkpoint(trained, caplog):
    state = load_checkpoint(trained / CHECKPOINT_NAME)
    assert state["step"] == ITERS and state["network"]["backbone"] == "resnet18"
    assert torch.equal(state["state_dict"]["templates"], Pose2SegSegmenter(network=network()).net.templates)
    assert [p.name for p in trained.iterdir()] == [CHECKPOINT_NAME]  # no temp files left
    resumed = trained.parent / "resumed"
    resumed.mkdir()
    (resumed / CHECKPOINT_NAME).write_bytes((trained / CHECKPOINT_NAME).read_bytes())
    with caplog.at_level(logging.INFO):
        run_tool(resumed, ITERS + 2)
    assert f"resumed {resumed / CHECKPOINT_NAME} at step {ITERS}" in caplog.text
    assert load_checkpoint(resumed / CHECKPOINT_NAME)["step"] == ITERS + 2


def test_trained_pose2seg_runs_in_the_loop(trained, coco_images):
    cfg = Config.fromfile(str(CONFIG))
    cfg.segmenter.update(network=network(), checkpoint=str(trained / CHECKPOINT_NAME))
    bmp = BMP.from_config(cfg.to_dict(), device="cpu", weights_dirs=[MODELS_DIR])
    people = bmp.predict(coco_images[3])
    assert len(people) >= 3
    assert people.masks.sum(0).max() <= 1
    assert np.mean(people.masks.reshape(len(people), -1).any(1)) > 0.5
