"""MaskPose / PMPose modules: layout of the published checkpoints, strict
reloading through bmp.weights, forward on real crops, and the batched top-down
path against mmpose's own per-sample pipeline."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import COCO_DIR

PMPOSE = "configs/pose/pmpose-b.py"
MASKPOSE = "configs/pose/maskpose-b.py"
#: MaskPose-b-1.0.0, the pose model of BMP v1 (configs/bmp_maskpose_sam2.py).
MASKPOSE_100 = "configs/pose/maskpose-b-1.0.0.py"


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
def maskpose_100_weights(tmp_path_factory):
    """A random-init MaskPose-b-1.0.0 saved under the registry's file name, as
    a user's --weights-dir holds the downloaded one."""
    from bmp.weights import CHECKPOINTS

    folder = tmp_path_factory.mktemp("maskpose_100")
    torch.save({"state_dict": build_random(MASKPOSE_100, seed=4).state_dict(), "meta": {}},
               folder / CHECKPOINTS["maskpose-b-1.0.0"].filename)
    return folder


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


def test_maskpose_100_is_vit_b_heatmaps_for_21_keypoints():
    from bmp.weights import CHECKPOINTS

    model = build_random(MASKPOSE_100)
    state = model.state_dict()
    assert tuple(state["head.final_layer.weight"].shape) == (21, 256, 1, 1)
    assert tuple(state["backbone.pos_embed"].shape) == (1, 192, 768)
    meta = model.dataset_meta
    assert meta["num_keypoints"] == 21
    # COCO's 17 with their flip pairs, then thorax, two necks and head top unswapped.
    coco_flips = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
    assert list(meta["flip_indices"]) == coco_flips + [17, 18, 19, 20]
    assert np.allclose(meta["sigmas"][17:], [0.079, 0.079, 0.079, 0.035])
    entry = CHECKPOINTS["maskpose-b-1.0.0"]
    assert entry.filename == "MaskPose-b-1.0.0.pth" and entry.url.endswith("/MaskPose/MaskPose-b-1.0.0.pth")
    assert CHECKPOINTS["maskpose-b"].filename == "MaskPose-b-1.1.0.pth"  # 1.1.0 stays available


def test_maskpose_100_loads_strictly_through_the_registry(maskpose_100_weights, people_with_masks):
    from bmp.models.pose import MMPoseTopDown

    image, people = people_with_masks
    pose = MMPoseTopDown(MASKPOSE_100, "maskpose-b-1.0.0", weights_dirs=[str(maskpose_100_weights)])
    assert pose.batched and pose.mask_alpha == 0.2
    assert pose.model.head.final_layer.out_channels == 21
    saved = torch.load(maskpose_100_weights / "MaskPose-b-1.0.0.pth", weights_only=True)["state_dict"]
    for key, value in pose.model.state_dict().items():
        if not key.startswith("data_preprocessor."):
            assert torch.equal(value, saved[key]), key
    out = pose.estimate(image, people)
    assert out.keypoints.shape == (len(people), 17, 2)
    assert out.keypoint_scores.shape == (len(people), 17)
    # The 23-keypoint 1.1.0 layout does not fit the 21-keypoint head.
    other = maskpose_100_weights / "other.pth"
    torch.save({"state_dict": build_random(MASKPOSE).state_dict()}, other)
    with pytest.raises(RuntimeError, match="final_layer"):
        MMPoseTopDown(MASKPOSE_100, str(other))


