"""MaskPose / PMPose modules: layout of the published checkpoints, strict
reloading through bmp.weights, forward on real crops, and the batched top-down
path against mmpose's own per-sample pipeline."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from bmp.images import load_image
from bmp.models.detectors import GroundTruthDetector
from tests.conftest import COCO_ANN, COCO_DIR

PMPOSE = "configs/pose/pmpose-b.py"
MASKPOSE = "configs/pose/maskpose-b.py"


def build_random(config: str, seed: int = 0) -> torch.nn.Module:
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpose.apis import init_model

    import bmp.models.mmpose_ext  # noqa: F401
    from bmp.models.base import resolve_model_config

    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope("mmpose"):
        return init_model(Config.fromfile(resolve_model_config(config)), None, device="cpu")


@pytest.fixture(scope="module")
def pmpose_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("pmpose") / "PMPose-b-random.pth"
    torch.save({"state_dict": build_random(PMPOSE).state_dict(), "meta": {}}, path)
    return path


@pytest.fixture(scope="module")
def people_with_masks():
    det = GroundTruthDetector(str(COCO_ANN), min_area=32 * 32)
    det.select("000000197388.jpg")
    image = load_image(COCO_DIR / "000000197388.jpg")
    return image, det.detect(image)


def test_pmpose_state_dict_has_the_published_layout():
    state = build_random(PMPOSE).state_dict()
    expected = {
        "backbone.patch_embed.projection.weight": (768, 3, 16, 16),
        "backbone.pos_embed": (1, 192, 768),
        "backbone.layers.11.attn.qkv.weight": (2304, 768),
        "backbone.ln1.weight": (768,),
        "head.deconv_layers.0.weight": (768, 256, 4, 4),
        "head.deconv_layers.4.running_var": (256,),
        "head.final_layer.weight": (23, 256, 1, 1),
    }
    for name in ("probability_layers", "visibility_layers", "oks_layers", "error_layers"):
        expected[f"head.{name}.0.weight"] = (768, 768, 3, 3)
        expected[f"head.{name}.1.running_mean"] = (768,)
        expected[f"head.{name}.8.weight"] = (768, 768, 3, 3)
        expected[f"head.{name}.12.weight"] = (23, 768, 1, 1)
    for key, shape in expected.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    side = [k for k in state if k.startswith("head.visibility_layers.")]
    assert {k.split(".")[2] for k in side} == {"0", "1", "4", "5", "8", "9", "12"}


def test_maskpose_is_vit_b_heatmaps_for_23_keypoints():
    state = build_random(MASKPOSE).state_dict()
    assert tuple(state["head.final_layer.weight"].shape) == (23, 256, 1, 1)
    assert not any("visibility_layers" in k for k in state)


def test_pmpose_loads_strictly_and_predicts_visibility_on_real_crops(pmpose_checkpoint, people_with_masks):
    from bmp.models.pose import MMPoseTopDown
    from bmp.weights import WeightsError

    image, people = people_with_masks
    pose = MMPoseTopDown(PMPOSE, str(pmpose_checkpoint))
    assert pose.batched and pose.mask_alpha == 0.25
    out = pose.estimate(image, people)
    n = len(people)
    assert out.keypoints.shape == (n, 17, 2)
    for field in (out.visibility, out.presence, out.kpt_oks, out.keypoint_scores):
        assert field.shape == (n, 17)
        assert np.isfinite(field).all() and field.min() >= 0 and field.max() <= 1
    # PMPose reports the expected OKS as its keypoint score.
    assert np.allclose(out.keypoint_scores, out.kpt_oks)
    # A checkpoint of the other architecture is refused by strict key matching.
    with pytest.raises(WeightsError, match="unexpected keys"):
        MMPoseTopDown(MASKPOSE, str(pmpose_checkpoint))


def test_batched_path_matches_mmpose_per_sample_pipeline(pmpose_checkpoint, people_with_masks):
    from bmp.models.pose import MMPoseTopDown

    image, people = people_with_masks
    batched = MMPoseTopDown(PMPOSE, str(pmpose_checkpoint), batched=True)
    naive = MMPoseTopDown(PMPOSE, str(pmpose_checkpoint), batched=False)
    a, b = batched.estimate(image, people), naive.estimate(image, people)
    # Random weights give flat heatmaps whose argmax is fragile; the network's
    # outputs themselves must agree (crops differ only by uint8 rounding).
    for field in ("visibility", "presence", "kpt_oks"):
        assert np.abs(getattr(a, field) - getattr(b, field)).max() < 0.02, field


def test_mask_background_dims_only_outside_the_mask():
    from bmp.models.mmpose_ext import MaskBackground

    img = np.full((4, 5, 3), 200, np.uint8)
    mask = np.zeros((4, 5), bool)
    mask[1:3, 1:4] = True
    out = MaskBackground(alpha=0.25).transform({"img": img.copy(), "mask": mask})["img"]
    assert (out[mask] == 200).all() and (out[~mask] == 150).all()
    untouched = MaskBackground(alpha=0.25).transform({"img": img.copy()})["img"]
    assert (untouched == img).all()
    with pytest.raises(ValueError):
        MaskBackground(alpha=0.25, continue_on_failure=False).transform({"img": img.copy()})


def test_sparsemax_is_a_sparse_distribution():
    from bmp.models.mmpose_ext.sparsemax import sparsemax

    z = torch.tensor([[3.0, 1.0, 0.2, -2.0], [0.0, 0.0, 0.0, 0.0]])
    p = sparsemax(z)
    assert torch.allclose(p.sum(-1), torch.ones(2))
    assert p[0].tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])
    assert p[1].tolist() == pytest.approx([0.25] * 4)
    assert (sparsemax(torch.tensor([[1.0, 0.8, -1.0]])) > 0).sum() == 2


def test_batched_decode_matches_mmpose_udp_codec():
    from mmpose.codecs import UDPHeatmap

    from bmp.models.topdown import decode_udp_heatmaps

    codec = UDPHeatmap(input_size=(192, 256), heatmap_size=(48, 64), sigma=2)
    rng = np.random.default_rng(0)
    n, k, h, w = 3, 17, 64, 48
    yy, xx = np.mgrid[0:h, 0:w]
    centres = rng.uniform([2, 2], [w - 3, h - 3], (n, k, 2))
    heatmaps = np.exp(
        -((xx - centres[..., 0, None, None]) ** 2 + (yy - centres[..., 1, None, None]) ** 2) / 8
    ).astype(np.float32) * rng.uniform(0.3, 1, (n, k, 1, 1)).astype(np.float32)
    heatmaps[0, 3, 0, 0] = 2.0  # a peak on the border
    expected = np.concatenate([codec.decode(hm)[0] for hm in heatmaps])
    locs, scores = decode_udp_heatmaps(torch.from_numpy(heatmaps))
    ours = locs.numpy() / [w - 1, h - 1] * [192, 256]
    assert np.abs(ours - expected).max() < 1e-3
    assert np.allclose(scores.numpy(), heatmaps.reshape(n, k, -1).max(-1))


def test_batched_crops_match_cv2_udp_warp(people_with_masks):
    from mmpose.structures.bbox import get_udp_warp_matrix

    from bmp.models.topdown import boxes_to_center_scale, crop_people

    image, people = people_with_masks
    boxes = torch.from_numpy(people.boxes)
    crops = crop_people(torch.from_numpy(image).permute(2, 0, 1).float(), boxes, (192, 256))
    centers, scales = boxes_to_center_scale(boxes, (192, 256))
    for i in range(len(boxes)):
        warp = get_udp_warp_matrix(centers[i].numpy(), scales[i].numpy(), 0, (192, 256))
        expected = cv2.warpAffine(image, warp, (192, 256), flags=cv2.INTER_LINEAR).astype(np.float32)
        diff = np.abs(crops.images[i].permute(1, 2, 0).numpy() - expected)
        assert diff.max() <= 1.0 and diff.mean() < 0.5  # uint8 rounding only
