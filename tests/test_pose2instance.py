"""Pose2Instance on the shared COCO images with their ground-truth poses."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from bmp import BMP
from bmp.images import load_image
from bmp.masks import mask_iou
from bmp.models import SEGMENTERS
from bmp.models.base import build_component
from bmp.models.pose2instance import Pose2InstanceSegmenter, pose_instance_partition
from bmp.models.skeleton_field import (
    KEYPOINT_RADIUS,
    PARTS,
    body_reach_boxes,
    person_scales,
    skeleton_distance,
)
from bmp.structures import Instances
from tests.conftest import COCO_ANN, COCO_DIR, MODELS_DIR, ROOT


@pytest.fixture(scope="module")
def coco() -> COCO:
    return COCO(str(COCO_ANN))


def gt_people(coco: COCO, image_id: int, with_masks: bool = False) -> tuple[Instances, np.ndarray]:
    """Posed GT persons of one image (boxes, keypoints, v > 0 as visibility)
    and their GT masks."""
    info = coco.imgs[image_id]
    anns = [a for a in coco.imgToAnns[image_id] if a["num_keypoints"] > 0 and not a["iscrowd"]]
    boxes = np.array([a["bbox"] for a in anns], np.float32)
    boxes[:, 2:] += boxes[:, :2]
    kpts = np.array([a["keypoints"] for a in anns], np.float32).reshape(-1, 17, 3)
    vis = (kpts[..., 2] > 0).astype(np.float32)
    gt = np.stack([coco.annToMask(a).astype(bool) for a in anns])
    people = Instances((info["height"], info["width"]), boxes=boxes, keypoints=kpts[..., :2].copy(),
                       keypoint_scores=vis, visibility=vis.copy(), presence=vis.copy(),
                       masks=gt if with_masks else None)
    return people, gt


def image_of(coco: COCO, image_id: int) -> np.ndarray:
    return load_image(COCO_DIR / coco.imgs[image_id]["file_name"])


def assert_keypoints_inside(people: Instances, masks: np.ndarray) -> None:
    h, w = people.image_size
    for i in range(len(people)):
        xy = np.round(people.keypoints[i][people.visibility[i] > 0]).astype(int)
        xy = xy[(xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)]
        assert masks[i][xy[:, 1], xy[:, 0]].all(), f"person {i} lost some of its keypoints"


@pytest.mark.parametrize("prior", ["uniform", "gt_masks", "masks_elsewhere"])
def test_masks_are_exclusive_and_contain_their_visible_keypoints(coco, prior):
    segmenter = Pose2InstanceSegmenter(prior="auto")
    for image_id in sorted(coco.imgs):
        people, gt = gt_people(coco, image_id, with_masks=prior == "gt_masks")
        if prior == "masks_elsewhere":
            # A prior that denies every person: their skeletons must still win.
            people = people.replace(masks=(~gt.any(0))[None].repeat(len(people), 0))
        segmenter.set_image(image_of(coco, image_id))
        out = segmenter.segment(people)
        assert out.masks.shape == gt.shape and out.masks.dtype == bool
        assert out.masks.sum(0).max() <= 1, "masks overlap"
        assert (out.mask_scores > 0).all() and (out.mask_scores <= 1).all()
        assert_keypoints_inside(people, out.masks)


def test_uniform_prior_is_a_skeleton_partition_that_beats_skeleton_masks(coco):
    p2i = Pose2InstanceSegmenter(prior="uniform")
    skeleton = build_component(SEGMENTERS, {"type": "SkeletonSegmenter"}, "segmenter")
    ious = {"p2i": [], "skeleton": []}
    for image_id in sorted(coco.imgs):
        people, gt = gt_people(coco, image_id)
        for name, seg in (("p2i", p2i), ("skeleton", skeleton)):
            seg.set_image(image_of(coco, image_id))
            ious[name] += list(np.diag(mask_iou(seg.segment(people).masks, gt)))
        h, w = people.image_size
        out = p2i.segment(people)
        assert not out.masks[:, 0, 0].any() and not out.masks[:, h - 1, w - 1].any()  # far: background
    assert np.mean(ious["p2i"]) > 0.65
    assert np.mean(ious["p2i"]) >= np.mean(ious["skeleton"])


def test_mask_prior_makes_masks_follow_the_silhouette(coco):
    segmenter = Pose2InstanceSegmenter(prior="auto")
    uniform, with_prior = [], []
    for image_id in sorted(coco.imgs):
        people, gt = gt_people(coco, image_id, with_masks=True)
        segmenter.set_image(image_of(coco, image_id))
        with_prior += list(np.diag(mask_iou(segmenter.segment(people).masks, gt)))
        segmenter.set_image(image_of(coco, image_id))
        uniform += list(np.diag(mask_iou(segmenter.segment(people.replace(masks=gt & False)).masks, gt)))
    assert np.mean(with_prior) > np.mean(uniform) + 0.1
    assert np.mean(with_prior) > 0.85


def test_people_of_a_later_call_compete_with_earlier_ones(coco):
    image_id = 197388  # five people, overlapping
    people, _ = gt_people(coco, image_id)
    segmenter = Pose2InstanceSegmenter(prior="uniform")
    segmenter.set_image(image_of(coco, image_id))
    joint = segmenter.segment(people).masks
    segmenter.set_image(image_of(coco, image_id))
    segmenter.segment(people[:2])
    later = segmenter.segment(people[2:]).masks
    assert (later == joint[2:]).mean() > 0.999  # same partition, up to ties
    # A re-detection of an earlier person (pose NMS kept the new copy) does not
    # compete with its old self: it gets the same pixels as before.
    again = segmenter.segment(people[:1]).masks
    assert (again[0] == joint[0]).mean() > 0.999


def test_partition_gives_each_pixel_to_the_nearest_body_or_background():
    # Two people at distances 0.2 and 0.6 (in part radii) from one pixel, and a
    # pixel 3 radii from both: nearest body, then background.
    distances = torch.tensor([[[0.2, 3.0]], [[0.6, 3.0]]])
    owner, posterior = pose_instance_partition(distances, torch.full((1, 2), 0.5), 1 / 3, 1.0)
    assert owner.tolist() == [[0, -1]]
    assert 0.5 < posterior[0, 0] < 1


def test_person_without_visible_keypoints_gets_an_empty_mask():
    kpts = np.random.default_rng(0).uniform(20, 80, (2, 17, 2)).astype(np.float32)
    vis = np.ones((2, 17), np.float32)
    vis[1] = 0
    people = Instances((100, 100), boxes=np.array([[10, 10, 90, 90], [0, 0, 50, 50]], np.float32),
                       keypoints=kpts, keypoint_scores=vis, visibility=vis.copy())
    segmenter = Pose2InstanceSegmenter()
    segmenter.set_image(np.zeros((100, 100, 3), np.uint8))
    out = segmenter.segment(people)
    assert out.masks[0].any() and not out.masks[1].any()
    assert out.mask_scores[1] == 0 and np.isfinite(out.mask_scores).all()


def test_skeleton_distance_is_zero_on_the_skeleton_and_small_inside_the_torso():
    kpts = torch.zeros(1, 17, 2)
    kpts[0, [5, 6, 11, 12]] = torch.tensor([[20.0, 20.0], [40.0, 20.0], [20.0, 60.0], [40.0, 60.0]])
    kpts[0, [7, 9]] = torch.tensor([[10.0, 40.0], [10.0, 60.0]])  # left arm hanging down
    valid = torch.zeros(1, 17, dtype=torch.bool)
    valid[0, [5, 6, 7, 9, 11, 12]] = True
    u = skeleton_distance(kpts, valid, torch.tensor([50.0]), (80, 60))[0]
    assert u[40, 30] == pytest.approx(0.2)  # torso centre: body, but not skeleton
    assert u[20, 20] == 0 and u[60, 10] == 0  # keypoint pixels
    assert u[50, 10] < 0.05  # on the forearm
    assert u[75, 55] > 1  # far corner: outside every part
    none = skeleton_distance(kpts, torch.zeros_like(valid), torch.tensor([50.0]), (80, 60))
    assert torch.isinf(none).all()


def test_nested_sam2_segmenter_can_be_the_prior(coco, tmp_path):
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    sam = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=None, device="cpu", mode="eval")
    torch.save({"model": sam.state_dict()}, tmp_path / "sam_t_random.pt")
    segmenter = build_component(SEGMENTERS, {
        "type": "Pose2InstanceSegmenter",
        "prior": {"type": "SAM2Segmenter", "config": "configs/sam2.1/sam2.1_hiera_t.yaml",
                  "checkpoint": str(tmp_path / "sam_t_random.pt"),
                  "prompts": {"method": "gt", "num_points": 3}},
    }, "segmenter", device="cpu", weights_dirs=[])
    image_id = 40083
    people, gt = gt_people(coco, image_id)
    segmenter.set_image(image_of(coco, image_id))
    out = segmenter.segment(people)
    assert out.masks.shape == gt.shape and out.masks.sum(0).max() <= 1
    assert_keypoints_inside(people, out.masks)


def test_unsafe_floor_and_unknown_prior_are_rejected():
    with pytest.raises(ValueError, match="logit"):
        Pose2InstanceSegmenter(temperature=1.0, radius=1.0, prior_floor=0.05)
    with pytest.raises(ValueError, match="prior"):
        Pose2InstanceSegmenter(prior="sam")


def test_lite_loop_with_pose2instance_gives_exclusive_masks_and_blacks_them_out(coco_images):
    bmp = BMP.from_config(ROOT / "configs" / "bmp_lite_pose2instance.py", device="cpu",
                          weights_dirs=[MODELS_DIR])
    assert isinstance(bmp.segmenter, Pose2InstanceSegmenter)
    people = bmp.predict(coco_images[3])
    assert len(people) >= 3
    assert people.masks.sum(0).max() <= 1
    assert people.masks.reshape(len(people), -1).any(1).all()
    original, masked = bmp.detector_inputs[:2]
    first = people.up_to_iteration(1).masks.any(0)  # (exclusivity may move pixels to later people)
    assert first.any() and (masked[first] == 0).all()
    changed = (masked != original).any(-1)
    assert (masked[changed] == 0).all()


def full_image_partition(
    segmenter: Pose2InstanceSegmenter, people: Instances, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """The reference: every person's field over the whole image at ``stride``,
    soft-max and argmax over (N + 1, H, W). Masks (N, H, W) and mean posteriors."""
    valid = segmenter._valid(people)
    scales = person_scales(people.boxes, people.keypoints, valid)
    distances = skeleton_distance(torch.as_tensor(people.keypoints), torch.as_tensor(valid),
                                  torch.as_tensor(scales), people.image_size, stride=stride)
    prob = torch.as_tensor(segmenter.person_probability(people))
    owner, posterior = pose_instance_partition(distances, prob, segmenter.temperature, segmenter.radius)
    masks = (owner[None] == torch.arange(len(people))[:, None, None]).numpy()
    post = np.array([posterior.numpy()[m].mean() if m.any() else 0.0 for m in masks])
    return masks, post


def enlarged(people: Instances, factor: int) -> Instances:
    """The same people in an image ``factor`` times larger."""
    h, w = people.image_size
    masks = people.masks.repeat(factor, 1).repeat(factor, 2) if people.masks.any() else None
    return Instances((h * factor, w * factor), boxes=people.boxes * factor,
                     keypoints=people.keypoints * factor, keypoint_scores=people.keypoint_scores,
                     visibility=people.visibility, presence=people.presence, masks=masks)


@pytest.mark.parametrize("prior", ["uniform", "gt_masks"])
def test_fast_partition_equals_the_full_image_one(coco, prior):
    for image_id in sorted(coco.imgs):
        people, _ = gt_people(coco, image_id, with_masks=prior == "gt_masks")
        # At the same step as the full-image field (small people: the stride),
        # box crops alone change nothing but ties.
        cases = [(people, Pose2InstanceSegmenter(prior="auto"), 0.999)]
        # Twice as large with at most 96 nodes a side: steps of up to 8 px.
        cases.append((enlarged(people, 2), Pose2InstanceSegmenter(prior="auto", working_size=96), 0.98))
        if prior == "gt_masks":  # the prior map, blurred per band, is OpenCV's blur of the union
            union = people.masks.any(0).astype(np.float32)
            expected = np.clip(cv2.GaussianBlur(union, (0, 0), 2.0), 0.05, 0.95)
            prob = Pose2InstanceSegmenter()._blurred_prior(people.masks.any(0), (5, 200, 30, 333))
            np.testing.assert_allclose(prob.numpy(), expected[5:200, 30:333], atol=1e-5)
        for who, segmenter, min_iou in cases:
            segmenter.set_image(np.zeros((1, 1, 3), np.uint8))
            out = segmenter.segment(who)
            ref, ref_post = full_image_partition(segmenter, who, stride=2)
            ious = np.diag(mask_iou(out.masks, ref))
            assert (ious >= min_iou).all(), (who.image_size, image_id, ious.round(4))
            valid = segmenter._valid(who)
            kpt_conf = np.where(valid, who.keypoint_scores, 0).sum(1) / np.maximum(valid.sum(1), 1)
            # Scores: only people out of reach are left out of the normalisation.
            np.testing.assert_allclose(out.mask_scores, ref_post * kpt_conf, rtol=0.05)


def test_nothing_outside_a_persons_reach_box_could_be_won():
    # Keypoints never extend a part beyond their own disc: the reach box rests on it.
    for a, b, r in PARTS:
        assert r <= max(KEYPOINT_RADIUS[int(a)], KEYPOINT_RADIUS[int(b)]) + 1e-6
    rng = np.random.default_rng(3)
    kpts = rng.uniform(30, 90, (3, 17, 2)).astype(np.float32)
    valid = rng.random((3, 17)) > 0.4
    scales = np.array([40.0, 80.0, 120.0], np.float32)
    u = skeleton_distance(torch.as_tensor(kpts), torch.as_tensor(valid), torch.as_tensor(scales), (160, 150))
    for i, (x0, y0, x1, y1) in enumerate(body_reach_boxes(kpts, valid, scales, 1.5)):
        ys, xs = np.mgrid[:160, :150]
        outside = (xs < x0) | (xs > x1) | (ys < y0) | (ys > y1)
        assert outside.any() and (u[i].numpy()[outside] >= 1.5).all()


MEMORY_PROBE = """
import json, resource, sys
import numpy as np
from bmp.models.pose2instance import Pose2InstanceSegmenter
from bmp.structures import Instances

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