def test_maskpose_batched_path_matches_per_sample_pipeline(maskpose_100_weights, people_with_masks):
    """Both paths dim the full-resolution image by the same filled-contour
    mask and warp afterwards: the network sees crops that differ only by cv2's
    uint8 output rounding, and the keypoints agree wherever decoding is
    well-posed.

    Random weights give heatmaps without a clear peak, where mmpose's DARK
    refinement (a Newton step on the log heatmap) is ill-conditioned: there it
    jumps by pixels for a 0.1 % change of the heatmap, whichever path made it
    (the same happens without mask conditioning). The keypoints are compared
    where the reference's refinement stays within its pixel, as it does for
    trained heatmaps, is numerically stable, and the argmax is the same."""
    from mmpose.codecs import UDPHeatmap

    from bmp.models.pose import MMPoseTopDown
    from bmp.models.topdown import decode_udp_heatmaps

    image, people = people_with_masks
    path = str(maskpose_100_weights / "MaskPose-b-1.0.0.pth")
    # Without flip test, so each path's heatmaps are one head output.
    batched = MMPoseTopDown(MASKPOSE_100, path, batched=True, flip_test=False)
    naive = MMPoseTopDown(MASKPOSE_100, path, batched=False, flip_test=False)
    assert batched.batched and not naive.batched and batched.mask_alpha == naive.mask_alpha == 0.2
    seen_batched, seen_naive = [], []
    forward = batched.model.head.forward
    batched.model.head.forward = lambda feats: seen_batched.append(forward(feats)) or seen_batched[-1]
    naive.model.test_cfg["output_heatmaps"] = True
    predict = naive.model.head.predict

    def predict_and_keep(*args, **kwargs):
        preds, fields = predict(*args, **kwargs)
        seen_naive.extend(np.asarray(f.heatmaps) for f in fields)
        return preds, fields

    naive.model.head.predict = predict_and_keep
    a, b = batched.estimate(image, people), naive.estimate(image, people)
    k = 17
    ha, hb = seen_batched[0][:, :k].numpy(), np.stack(seen_naive)[:, :k]
    assert np.abs(ha - hb).max() <= 0.01 * (hb.max() - hb.min())
    assert np.abs(a.keypoint_scores - b.keypoint_scores).max() <= 0.01 * (hb.max() - hb.min())

    w = hb.shape[-1]
    peak = hb.reshape(*hb.shape[:2], -1).argmax(-1)
    codec = UDPHeatmap(input_size=(192, 256), heatmap_size=(48, 64), sigma=2)
    refined = np.stack([codec.decode(h)[0][0] for h in hb]) / [192, 256] * [w - 1, hb.shape[-2] - 1]
    within_pixel = np.abs(refined - np.stack([peak % w, peak // w], -1)).max(-1) < 0.5
    # ... and is numerically stable: bmp's decoder gives it from the same heatmaps.
    ours = decode_udp_heatmaps(torch.from_numpy(hb))[0].numpy()
    stable = np.abs(ours - refined).max(-1) < 0.01
    well_posed = within_pixel & stable & (ha.reshape(*ha.shape[:2], -1).argmax(-1) == peak)
    assert well_posed.sum() >= 8, well_posed.sum()
    assert np.abs(a.keypoints - b.keypoints).max(-1)[well_posed].max() <= 0.5


def test_bmp_v1_config_runs_maskpose_100_and_keeps_17_keypoints(tiny_weights, maskpose_100_weights):
    """configs/bmp_maskpose_sam2.py as shipped (MaskPose-b-1.0.0, alpha 0.2,
    found by registry name in --weights-dir), with the small detector and
    SAM swapped in to keep it fast."""
    from bmp import BMP
    from bmp.config import load_config
    from tests.conftest import ROOT
    from tests.tiny_models import RTMDET_TINY, SAM21_T

    cfg = load_config(ROOT / "configs" / "bmp_maskpose_sam2.py")
    assert cfg.pose.config == MASKPOSE_100 and cfg.pose.checkpoint == "maskpose-b-1.0.0"
    assert cfg.pose.mask_alpha == 0.2
    cfg.detector.update(config=RTMDET_TINY, checkpoint=str(tiny_weights / "rtmdet_tiny_confident.pth"),
                        max_per_img=3)
    cfg.segmenter.update(config=SAM21_T, checkpoint=str(tiny_weights / "sam21_hiera_t_random.pt"))
    cfg.segmenter.prompts.score_thr = 0.0  # random pose weights are never confident
    bmp = BMP.from_config(cfg, device="cpu", weights_dirs=[maskpose_100_weights])
    assert bmp.pose.mask_alpha == 0.2
    people = bmp.predict(COCO_DIR / "000000040083.jpg")
    n = len(people)
    assert n >= 1
    assert people.keypoints.shape == (n, 17, 2) and people.keypoint_scores.shape == (n, 17)
