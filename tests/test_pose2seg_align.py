"""Pose2Seg's Affine-Align, pose templates and skeleton features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bmp.keypoints import SKELETON
from bmp.models.pose2seg.affine_align import (
    align_poses,
    apply_affine,
    compose_affine,
    fit_similarity,
    invert_affine,
    sample_affine,
    unit_to_window,
)
from bmp.models.pose2seg.skeleton_features import NUM_CHANNELS, skeleton_features
from bmp.models.pose2seg.templates import (
    PoseTemplates,
    kmeans_templates,
    mirror_poses,
    templates_from_coco,
)
from tests.conftest import COCO_ANN, ROOT

SAMPLE_TEMPLATES = ROOT / "configs" / "pose2seg" / "templates_coco_sample.json"


@pytest.fixture(scope="module")
def templates() -> PoseTemplates:
    return templates_from_coco(COCO_ANN, k=3, seed=0)


def similarity(angle_deg: float, scale: float, shift: tuple[float, float], mirror: bool) -> torch.Tensor:
    theta = np.deg2rad(angle_deg)
    rot = scale * torch.tensor([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    if mirror:
        rot = rot @ torch.diag(torch.tensor([-1.0, 1.0], dtype=rot.dtype))
    return torch.cat([rot, torch.tensor(shift, dtype=rot.dtype)[:, None]], 1)[None].float()


@pytest.mark.parametrize("mirror", [False, True])
def test_a_pose_maps_onto_its_own_template_with_near_zero_error(templates, mirror):
    poses = torch.as_tensor(templates.poses)
    valid = torch.as_tensor(templates.valid)
    for k in range(len(poses)):
        # Template k placed in an image: rotated, scaled to ~250 px, shifted (and mirrored).
        placed = similarity(25.0 - 20 * k, 250.0, (300.0 + 10 * k, 80.0), mirror)
        person = apply_affine(placed, poses[k][None])
        result = align_poses(person, valid[k][None], torch.tensor([[0.0, 0.0, 1.0, 1.0]]),
                             poses, valid, size=64, margin=0.1)
        assert result.template.item() == k and result.reflected.item() == mirror
        assert result.scores.item() == pytest.approx(1.0, abs=1e-6)
        in_window = apply_affine(result.to_aligned, person)[0][valid[k]]
        expected = apply_affine(unit_to_window(64, 0.1), poses[k][None])[0][valid[k]]
        assert (in_window - expected).abs().max() < 1e-3  # pixels of the 64 x 64 window


def test_alignment_inverts_exactly(templates):
    rng = np.random.default_rng(0)
    kpts = torch.as_tensor(rng.uniform(50, 400, size=(6, 17, 2)), dtype=torch.float32)
    valid = torch.as_tensor(rng.uniform(size=(6, 17)) > 0.3)
    boxes = torch.tensor([[50.0, 50.0, 400.0, 400.0]]).repeat(6, 1)
    result = align_poses(kpts, valid, boxes, torch.as_tensor(templates.poses),
                         torch.as_tensor(templates.valid))
    inverse = invert_affine(result.to_aligned)
    identity = torch.eye(3)[:2].expand(6, 2, 3)
    assert torch.allclose(compose_affine(inverse, result.to_aligned), identity, atol=1e-5)
    assert torch.allclose(compose_affine(result.to_aligned, inverse), identity, atol=1e-5)
    back = apply_affine(inverse, apply_affine(result.to_aligned, kpts))
    assert (back - kpts).abs().max() < 1e-3


def test_window_and_paste_back_are_inverse_warps():
    # A disc in a 200 x 300 image, warped into a 64 x 64 window by a similarity
    # and pasted back, is the same disc (up to resampling at its edge).
    yy, xx = np.mgrid[:200, :300]
    disc = ((xx - 150) ** 2 + (yy - 90) ** 2 < 50**2).astype(np.float32)
    to_unit = similarity(30.0, 1 / 120, (0.0, 0.0), False)
    to_unit[0, :, 2] = 0.5 - to_unit[0, :, :2] @ torch.tensor([150.0, 90.0])  # disc centred
    to_window = compose_affine(unit_to_window(64, 0.1), to_unit)
    window = sample_affine(torch.from_numpy(disc)[None, None], invert_affine(to_window), (64, 64))
    assert 0.1 < window.mean() < 0.9  # the disc is in view, not filling it
    pasted = sample_affine(window, to_window, (200, 300))[0, 0].numpy() > 0.5
    truth = disc > 0.5
    assert (pasted & truth).sum() / (pasted | truth).sum() > 0.95


def test_person_with_too_few_keypoints_is_aligned_by_its_box(templates):
    kpts = torch.zeros(1, 17, 2)
    kpts[0, :2] = torch.tensor([[110.0, 120.0], [130.0, 120.0]])
    valid = torch.zeros(1, 17, dtype=torch.bool)
    valid[0, :2] = True
    box = torch.tensor([[100.0, 100.0, 200.0, 300.0]])
    result = align_poses(kpts, valid, box, torch.as_tensor(templates.poses),
                         torch.as_tensor(templates.valid))
    assert result.template.item() == -1 and result.scores.item() == 0
    corners = apply_affine(result.to_aligned, torch.tensor([[[150.0, 100.0], [150.0, 300.0]]]))
    window = unit_to_window(64, 0.1)
    expected = apply_affine(window, torch.tensor([[[0.5, 0.0], [0.5, 1.0]]]))
    assert torch.allclose(corners, expected, atol=1e-4)  # box's long side spans the unit square


def test_fit_similarity_recovers_a_known_transform():
    src = torch.rand(1, 17, 2) * 100
    for mirror in (False, True):
        truth = similarity(-40.0, 0.01, (0.3, 0.6), mirror)
        matrix, err = fit_similarity(src, apply_affine(truth, src), torch.ones(1, 17), reflect=mirror)
        assert torch.allclose(matrix, truth, atol=1e-5) and err.item() < 1e-9


def test_templates_from_shared_coco_are_stable_under_rerun_with_a_fixed_seed(templates, tmp_path):
    again = templates_from_coco(COCO_ANN, k=3, seed=0)
    assert np.array_equal(again.poses, templates.poses) and np.array_equal(again.valid, templates.valid)
    assert templates.poses.shape == (3, 17, 2) and templates.meta["num_poses"] == 24  # 12 poses + mirrors
    assert templates.valid.sum(1).min() >= 8
    # The tool writes the same file as the one shipped for configs/bmp_pose2seg.py.
    import importlib.util

    path = ROOT / "tools" / "pose2seg_templates.py"
    spec = importlib.util.spec_from_file_location("pose2seg_templates", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "templates.json"
    assert tool.main(["--ann", str(COCO_ANN), "--out", str(out), "--seed", "0"]) == 0
    assert json.loads(out.read_text()) == json.loads(SAMPLE_TEMPLATES.read_text())
    loaded = PoseTemplates.load(out)
    assert np.allclose(loaded.poses, templates.poses, atol=1e-5)


def test_kmeans_finds_separated_pose_clusters_whatever_the_seed():
    rng = np.random.default_rng(1)
    centres = rng.uniform(0.1, 0.9, size=(3, 17, 2))
    labels = np.repeat(np.arange(3), [12, 8, 5])
    poses = centres[labels] + rng.normal(0, 0.01, size=(25, 17, 2))
    valid = rng.uniform(size=(25, 17)) > 0.2
    found = [kmeans_templates(poses, valid, k=3, seed=s)[0] for s in range(3)]
    for result in found:  # largest cluster first
        assert np.abs(result - centres).max() < 0.03
    mirrored, mirrored_valid = mirror_poses(poses, valid)
    assert np.allclose(mirror_poses(mirrored, mirrored_valid)[0], poses)


def test_paf_channels_point_along_limbs():
    kpts = torch.zeros(1, 17, 2)
    kpts[0, 5] = torch.tensor([20.0, 20.0])  # left shoulder
    kpts[0, 7] = torch.tensor([44.0, 38.0])  # left elbow: limb (5, 7) goes right and down
    kpts[0, 9] = torch.tensor([44.0, 60.0])  # left wrist, not visible
    valid = torch.zeros(1, 17, dtype=torch.bool)
    valid[0, [5, 7]] = True
    feats = skeleton_features(kpts, valid, size=64)
    assert feats.shape == (1, NUM_CHANNELS, 64, 64) == (1, 55, 64, 64)
    arm = SKELETON.index((5, 7))
    forearm = SKELETON.index((7, 9))
    paf = feats[0, 2 * arm : 2 * arm + 2]
    direction = torch.tensor([24.0, 18.0]) / 30.0
    assert torch.allclose(paf[:, 29, 32], direction)  # on the limb's midpoint (32, 29)
    norms = paf.norm(dim=0)
    on = norms > 0
    assert torch.allclose(norms[on], torch.ones(int(on.sum())))  # unit vectors or nothing
    assert (paf[:, on] * direction[:, None]).sum(0).min() > 0.999  # all along the limb
    assert paf[:, 5, 60].abs().sum() == 0  # far from it
    assert feats[0, 2 * forearm : 2 * forearm + 2].abs().sum() == 0  # an end is not visible
    confidence = feats[0, 38:]
    assert confidence[5, 20, 20] == pytest.approx(1.0) and confidence[9].abs().sum() == 0
    assert confidence[7].argmax() == 38 * 64 + 44
