"""The loop on a CUDA GPU (issue 14's CUDA checks); every test is skipped with a
reason where ``torch.cuda.is_available()`` is False, so the module imports and
skips cleanly on CPU machines and in CI. ``tools/gpu_acceptance.sh`` runs them
with ``pytest -m cuda``.

The tolerances are the issue's targets, not values measured on a GPU: no GPU
was available when these tests were written. Where random weights make a
comparison fragile (flat pose heatmaps whose argmax can jump), that is noted
at the test. Each comparison records what it measured (``record_property``),
which ``python -m bmp.bench_report`` lists beside the allowed value in
``acceptance.md``.

``BMP_CUDA_TESTS_DEVICE=cpu`` runs the same checks on the CPU (the host-sync
tests, which need CUDA's sync debugging, skip): a dry run of the tests' own
logic and of the acceptance report, so that a GPU window is not spent on a
mistake in a test.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bmp import BMP
from bmp.masks import box_iou, component_areas, exclusive_masks, fill_small_regions, mask_iou, mask_out
from tests.conftest import COCO_ANN, COCO_DIR, ROOT
from tests.tiny_models import CSPNEXT_T_UDP, SAM21_T, tiny_config

DEVICE = os.environ.get("BMP_CUDA_TESTS_DEVICE", "cuda")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                       reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]
needs_cuda_syncs = pytest.mark.skipif(
    DEVICE != "cuda", reason="counts CUDA host syncs (torch.cuda.set_sync_debug_mode)")


def measured(record_property, name: str, value: float, allowed: str | None) -> None:
    """One measured value and its tolerance (None: recorded, not checked), for
    the acceptance report."""
    record_property(name, f"{value:.4g} ({f'allowed {allowed}' if allowed else 'not checked'})")


def differences(a, b) -> tuple[float, float | None]:
    """The largest keypoint shift between two equally long sets of people, and
    the lowest IoU of the masks either side has (None: nobody has a mask)."""
    shift = float(np.abs(a.keypoints - b.keypoints).max())
    either = a.masks.any((1, 2)) | b.masks.any((1, 2))
    ious = np.diag(mask_iou(a.masks, b.masks))[either]
    return shift, float(ious.min()) if len(ious) else None


def same_people(a, b, kpt_px: float, min_mask_iou: float, record_property) -> None:
    """Same count and iterations, keypoints within ``kpt_px``, each mask that
    either side has with IoU >= ``min_mask_iou``; the worst of each is recorded."""
    record_property("people", f"{len(a)} and {len(b)} (allowed: equal)")
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.iteration, b.iteration)
    if len(a):
        shift, iou = differences(a, b)
        measured(record_property, "max keypoint shift px", shift, f"<= {kpt_px}")
        if iou is not None:
            measured(record_property, "min mask IoU", iou, f">= {min_mask_iou}")
        assert shift <= kpt_px
        assert iou is None or iou >= min_mask_iou


def tiny_cuda_config(tiny_weights: Path, **loop) -> dict:
    cfg = tiny_config(tiny_weights, detector="rtmdet_tiny_confident.pth", **loop)
    cfg["pose"].update(config=CSPNEXT_T_UDP, checkpoint=str(tiny_weights / "cspnext_t_udp_random.pth"))
    cfg["segmenter"]["prompts"]["score_thr"] = 0.0  # random pose weights are never confident
    return cfg


def full_random_config(**loop):
    """The published config's architectures (RTMDet-Ins-L, ViTPose-B, SAM 2.1
    Hiera-B+) at random init, prompted as ``bmp bench --random-init`` does."""
    from bmp.config import load_config

    cfg = load_config(ROOT / "configs" / "bmp_rtmdet_vitpose_sam2.py")
    for section in ("detector", "pose", "segmenter"):
        cfg[section]["checkpoint"] = None
    cfg.segmenter.prompts.update(score_thr=0.0, visibility_thr=0.0)
    cfg.loop.update(oks_kpt_thr=0.0, **loop)
    return cfg


def scene(count: int):
    """A real image with exactly ``count`` pasted people (as ``bmp bench``)."""
    from bmp.bench import make_scenes
    from bmp.images import expand_inputs

    return make_scenes(expand_inputs([COCO_DIR]), COCO_ANN, [count])[0]


def predict_scene(bmp: BMP, scn) -> object:
    """The loop on ``scn`` with the bench's known-people detector (the real
    detector still runs on the device); the first pass finds 80 %."""
    from bmp.bench import KnownPeople

    detector = bmp.detector
    bmp.detector = KnownPeople(detector, scn)
    try:
        return bmp.predict(scn.image)
    finally:
        bmp.detector = detector


# The batched loop equals the reference schedule --------------------------------


def test_batched_loop_equals_naive_loop_on_cuda(tiny_weights, record_property):
    """tests/test_naive_equivalence.py on the GPU: keypoints within 0.5 px,
    mask IoU >= 0.99."""
    from tests.test_naive_equivalence import ground_truth_loop_config

    bmp = BMP.from_config(ground_truth_loop_config(tiny_weights), device=DEVICE)
    assert bmp.pose.batched
    image = COCO_DIR / "000000197388.jpg"
    batched = bmp.predict(image)
    bmp.loop = replace(bmp.loop, naive=True)
    naive = bmp.predict(image)
    # The detector repeats its 5 people in iteration 2: OKS-NMS keeps the newer copies.
    assert len(batched) == 5 and (batched.iteration == 2).all()
    same_people(batched, naive, kpt_px=0.5, min_mask_iou=0.99, record_property=record_property)


# bf16 against fp32 ---------------------------------------------------------------


def test_bf16_keeps_the_fp32_heatmaps_and_masks_with_the_full_architectures(record_property, monkeypatch):
    """bf16 autocast against fp32, stage by stage, with the published
    architectures at random init:

    - pose, on the same boxes: the heatmaps the keypoints are decoded from
      differ by at most 2 % of each heatmap's range;
    - SAM, on the same (fp32) poses: mask IoU >= 0.95 for every person;
    - the whole loop, in either precision: finite keypoints and scores, and
      every pasted person found.

    The whole loop's decisions, keypoint shift and mask IoU are recorded, not
    asserted. Random weights give nearly flat heatmaps whose argmax jumps
    under any rounding: a CPU dry run (bf16 autocast) moved keypoints by over
    1,000 px while every heatmap stayed within 1 % of its range. So the
    issue's "keypoints within 2 px" is checked where it means something, on
    the heatmaps; with trained weights a peak is most of its heatmap's range.
    Those random keypoints also decide OKS-NMS between a person's copies from
    iterations 1 and 2: the rehearsal's torch 2.11 kept one iteration-1 copy
    in bf16 that fp32 dropped (11 people against 10), so which copies
    survive is not the same people at random init. The shift and IoU are
    taken over the people both loops kept (same iteration, same box)."""
    import bmp.models.topdown as topdown
    from bmp.structures import Instances

    torch.manual_seed(0)
    bmp = BMP.from_config(full_random_config(), device=DEVICE)
    assert bmp.pose.batched
    scn = scene(10)
    boxes = Instances(tuple(scn.image.shape[:2]), boxes=scn.boxes.copy(),
                      det_scores=np.full(scn.count, 0.9, np.float32))
    decoded: list[torch.Tensor] = []
    decode = topdown.decode_udp_heatmaps

    def keep_heatmaps(heatmaps, *args, **kwargs):
        decoded.append(heatmaps.float())
        return decode(heatmaps, *args, **kwargs)

    monkeypatch.setattr(topdown, "decode_udp_heatmaps", keep_heatmaps)
    predict_scene(bmp, scn)  # warm-up (cuDNN autotuning, lazy allocations)

    def stages(precision: str, poses: Instances | None = None):
        bmp.loop = replace(bmp.loop, precision=precision)
        with bmp.autocast():
            posed = bmp.pose.estimate_batch([scn.image], [boxes])[0]
        heatmaps = decoded[-1]
        with torch.inference_mode(), bmp.autocast():
            bmp.segmenter.set_image(scn.image)
            masks = bmp.segmenter.segment(poses or posed).masks
        masks = masks.cpu().numpy() if isinstance(masks, torch.Tensor) else masks
        return posed, heatmaps, masks, predict_scene(bmp, scn)

    posed, heatmaps32, masks32, fp32 = stages("fp32")
    _, heatmaps16, masks16, bf16 = stages("bf16", poses=posed)
    spread = (heatmaps32.amax((-2, -1)) - heatmaps32.amin((-2, -1))).clamp_min(1e-12)
    error = float(((heatmaps16 - heatmaps32).abs().amax((-2, -1)) / spread).max())
    measured(record_property, "pose heatmaps: max error / range", error, "<= 0.02")
    assert masks32.any((1, 2)).all(), "SAM gave someone an empty fp32 mask: nothing to compare"
    sam_iou = float(np.diag(mask_iou(masks32, masks16)).min())
    measured(record_property, "SAM on the same poses: min mask IoU", sam_iou, ">= 0.95")
    assert error <= 0.02
    assert sam_iou >= 0.95
    for precision, found in (("fp32", fp32), ("bf16", bf16)):
        per_iteration = dict(sorted(Counter(found.iteration.tolist()).items()))
        record_property(f"whole loop {precision}: people per iteration", f"{per_iteration} (not checked)")
        assert np.isfinite(found.keypoints).all() and np.isfinite(found.keypoint_scores).all(), precision
        assert np.isfinite(found.scores).all(), precision
        lost = ~(box_iou(scn.boxes, found.boxes) >= 0.5).any(1)
        assert not lost.any(), f"{precision}: pasted people {np.flatnonzero(lost).tolist()} not found"
    both = (box_iou(fp32.boxes, bf16.boxes) >= 0.99) & (fp32.iteration[:, None] == bf16.iteration[None])
    kept32, kept16 = np.nonzero(both)
    record_property("whole loop: people both kept",
                    f"{len(kept32)} of {len(fp32)} and {len(bf16)} (not checked)")
    if len(kept32):
        shift, loop_iou = differences(fp32[kept32], bf16[kept16])
        measured(record_property, "whole loop: max keypoint shift px", shift, None)
        if loop_iou is not None:
            measured(record_property, "whole loop: min mask IoU", loop_iou, None)


# torch.compile -------------------------------------------------------------------


def test_inductor_compiled_loop_gives_the_same_people_on_cuda(tiny_weights, coco_images, record_property):
    """tests/test_compile.py with the real backend on the GPU."""
    plain = BMP.from_config(tiny_cuda_config(tiny_weights), device=DEVICE)
    compiled = BMP.from_config(tiny_cuda_config(tiny_weights, compile="inductor"), device=DEVICE)
    image = coco_images[2]
    compiled.predict(image)  # compiles
    a, b = plain.predict(image), compiled.predict(image)
    assert len(a) >= 2
    same_people(a, b, kpt_px=0.5, min_mask_iou=0.99, record_property=record_property)


# Device paths against the host versions -------------------------------------------


def _cv2_areas(region: np.ndarray) -> np.ndarray:
    _, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    return np.where(region, stats[labels, cv2.CC_STAT_AREA], 0)


def test_component_areas_on_cuda_equal_opencv(record_property):
    from tests.test_device_resident import shapes

    rng = np.random.default_rng(0)
    masks = np.concatenate([shapes(rng), rng.random((2, 64, 80)) > 0.45])
    for name, region in (("masks", masks), ("holes", ~masks)):
        got = component_areas(torch.from_numpy(region).to(DEVICE))
        assert got.device.type == DEVICE
        expected = np.stack([_cv2_areas(m) for m in region])
        unlike = int((got.cpu().numpy() != expected).sum())
        record_property(f"pixels unlike OpenCV ({name})", f"{unlike} (allowed 0)")
        np.testing.assert_array_equal(got.cpu().numpy(), expected)


def test_fill_small_regions_on_cuda_equals_host(record_property):
    from tests.test_device_resident import shapes

    masks = shapes(np.random.default_rng(1))
    logits = torch.from_numpy(np.where(masks, 5.0, -5.0).astype(np.float32))
    host = fill_small_regions(logits, 0.0, max_hole_area=10, max_sprinkle_area=50)
    device = fill_small_regions(logits.to(DEVICE), 0.0, max_hole_area=10, max_sprinkle_area=50)
    record_property("values unlike the host", f"{int((device.cpu() != host).sum())} (allowed 0)")
    torch.testing.assert_close(device.cpu(), host, rtol=0, atol=0)


def test_dense_exclusivity_on_cuda_equals_contested_on_host(record_property):
    rng = np.random.default_rng(3)
    masks = torch.from_numpy(rng.random((7, 50, 60)) > 0.5)
    scores = rng.choice([0.2, 0.5, 0.9], 7).astype(np.float32)  # ties: the earlier mask wins
    host = exclusive_masks(masks, scores, dense=False)
    # dense=None: the default on a GPU, which is dense; a CPU dry run asks for it.
    dense = exclusive_masks(masks.to(DEVICE), scores, dense=None if DEVICE == "cuda" else True)
    assert dense.device.type == DEVICE
    record_property("pixels unlike the host", f"{int((dense.cpu() != host).sum())} (allowed 0)")
    assert torch.equal(dense.cpu(), host)


def test_sam_encodes_on_cuda_like_sam2s_predictor(tiny_weights, coco_images, record_property):
    """Our device-side resize and normalisation against sam2's own CPU
    transforms; both run the encoder on the GPU. Tolerance not measured: the
    inputs differ by CUDA vs CPU bilinear rounding only."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from bmp.images import load_image
    from bmp.models.segmenters import SAM2Segmenter

    segmenter = SAM2Segmenter(config=SAM21_T, checkpoint=str(tiny_weights / "sam21_hiera_t_random.pt"),
                              device=DEVICE)
    image = load_image(coco_images[1])
    reference = SAM2ImagePredictor(segmenter.predictor.model)
    with torch.inference_mode():
        reference.set_image(image)
        segmenter.set_image(torch.from_numpy(image).to(DEVICE))
    ours = segmenter.predictor
    assert ours._orig_hw == reference._orig_hw == [image.shape[:2]]
    pairs = [("image_embed", ours._features["image_embed"], reference._features["image_embed"])]
    pairs += [(f"high_res_feats[{i}]", a, b) for i, (a, b) in enumerate(
        zip(ours._features["high_res_feats"], reference._features["high_res_feats"], strict=True))]
    for name, a, b in pairs:
        measured(record_property, f"{name} max abs difference", float((a - b).abs().max()),
                 "1e-3 + 1e-3 * |reference|")
    for _, a, b in pairs:
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