def peak_rss():
    # VmHWM, not ru_maxrss: that one keeps the forking parent's peak across exec.
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

data = json.loads(sys.argv[1])
h, w = data["size"]
kpts = np.array(data["keypoints"], np.float32)
vis = np.array(data["visibility"], np.float32)
people = Instances((h, w), boxes=np.array(data["boxes"], np.float32), keypoints=kpts,
                   keypoint_scores=vis, visibility=vis.copy())
segmenter = Pose2InstanceSegmenter(prior="uniform")
segmenter.set_image(np.zeros((1, 1, 3), np.uint8))
before = rss()
out = segmenter.segment(people)
print(json.dumps({"grown": peak_rss() - before, "pixels": [int(m.sum()) for m in out.masks]}))
"""


def test_memory_grows_with_people_not_with_people_times_a_float_image(coco):
    # The shared image with five people, its poses scaled to 6000 x 4500 (27 MP):
    # one float (N + 1) x H x W map alone would be 650 MB.
    people, _ = gt_people(coco, 197388)
    scale = 6000 / people.image_size[1]
    h, w = round(people.image_size[0] * scale), 6000
    payload = json.dumps({"size": [h, w], "boxes": (people.boxes * scale).tolist(),
                          "keypoints": (people.keypoints * scale).tolist(),
                          "visibility": people.visibility.tolist()})
    result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, payload], capture_output=True,
                            text=True, cwd=ROOT, check=True)
    report = json.loads(result.stdout)
    n = len(people)
    assert min(report["pixels"]) > 0
    # The bool output (N x H x W bytes) plus two float images' worth of headroom.
    assert report["grown"] < n * h * w + 2 * 4 * h * w, report["grown"] / 2**20


@pytest.mark.parametrize("threshold", [0.0, -0.5, 2.0])
def test_sam_masks_are_upsampled_a_few_at_a_time_with_the_same_result(threshold):
    import torch.nn.functional as F

    from bmp.models.segmenters import upsample_masks

    logits = torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 3
    full = F.interpolate(logits, (61, 47), mode="bilinear", align_corners=False) > threshold
    out = upsample_masks(logits, (61, 47), threshold, max_pixels=2 * 61 * 47)  # two masks a call
    assert out.dtype == torch.float16 and out.shape == full.shape
    # What sam2's _predict does with it: compare with its (Python float) threshold.
    assert torch.equal(out > threshold, full)
