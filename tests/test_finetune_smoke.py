"""CPU smoke run of SAM-pose2seg training: SAM 2.1 Hiera-T at random init on
real COCO images and masks -- overfitting, checkpoints, resume, the CLI, and
the trained weights in the segmenter and the loop."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from pycocotools import mask as mask_utils

from bmp import BMP
from bmp.cli import main
from bmp.finetune.checkpoint import load_training_state
from bmp.finetune.config import load_train_config
from bmp.finetune.data import load_model_input, make_train_item
from bmp.finetune.evaluate import image_predictor, predict_masks
from bmp.finetune.interactive import interactive_forward
from bmp.finetune.samplers import Pose, PoseMaskRefine
from bmp.finetune.trainer import Pose2SegTrainer, set_train_mode
from bmp.images import load_image
from bmp.models.sam_features import decoder_features
from bmp.models.segmenters import SAM2Segmenter
from bmp.prompts import PromptConfig
from bmp.structures import Instances
from bmp.weights import extract_state_dict, load_checkpoint, load_weights
from tests.conftest import COCO_ANN, COCO_DIR, MODELS_DIR, ROOT
from tests.tiny_models import SAM21_T

TINY = ROOT / "configs" / "train_sam_pose2seg_tiny.py"
IMAGE_IDS = (785, 40083)  # one person; three (one without keypoints) -- 2 train images keep it fast
MAX_VIS3 = dict(method="max_vis", num_points=3, visibility_thr=0.5)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The 2 CPU cores are shared: one intra-op thread avoids oversubscription,
    which makes these decoder-heavy steps several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sam_tiny(tmp_path_factory) -> Path:
    """SAM 2.1 Hiera-T with random weights, saved like Meta's checkpoints."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(2)
    model = build_sam2(SAM21_T, ckpt_path=None, device="cpu", mode="eval")
    path = tmp_path_factory.mktemp("sam") / "sam21_hiera_t_random.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def config_file(tmp_path_factory, sam_tiny) -> Path:
    """The tiny config on two of the shared images; the 3-person image's masks
    stored as compressed RLE (as OCHuman does), features cached on disk so
    that every trainer of this module encodes each image once."""
    folder = tmp_path_factory.mktemp("pose2seg")
    data = json.loads(COCO_ANN.read_text())
    data["images"] = [i for i in data["images"] if i["id"] in IMAGE_IDS]
    data["annotations"] = [copy.deepcopy(a) for a in data["annotations"] if a["image_id"] in IMAGE_IDS]
    for ann in data["annotations"]:
        if ann["image_id"] == 40083:
            rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], 333, 500))
            ann["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    ann = folder / "two_images.json"
    ann.write_text(json.dumps(data))
    dataset = dict(ann_file=str(ann), img_dir=str(COCO_DIR), keypoints="gt")
    path = folder / "tiny_two_images.py"
    path.write_text(
        f"_base_ = [{str(TINY)!r}]\n"
        f"model = dict(checkpoint={str(sam_tiny)!r})\n"
        f"data = dict(train=[{dataset!r}], val=[{dataset!r}], feature_cache={str(folder / 'features')!r})\n"
    )
    return path


@pytest.fixture(scope="module")
def overfit(config_file, tmp_path_factory):
    """30 steps on one fixed batch (the same clicks each step) at a constant LR."""
    cfg = load_train_config(config_file, {"schedule.min_lr_ratio": 1.0, "optimizer.lr": 1e-4})
    trainer = Pose2SegTrainer(cfg, work_dir=str(tmp_path_factory.mktemp("overfit")))
    dataset = trainer.train_data[0]
    entry = next(e for e in dataset.images if e.image_id == 785)
    batch = [make_train_item(dataset, entry, np.arange(len(entry.ann_ids)), trainer.model.image_size, False)]
    losses = [trainer.train_step(batch, np.random.default_rng(0))["loss"] for _ in range(30)]
    print("overfit losses:", [round(v, 3) for v in losses])
    return trainer, losses


def test_overfitting_a_fixed_batch_decreases_the_loss(overfit):
    trainer, losses = overfit
    assert trainer.step == 30
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.6 * losses[0]
    assert np.mean(losses[-5:]) < np.mean(losses[5:10]) < np.mean(losses[:5])


def test_eight_clicks_each_correct_the_previous_prediction(overfit):
    trainer, _ = overfit
    dataset = trainer.train_data[0]
    entry = next(e for e in dataset.images if e.image_id == 40083)
    item = make_train_item(dataset, entry, np.arange(len(entry.ann_ids)), trainer.model.image_size, False)
    with torch.no_grad():
        encoded = trainer.encoder([item.input.key], [item.input.image])
        one_row_per_person = torch.zeros(len(item.masks), dtype=torch.long)
        features = decoder_features(trainer.model, encoded).index(one_row_per_person)
        poses = [Pose(k, v) for k, v in zip(item.keypoints, item.visibility, strict=True)]
        sampler = PoseMaskRefine(prob_mask_rule=0.0, prob_from_gt=0.0)
        steps, clicks = interactive_forward(
            trainer.model, features, item.masks, poses, sampler, 8, np.random.default_rng(0)
        )
    size = trainer.model.image_size
    assert len(steps) == 8 and all(len(c) == 8 for c in clicks)
    assert steps[0].masks.shape == (3, 3, size, size)  # one click: three candidate masks
    assert all(s.masks.shape == (3, 1, size, size) for s in steps[1:])
    for person, row in enumerate(clicks):
        ranked = np.argsort(item.visibility[person], kind="stable")[::-1]  # ties: higher index
        if item.visibility[person].max() >= 0.5:
            assert row[0].keypoint == ranked[0]  # the most visible keypoint first
        gt = item.masks[person]
        for k in range(1, 8):  # every later click fixes an error of the step before
            pred = steps[k - 1].best_masks()[person] > 0
            x, y = int(row[k].xy[0]), int(row[k].xy[1])
            wrong = bool(gt[y, x]) != bool(pred[y, x])
            assert wrong and row[k].label == int(gt[y, x])
    person_without_pose = int(np.flatnonzero(item.visibility.max(1) == 0)[0])
    assert clicks[person_without_pose][0].keypoint is None  # fell back to a GT-mask click


def test_training_touches_only_prompt_encoder_and_mask_decoder(overfit, sam_tiny):
    trainer, _ = overfit
    init = extract_state_dict(load_checkpoint(sam_tiny))
    now = trainer.model.state_dict()
    changed = {k.split(".")[0] for k in now if not torch.equal(now[k], init[k])}
    assert changed == {"sam_prompt_encoder", "sam_mask_decoder"}


def test_checkpoint_saves_and_reloads_bit_identically(overfit, config_file, tmp_path):
    from sam2.build_sam import build_sam2

    trainer, _ = overfit
    trainer.work_dir, trainer.epoch = tmp_path, 1
    path = trainer.save()
    assert path.name == "epoch_001.pt" and not list(tmp_path.glob(".*.tmp"))
    # Weights: through bmp.weights, as SAM2Segmenter loads them (strict keys).
    fresh = build_sam2(SAM21_T, ckpt_path=None, device="cpu", mode="eval")
    load_weights(fresh, path, strict=True)
    reloaded = fresh.state_dict()
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, reloaded[key]), key
    # Training state: a new trainer resumes with the same step and optimizer moments.
    other = Pose2SegTrainer(load_train_config(config_file), work_dir=str(tmp_path / "other"))
    other.resume(path)
    assert (other.step, other.epoch) == (30, 1)
    a, b = trainer.optimizer.state_dict(), other.optimizer.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i, state in a["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["state"][i][name]), (i, name)


def test_checkpoint_runs_in_segmenter_like_validation(overfit, tmp_path):
    trainer, _ = overfit
    trainer.work_dir, trainer.epoch = tmp_path, 1
    path = trainer.save()
    segmenter = SAM2Segmenter(config=SAM21_T, checkpoint=str(path), prompts=MAX_VIS3)
    dataset = trainer.train_data[0]
    entry = next(e for e in dataset.images if e.image_id == 40083)
    poses = entry.prompts
    image = load_image(entry.path)
    boxes = np.concatenate([poses.keypoints.min(1), poses.keypoints.max(1)], 1)
    people = Instances(image.shape[:2], boxes=boxes, keypoints=poses.keypoints,
                       keypoint_scores=poses.keypoint_scores, visibility=poses.visibility)
    segmenter.set_image(image)
    out = segmenter.segment(people)
    assert out.masks.shape == (len(poses), *image.shape[:2])
    assert ((out.prompt_labels == 1).sum(1) <= 3).all()
    # Validation predicts exactly what the segmenter will.
    model_input = load_model_input(entry, trainer.model.image_size)
    trainer.model.eval()
    try:
        features = trainer.encoder([model_input.key], [model_input.image])
        masks, ious, prompted = predict_masks(
            image_predictor(trainer.model), features, image.shape[:2], poses, PromptConfig(**MAX_VIS3),
        )
    finally:
        set_train_mode(trainer.model, trainer.cfg.model.trainable)
    assert prompted.all()
    assert np.array_equal(masks, out.to_host().masks)
    assert np.allclose(ious, out.mask_scores, atol=1e-5)


def test_exported_weights_run_in_the_loop_unchanged(overfit, tmp_path):
    trainer, _ = overfit
    trainer.work_dir = tmp_path
    exported = tmp_path / "SAM-pose2seg_hiera_t.pt"
    torch.save({"model": trainer.model.state_dict()}, exported)
    cfg = Config.fromfile(str(ROOT / "configs" / "bmp_lite.py"))
    cfg.segmenter = dict(type="SAM2Segmenter", config=SAM21_T, checkpoint=str(exported), prompts=MAX_VIS3)
    loop = BMP.from_config(cfg, device="cpu", weights_dirs=[MODELS_DIR])
    people = loop.predict(COCO_DIR / "000000000785.jpg")
    assert len(people) >= 1
    assert people.masks.shape[1:] == (425, 640)
    assert people.masks.sum(0).max() <= 1  # exclusive masks
    assert ((people.prompt_labels == 1).sum(1) <= 3).all()


def test_fit_then_resume_continues_the_step_count_like_an_uninterrupted_run(config_file, tmp_path):
    one_step = {"schedule.max_steps_per_epoch": 1}
    interrupted = tmp_path / "interrupted"
    trainer = Pose2SegTrainer(load_train_config(config_file, one_step), work_dir=str(interrupted))
    trainer.fit()
    first = load_training_state(interrupted / "epoch_001.pt")
    assert (first["epoch"], first["step"]) == (1, 1)
    assert 0.0 <= first["val"]["two_images"]["AP"] <= 1.0  # pycocotools segm AP
    assert (interrupted / "SAM-pose2seg_hiera_t.pt").is_file()

    code = main(["train-pose2seg", str(config_file), "--work-dir", str(interrupted), "--resume",
                 "--device", "cpu", "--cfg-options", "schedule.epochs=2", "schedule.max_steps_per_epoch=1"])
    assert code == 0
    resumed = load_training_state(interrupted / "epoch_002.pt")
    assert (resumed["epoch"], resumed["step"]) == (2, 2)
    steps = [json.loads(line).get("step") for line in (interrupted / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 1, 2, 2]  # a train line and a val line per epoch

    two_epochs = load_train_config(config_file, {**one_step, "schedule.epochs": 2})
    straight = Pose2SegTrainer(two_epochs, work_dir=str(tmp_path / "straight"))
    straight.fit()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed["model"][key]), key


def test_cli_reports_a_bad_config_and_the_tool_script_is_the_same_command(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text(f"_base_ = [{str(TINY)!r}]\nsampler = dict(type='BoxRefine')\n")
    assert main(["train-pose2seg", str(bad)]) == 2
    assert "sampler.type must be one of" in capsys.readouterr().err
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "train_pose2seg.py"), "--help"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--resume" in result.stdout and "--cfg-options" in result.stdout