# Host synchronisation ---------------------------------------------------------------


@needs_cuda_syncs
def test_mask_out_on_cuda_does_not_sync():
    image = torch.randint(0, 255, (480, 640, 3), dtype=torch.uint8, device=DEVICE)
    masks = torch.rand((12, 480, 640), device=DEVICE) > 0.9
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = mask_out(image, masks)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    out, under, image = out.cpu(), masks.any(0).cpu(), image.cpu()
    assert (out[under] == 0).all() and torch.equal(out[~under], image[~under])


def count_syncs(fn) -> tuple[object, Counter]:
    """Run ``fn()`` with torch's sync debugging at "warn"; count the syncs by
    the innermost bmp (or mmdet/mmpose/sam2) frame that caused each."""
    import traceback

    sites: Counter = Counter()
    show = warnings.showwarning

    def record(message, category, filename, lineno, file=None, line=None):
        if "synchronizing" not in str(message):
            return show(message, category, filename, lineno, file, line)
        frames = [f for f in traceback.extract_stack()[:-1]
                  if any(p in f.filename for p in ("/bmp/", "/mmdet/", "/mmpose/", "/sam2/"))]
        sites[f"{Path(frames[-1].filename).name}:{frames[-1].name}" if frames else "?"] += 1

    torch.cuda.synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = show
    return result, sites


