"""SAM-pose2seg training pieces without a model: datasets, config, losses,
learning-rate schedule, checkpoint files."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from bmp.config import ConfigError
from bmp.finetune.checkpoint import latest_checkpoint, load_training_state, save_epoch
from bmp.finetune.config import DatasetConfig, LossConfig, load_train_config
from bmp.finetune.data import PersonMaskDataset, make_train_item
from bmp.finetune.interactive import DecodeStep
from bmp.finetune.losses import MultiStepLoss, dice_loss, focal_loss, iou_loss
from bmp.finetune.trainer import lr_factor
from tests.conftest import COCO_ANN, COCO_DIR, ROOT

TINY = ROOT / "configs" / "train_sam_pose2seg_tiny.py"


@pytest.fixture(scope="module")
def coco_json() -> dict:
    return json.loads(COCO_ANN.read_text())


def write(tmp_path, data, name="ann.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def spec(ann, **kw) -> DatasetConfig:
    return DatasetConfig(ann_file=str(ann), img_dir=str(COCO_DIR), **kw)


def test_polygon_and_rle_masks_decode_alike(tmp_path, coco_json):
    polygons = PersonMaskDataset(spec(COCO_ANN))
    data = copy.deepcopy(coco_json)
    for ann in data["annotations"]:
        img = next(i for i in data["images"] if i["id"] == ann["image_id"])
        rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], img["height"], img["width"]))
        rle["counts"] = rle["counts"].decode("ascii")  # compressed RLE as OCHuman stores it
        ann["segmentation"] = rle
    rles = PersonMaskDataset(spec(write(tmp_path, data)))
    assert [e.ann_ids for e in rles.images] == [e.ann_ids for e in polygons.images]
    for a, b in zip(polygons.images, rles.images, strict=True):
        assert np.array_equal(polygons.masks(a), rles.masks(b))
        assert polygons.masks(a).any(axis=(1, 2)).all()


def test_gt_keypoints_carry_coco_visibility(coco_json):
    ds = PersonMaskDataset(spec(COCO_ANN))
    entry = ds.images[0]
    ann = ds.coco.anns[entry.ann_ids[0]]
    flags = np.asarray(ann["keypoints"]).reshape(17, 3)[:, 2]
    assert np.array_equal(entry.visibility[0], np.select([flags == 2, flags == 1], [1.0, 0.5], 0.0))
    assert np.allclose(entry.keypoints[0], np.asarray(ann["keypoints"]).reshape(17, 3)[:, :2])
    # Val prompts: GT poses with at least one labelled keypoint.
    assert all(len(e.prompts) <= len(e.ann_ids) for e in ds.images)
    assert ds.num_people == sum(1 for a in coco_json["annotations"] if not a["iscrowd"])


def test_detected_keypoints_are_matched_by_box_and_keep_their_visibility(tmp_path, coco_json):
    image_id = 197388  # five people
    anns = [a for a in coco_json["annotations"] if a["image_id"] == image_id]
    results = []
    for i, ann in enumerate(anns[:-1]):  # the last person is not detected
        kpts = np.asarray(ann["keypoints"], np.float32).reshape(17, 3)
        kpts[:, :2] += 2.0
        kpts[:, 2] = 0.9
        x, y, w, h = ann["bbox"]
        results.append({
            "image_id": image_id, "category_id": 1, "score": 0.8,
            "bbox": [x + 3, y - 2, w, h], "keypoints": kpts.reshape(-1).tolist(),
            **({"visibility": [0.1 * (i + 1)] * 17} if i == 0 else {}),
        })
    results.append({"image_id": image_id, "category_id": 1, "score": 0.3, "bbox": [0, 0, 5, 5],
                    "keypoints": [1.0, 1.0, 0.5] * 17})  # a false positive far from everyone
    ds = PersonMaskDataset(spec(COCO_ANN, keypoints=str(write(tmp_path, results, "res.json"))))
    entry = next(e for e in ds.images if e.image_id == image_id)
    order = {a["id"]: a for a in anns}
    for row, ann_id in enumerate(entry.ann_ids):
        ann = order[ann_id]
        if ann is anns[-1]:
            assert not entry.visibility[row].any()  # unmatched: samplers fall back to the mask
            continue
        gt_xy = np.asarray(ann["keypoints"], np.float32).reshape(17, 3)[:, :2]
        assert np.allclose(entry.keypoints[row], gt_xy + 2.0)
        expected = 0.1 if ann is anns[0] else 0.9  # visibility field, else keypoint scores
        assert np.allclose(entry.visibility[row], expected)
    assert len(entry.prompts) == len(results)  # validation prompts with every detection
    assert all(len(e.prompts) == 0 for e in ds.images if e.image_id != image_id)


def test_train_item_is_in_the_model_input_frame_and_flips_left_right(coco_json):
    ds = PersonMaskDataset(spec(COCO_ANN))
    entry = next(e for e in ds.images if e.image_id == 785)
    size = 256
    item = make_train_item(ds, entry, np.array([0]), size, flip=False)
    assert item.input.image.shape == (3, size, size) and item.input.orig_hw == (425, 640)
    assert item.masks.shape == (1, size, size) and item.masks.dtype == torch.bool
    assert np.allclose(item.keypoints[0, :, 0], entry.keypoints[0, :, 0] * size / 640)
    assert np.allclose(item.keypoints[0, :, 1], entry.keypoints[0, :, 1] * size / 425)
    flipped = make_train_item(ds, entry, np.array([0]), size, flip=True)
    assert flipped.input.key != item.input.key
    assert torch.equal(flipped.masks, item.masks.flip(-1))
    # Left shoulder of the flipped person = mirrored right shoulder of the original.
    assert np.isclose(flipped.keypoints[0, 5, 0], size - item.keypoints[0, 6, 0], atol=1e-3)
    assert np.isclose(flipped.visibility[0, 5], item.visibility[0, 6])


def test_bad_datasets_fail_with_clear_errors(tmp_path, coco_json):
    with pytest.raises(ConfigError, match="annotation file not found"):
        PersonMaskDataset(spec(tmp_path / "nope.json"))
    with pytest.raises(ConfigError, match="image folder not found"):
        PersonMaskDataset(DatasetConfig(ann_file=str(COCO_ANN), img_dir=str(tmp_path / "none")))
    with pytest.raises(ConfigError, match="4 of 4 images .* are missing"):
        PersonMaskDataset(DatasetConfig(ann_file=str(COCO_ANN), img_dir=str(tmp_path)))
    cats = copy.deepcopy(coco_json)
    cats["categories"] = [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}]
    with pytest.raises(ConfigError, match="no category named 'person'"):
        PersonMaskDataset(spec(write(tmp_path, cats)))
    with pytest.raises(ConfigError, match="no usable person"):
        PersonMaskDataset(spec(COCO_ANN), min_mask_area=1e9)
    with pytest.raises(ConfigError, match="lacks image_id or 17 keypoints"):
        PersonMaskDataset(spec(COCO_ANN, keypoints=str(write(tmp_path, [{"image_id": 785}], "r.json"))))
    with pytest.raises(ConfigError, match="results file not found"):
        PersonMaskDataset(spec(COCO_ANN, keypoints=str(tmp_path / "missing.json")))


def test_configs_load_and_typos_are_errors():
    full = load_train_config(ROOT / "configs" / "train_sam_pose2seg.py")
    assert full.sampler.type == "PoseMaskRefine" and full.sampler.num_points == 8
    assert full.model.trainable == ("sam_prompt_encoder", "sam_mask_decoder")
    assert full.val.prompts["method"] == "max_vis" and full.val.prompts["num_points"] == 3
    tiny = load_train_config(TINY, {"schedule.epochs": 3, "sampler.type": "MaskRefine"})
    assert tiny.schedule.epochs == 3 and tiny.sampler.type == "MaskRefine"
    assert tiny.data.train[0].ann_file.endswith("annotations.json")
    with pytest.raises(ConfigError, match=r"sampler: unknown key\(s\) \['num_pionts'\]"):
        load_train_config(TINY, {"sampler.num_pionts": 4})
    with pytest.raises(ConfigError, match="sampler.type must be one of"):
        load_train_config(TINY, {"sampler.type": "BoxRefine"})
    with pytest.raises(ConfigError, match="prob_mask_rule must be in"):
        load_train_config(TINY, {"sampler.prob_mask_rule": 2.0})
    with pytest.raises(ConfigError, match="val.prompts"):
        load_train_config(TINY, {"val.prompts.method": "best"})
    with pytest.raises(ConfigError, match="config file not found"):
        load_train_config(ROOT / "configs" / "nope.py")


def test_losses_follow_sam2_definitions():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1
    perfect = (target * 2 - 1) * 20  # confident and right
    wrong = -perfect
    assert focal_loss(perfect, target).item() < 1e-6 < focal_loss(wrong, target).item()
    assert dice_loss(perfect, target).item() < 1e-3 and dice_loss(wrong, target).item() > 0.9
    assert iou_loss(perfect, target, torch.tensor([[0.75]])).item() == pytest.approx(0.25)
    assert iou_loss(perfect, target, torch.tensor([[0.75]]), use_l1=False).item() == pytest.approx(0.0625)
    # Multimask: focal + dice from the best mask, IoU loss averaged over all three.
    masks = torch.cat([wrong, perfect, wrong], dim=1)
    best = torch.zeros(1, dtype=torch.long)
    step = DecodeStep(masks, masks, torch.ones(1, 3), torch.full((1, 1), 10.0), best)
    out = MultiStepLoss(LossConfig())([step, step], target[:, 0] > 0)
    assert out["focal"].item() < 1e-6 and out["dice"].item() < 2e-3
    assert out["iou"].item() == pytest.approx(2 * (0 + 1 + 1) / 3)  # two steps
    assert out["loss"].item() == pytest.approx(
        20 * out["focal"].item() + out["dice"].item() + out["iou"].item() + out["object"].item()
    )


def test_learning_rate_warms_up_then_decays_to_the_floor():
    factors = [lr_factor(s, 100, 10, 0.1) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))


def test_epoch_checkpoints_are_atomic_pruned_and_found(tmp_path):
    state = {"model": {"w": torch.arange(3.0)}, "optimizer": {}, "epoch": 0, "step": 0}
    for epoch in (1, 2, 3):
        save_epoch(tmp_path, epoch, {**state, "epoch": epoch, "step": 10 * epoch}, keep_last=2)
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pt")) == ["epoch_002.pt", "epoch_003.pt"]
    assert not list(tmp_path.glob(".*.tmp"))
    latest = latest_checkpoint(tmp_path)
    assert latest.name == "epoch_003.pt" and load_training_state(latest)["step"] == 30
    (tmp_path / "last_checkpoint").unlink()
    assert latest_checkpoint(tmp_path).name == "epoch_003.pt"
    assert latest_checkpoint(tmp_path / "empty") is None