@needs_cuda_syncs
def test_host_syncs_do_not_grow_with_the_number_of_people(tiny_weights, record_property):
    """Inside an iteration the only host transfers allowed are the per-person
    records (boxes, scores, keypoints: one transfer per array, whatever the
    number of people) and the stage timers. So the number of syncs in a call
    must not depend on how many people are in the image; a sync per person,
    per mask or per data-dependent round would make it grow. On failure the
    message lists the call sites of both runs."""
    cfg = tiny_cuda_config(tiny_weights, oks_kpt_thr=0.0)  # as `bmp bench --random-init`
    cfg["segmenter"]["prompts"]["visibility_thr"] = 0.0
    bmp = BMP.from_config(cfg, device=DEVICE)
    few, many = scene(5), scene(20)
    predict_scene(bmp, few)
    predict_scene(bmp, many)  # warm-up at both sizes
    people_few, syncs_few = count_syncs(lambda: predict_scene(bmp, few))
    people_many, syncs_many = count_syncs(lambda: predict_scene(bmp, many))
    record_property("host syncs with 5 people", str(sum(syncs_few.values())))
    record_property("host syncs with 20 people", f"{sum(syncs_many.values())} (allowed: <= with 5)")
    assert (len(people_few), len(people_many)) == (5, 20)
    assert sum(syncs_many.values()) <= sum(syncs_few.values()), (
        f"5 people: {dict(syncs_few)}\n20 people: {dict(syncs_many)}")
