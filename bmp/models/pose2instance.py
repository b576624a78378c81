"""Pose2Instance: exclusive instance masks from poses and a person-probability map.

Inference only, no weights (Tripathi et al., 2017; BMP_NOTES "Pose2Instance"):

1. per person, the normalised distance ``u_i(x)`` to the body drawn from its
   visible keypoints (:mod:`bmp.models.skeleton_field`);
2. a soft-max across persons turns the distances into the pose-instance map
   ``Q_i(x) = softmax_i(-u_i(x) / T)``. A background "skeleton" at constant
   distance ``radius`` joins the soft-max, so a pixel far from every body is
   background even when the prior says nothing;
3. the map is multiplied by the person probability ``P(x)``
   (``S_i = P * Q_i``, background ``S_0 = (1 - P) * Q_0``);
4. argmax over ``S`` gives every pixel to at most one person: the masks are
   exclusive by construction.

Only a person's surroundings matter: beyond ``radius + T * logit(1 - floor)``
part radii from its keypoints it cannot win a pixel. So each person's field is
computed on a grid over that reach (at most ``working_size`` nodes a side,
bilinearly interpolated like the full-image field at ``stride``), and pixels
are decided at full resolution in bands of the person's box, against only the
people whose reach overlaps it. Memory grows with people x box area, never with
people x image (no (N + 1) x H x W float); :func:`pose_instance_partition` on
:func:`~bmp.models.skeleton_field.skeleton_distance` is the full-image
reference it matches.

The person probability comes from a pluggable source (``prior``): the masks the
people already carry (a detector with masks, such as RTMDet-Ins, in the loop),
another segmenter (e.g. SAM 2 from a nested config), the image itself
(``'grabcut'``: per-person GrabCut seeded by the poses,
:mod:`bmp.models.mask_refine`), or a uniform 0.5 -- then step 3 changes nothing
and the result is a pure skeleton partition: each pixel goes to the nearest body
within ``radius``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..pose_nms import oks_matrix
from ..structures import Instances, to_numpy
from .base import SEGMENTERS, build_component
from .mask_refine import PersonMask, PoseGrabCutSegmenter
from .skeleton_field import body_reach_boxes, person_scales, skeleton_distance_grid


def pose_instance_partition(
    distances: torch.Tensor,
    person_prob: torch.Tensor,
    temperature: float,
    radius: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 2-4: owner of every pixel and its posterior.

    Args:
        distances: (N, H, W) normalised distances ``u`` (``inf`` = no body).
        person_prob: (H, W) in (0, 1), the person-probability map ``P``.
        temperature: ``T`` of the soft-max across persons, in units of ``u``.
        radius: the background's constant distance, in units of ``u``.
    Returns:
        ``owner`` (H, W) int64, the person index or -1 for background, and
        ``posterior`` (H, W) float32, the owner's normalised score ``S / sum S``.
    """
    n, h, w = distances.shape
    background = torch.full((1, h, w), -radius / temperature, device=distances.device)
    logits = torch.cat([background, -distances / temperature], 0)  # (N + 1, H, W)
    log_q = torch.log_softmax(logits, 0)
    log_p = torch.stack([torch.log1p(-person_prob), torch.log(person_prob)])  # bg, person
    log_s = log_q + torch.cat([log_p[:1], log_p[1:].expand(n, h, w)], 0)
    posterior, owner = torch.softmax(log_s, 0).max(0)
    return owner - 1, posterior


class _Poses(NamedTuple):
    """The per-person records the partition reads (no masks: competitors'
    masks are never copied)."""

    keypoints: np.ndarray  # (N, 17, 2)
    valid: np.ndarray  # (N, 17) bool
    boxes: np.ndarray  # (N, 4) xyxy

    @staticmethod
    def cat(items: Sequence[_Poses]) -> _Poses:
        return _Poses(*(np.concatenate(parts) for parts in zip(*items, strict=True)))

    def select(self, index: np.ndarray) -> _Poses:
        return _Poses(self.keypoints[index], self.valid[index], self.boxes[index])


@dataclass
class _Field:
    """One person's ``u`` on its grid of nodes ``(gx + step * j, gy + step * i)``,
    and ``box`` = (y0, y1, x0, x1), the pixels it can reach (clipped to the
    image); read at pixels with :meth:`crop`."""

    grid: torch.Tensor  # (rows, cols), both >= 2
    gx: int
    gy: int
    step: int
    box: tuple[int, int, int, int]
    keypoint_pixels: torch.Tensor  # (K, 2) long xy of the drawn keypoints

    def crop(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        """(y1 - y0, x1 - x0) float32 ``u`` of pixels [y0, y1) x [x0, x1), which
        must lie inside the grid: bilinear between nodes (exactly what
        interpolating the whole grid gives), 0 on the drawn keypoints' pixels."""
        k = self.step
        r0, c0 = (y0 - self.gy) // k, (x0 - self.gx) // k
        rows, cols = self.grid.shape
        r1 = min(max(-(-(y1 - 1 - self.gy) // k), r0 + 1), rows - 1)
        c1 = min(max(-(-(x1 - 1 - self.gx) // k), c0 + 1), cols - 1)
        r0, c0 = min(r0, r1 - 1), min(c0, c1 - 1)
        nodes = self.grid[r0 : r1 + 1, c0 : c1 + 1]
        if k > 1:
            size = ((r1 - r0) * k + 1, (c1 - c0) * k + 1)
            nodes = F.interpolate(nodes[None, None], size=size, mode="bilinear", align_corners=True)[0, 0]
        top, left = y0 - self.gy - r0 * k, x0 - self.gx - c0 * k
        out = nodes[top : top + y1 - y0, left : left + x1 - x0].clone()
        xy = self.keypoint_pixels
        hit = (xy[:, 0] >= x0) & (xy[:, 0] < x1) & (xy[:, 1] >= y0) & (xy[:, 1] < y1)
        out[xy[hit, 1] - y0, xy[hit, 0] - x0] = 0.0
        return out


class _OwnPrior(NamedTuple):
    """One person's own prior mask: ``mask`` on ``box`` (y0, y1, x0, x1) of an
    image of ``size`` (h, w), empty elsewhere; read as an image with :func:`_region`."""

    box: tuple[int, int, int, int]
    mask: np.ndarray
    size: tuple[int, int]


def _region(prior: np.ndarray | _OwnPrior, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """The (y1 - y0, x1 - x0) bool pixels of a whole-image map or of one
    person's prior (zeros outside its box: no image-sized copy)."""
    if isinstance(prior, np.ndarray):
        return prior[y0:y1, x0:x1]
    out = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    both = _overlap((y0, y1, x0, x1), prior.box)
    if both is not None:
        c0, c1, d0, d1 = both
        by0, _, bx0, _ = prior.box
        out[c0 - y0 : c1 - y0, d0 - x0 : d1 - x0] = prior.mask[c0 - by0 : c1 - by0, d0 - bx0 : d1 - bx0]
    return out


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    """The intersection of two (y0, y1, x0, x1) pixel boxes, None when empty."""
    y0, y1, x0, x1 = max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3])
    return (y0, y1, x0, x1) if y0 < y1 and x0 < x1 else None


def _bands(box: tuple[int, int, int, int], max_pixels: int) -> Iterator[tuple[int, int, int, int]]:
    """``box`` cut into row bands of at most ``max_pixels`` (at least one row)."""
    y0, y1, x0, x1 = box
    rows = max(1, max_pixels // max(1, x1 - x0))
    for top in range(y0, y1, rows):
        yield top, min(top + rows, y1), x0, x1


@SEGMENTERS.register_module()
class Pose2InstanceSegmenter:
    """Pose2Instance masks: nearest body by soft-maxed skeleton distance, gated by
    a person-probability map. Exclusive masks that always contain each person's
    visible keypoints (see ``prior_floor``).

    Args:
        prior: where ``P(x)`` comes from. ``'auto'``: the union of the masks the
            people carry (the detector's, in the loop) when there are any, else
            uniform; ``'uniform'``: 0.5 everywhere (pure skeleton partition);
            ``'grabcut'``: the union of per-person GrabCut masks seeded by the
            poses (``PoseGrabCutSegmenter`` with its defaults; weight-free, the
            masks follow the image); a dict: config of another registered
            segmenter (e.g. ``SAM2Segmenter``, or ``PoseGrabCutSegmenter`` with
            options) whose masks' union is ``P``.
        per_person_prior: with a GrabCut prior, each person's own GrabCut mask
            is its prior ``P_i`` (the union stays the background's): a person
            wins a pixel its own GrabCut took over a neighbour whose GrabCut did
            not, and the pose partition decides among several claimants. False:
            every person shares the union as ``P``.
        kpt_thr: keypoints with visibility (or score) >= this are drawn.
        temperature: soft-max temperature ``T`` over normalised distances; it
            sets how far a confident prior moves a body's boundary
            (by ``T * logit(P)``).
        radius: distance (in part radii) beyond which a body does not reach
            under a uniform prior.
        prior_floor: ``P`` is clipped to [floor, 1 - floor]. Must satisfy
            ``radius / temperature > logit(1 - floor)`` so that a body's own
            skeleton beats background even where the prior is ~0.
        prior_blur: Gaussian sigma (pixels) softening a mask prior's edges.
        compete_with_earlier: people segmented by earlier ``segment`` calls on
            the same image (earlier loop iterations) compete for pixels too, so
            a person found later does not spread over someone found before.
        stride: distances are computed every ``stride`` pixels (at least) and
            interpolated.
        working_size: at most this many grid nodes along the longer side of a
            person's reach (the step grows beyond ``stride`` for large people:
            the field is smooth at the scale of a limb's width).
        band_pixels: pixels decided at once: bounds the float temporaries, and
            small enough for them to stay in cache.
    """

    def __init__(
        self,
        prior: str | dict[str, Any] = "auto",
        per_person_prior: bool = False,
        kpt_thr: float = 0.3,
        temperature: float = 1 / 3,
        radius: float = 1.0,
        prior_floor: float = 0.05,
        prior_blur: float = 2.0,
        compete_with_earlier: bool = True,
        stride: int = 2,
        working_size: int = 256,
        band_pixels: int = 1 << 18,
        device: str = "cpu",
        weights_dirs: Sequence[str] = (),
    ) -> None:
        if not 0 < prior_floor < 0.5:
            raise ValueError(f"prior_floor must be in (0, 0.5), got {prior_floor}")
        if radius / temperature <= math.log((1 - prior_floor) / prior_floor):
            raise ValueError(
                f"radius / temperature ({radius / temperature:.2f}) must exceed "
                f"logit(1 - prior_floor) ({math.log((1 - prior_floor) / prior_floor):.2f}), "
                "or a low prior could erase a person's own keypoints"
            )
        self.prior_segmenter = None
        if isinstance(prior, dict):
            self.prior_segmenter = build_component(
                SEGMENTERS, prior, "segmenter.prior", device=device, weights_dirs=weights_dirs
            )
        elif prior == "grabcut":
            self.prior_segmenter = PoseGrabCutSegmenter(kpt_thr=kpt_thr)
        elif prior not in ("auto", "uniform"):
            raise ValueError(
                f"prior must be 'auto', 'uniform', 'grabcut' or a segmenter config, got {prior!r}"
            )
        if per_person_prior and not isinstance(self.prior_segmenter, PoseGrabCutSegmenter):
            raise ValueError(f"per_person_prior needs a GrabCut prior, got prior={prior!r}")
        self.prior = prior
        self.per_person_prior = per_person_prior
        self.kpt_thr = kpt_thr
        self.temperature = temperature
        self.radius = radius
        self.prior_floor = prior_floor
        self.prior_blur = prior_blur
        self.compete_with_earlier = compete_with_earlier
        if stride < 1 or working_size < 2 or band_pixels < 1:
            raise ValueError(
                f"stride ({stride}), working_size ({working_size}) and band_pixels ({band_pixels}) "
                "must be >= 1, >= 2 and >= 1"
            )
        self.stride = stride
        self.working_size = working_size
        self.band_pixels = band_pixels
        self.device = device
        self._earlier: _Poses | None = None

    def set_image(self, image: np.ndarray) -> None:
        """Forget the people of the previous image; prepare the prior source."""
        self._earlier = None
        if self.prior_segmenter is not None:
            self.prior_segmenter.set_image(image)

    @property
    def prompt_config(self) -> Any:
        """The nested prior segmenter's prompt settings (SAM 2), so that callers
        switching prompts (``bmp eval --gt-kpts``) reach it; None without one."""
        return getattr(self.prior_segmenter, "prompt_config", None)

    @prompt_config.setter
    def prompt_config(self, value: Any) -> None:
        if self.prior_segmenter is not None:
            self.prior_segmenter.prompt_config = value

    @torch.inference_mode()
    def segment(self, people: Instances, others: Instances | None = None) -> Instances:
        """Fills ``masks`` (N, H, W), pairwise disjoint (also with the people of
        earlier iterations: ``others`` as the loop passes them, else those of
        earlier calls on this image), and ``mask_scores`` (N,): the mean
        posterior inside the mask times the mean score of the drawn keypoints."""
        n = len(people)
        if n == 0:
            return people
        h, w = people.image_size
        mine = self._poses(people)
        if others is None:
            competitors = self._competitors(mine)
        elif self.compete_with_earlier:
            competitors = self._poses(others)
        else:
            competitors = mine.select(np.zeros(0, dtype=np.int64))
        everyone = _Poses.cat([mine, competitors])
        union, own = self._priors(people, everyone)
        fields = self._fields(everyone, (h, w), uniform=union is None)
        # Host zeros are mapped lazily: only the pages of the people's boxes
        # ever get memory here.
        masks = np.zeros((n, h, w), dtype=bool)
        mean_post = np.zeros(n, np.float32)
        for i in range(n):
            if fields[i] is not None:
                mean_post[i] = self._decide(i, fields, union, torch.from_numpy(masks[i]), own)
        valid = mine.valid
        kpt_conf = np.where(valid, people.keypoint_scores, 0).sum(1) / np.maximum(valid.sum(1), 1)
        scores = (mean_post * kpt_conf).astype(np.float32)
        if self.compete_with_earlier:
            self._earlier = everyone
        return people.replace(masks=masks, mask_scores=scores)

    def _fields(self, everyone: _Poses, size: tuple[int, int], uniform: bool) -> list[_Field | None]:
        """Each person's field on a grid over its reach (None: no drawn keypoint
        or no reach inside the image). Under a uniform prior a body reaches
        ``radius``; a mask prior can extend that to ``radius + T logit(1 - floor)``."""
        h, w = size
        scales = person_scales(everyone.boxes, everyone.keypoints, everyone.valid)
        floor = self.prior_floor
        reach = self.radius + (0.0 if uniform else self.temperature * math.log((1 - floor) / floor))
        boxes = body_reach_boxes(everyone.keypoints, everyone.valid, scales, reach)
        keypoints = torch.as_tensor(everyone.keypoints, dtype=torch.float32, device=self.device)
        valid = torch.as_tensor(everyone.valid, device=self.device)
        out: list[_Field | None] = []
        for i, (bx0, by0, bx1, by1) in enumerate(boxes.astype(np.float64)):
            if np.isnan(bx0):
                out.append(None)
                continue
            step = max(self.stride, math.ceil(max(bx1 - bx0, by1 - by0) / (self.working_size - 1)))
            # Interpolation reads nodes up to a step (per axis) away: grow the box
            # by 1.5 steps so that outside it every node read is beyond reach too.
            pad = 1.5 * step + 1
            x0, y0 = max(0, math.floor(bx0 - pad)), max(0, math.floor(by0 - pad))
            x1, y1 = min(w, math.ceil(bx1 + pad) + 1), min(h, math.ceil(by1 + pad) + 1)
            if x0 >= x1 or y0 >= y1:
                out.append(None)
                continue
            # Nodes on multiples of the step, as the full-image grid has them.
            gx, gy = x0 // step * step, y0 // step * step
            cols = max(2, -(-(x1 - 1 - gx) // step) + 1)
            rows = max(2, -(-(y1 - 1 - gy) // step) + 1)
            grid = skeleton_distance_grid(
                keypoints[i : i + 1], valid[i : i + 1],
                torch.as_tensor(scales[i : i + 1], device=self.device), (gx, gy), step, (rows, cols),
                max_elements=1 << 18,  # cache-sized chunks: several times faster than 1 << 22
            )[0]
            xy = keypoints[i][valid[i]].round().long()
            out.append(_Field(grid, gx, gy, step, (y0, y1, x0, x1), xy))
        return out

    def _decide(
        self,
        i: int,
        fields: list[_Field | None],
        union: np.ndarray | None,
        mask: torch.Tensor,
        own: list[_OwnPrior | None] | None = None,
    ) -> float:
        """Writes person ``i``'s pixels into ``mask`` (H, W) bool, on the host;
        returns the mean posterior over them.

        Person ``i`` wins a pixel over the background where ``u_i < thr =
        radius + T logit(P)`` (the background's soft-max score ``(1 - P)
        e^(-radius / T)`` against ``P e^(-u_i / T)``), and over person ``j``
        where ``u_i < u_j`` (``<=`` for a later ``j``: ties go to the earlier
        person, as in the argmax). Its posterior is ``1 / (1 + e^((u_i - thr) / T)
        + sum_j e^((u_i - u_j) / T))`` over the people ``j`` that reach the
        pixel; those that do not add less than ``e^(-(reach - u_i) / T)`` each.

        With ``own`` (per-person priors; None: all share ``union``) each
        person's distance becomes ``u - T log P_own`` against the others, and
        ``thr = radius + T (log P_own - log(1 - P_union))``. People without
        their own prior (earlier iterations' competitors) use the union's.
        """
        me = fields[i]
        assert me is not None
        rivals = [
            (j, f) for j, f in enumerate(fields) if j != i and f is not None and _overlap(me.box, f.box)
        ]
        t = self.temperature
        post_sum, area = 0.0, 0
        for band in _bands(me.box, self.band_pixels):
            y0, y1, x0, x1 = band
            u = me.crop(*band)
            ranked = u  # what this person's distance is compared with its rivals' by
            if own is None:
                thr = self._threshold(union, band)
            else:
                assert union is not None
                prob_union = self._blurred_prior(union, band)
                log_union = torch.log(prob_union)
                log_mine = self._log_own_prior(own[i], me, band, log_union, (y0, x0))
                thr = self.radius + t * (log_mine - torch.log1p(-prob_union))
                ranked = u - t * log_mine
            win = u < thr
            denom = 1.0 + torch.exp((u - thr) / t)
            for j, other in rivals:
                both = _overlap(band, other.box)
                if both is None:
                    continue
                c0, c1, d0, d1 = both
                ours = ranked[c0 - y0 : c1 - y0, d0 - x0 : d1 - x0]
                theirs = other.crop(*both)
                if own is not None:
                    theirs = theirs - t * self._log_own_prior(own[j], other, both, log_union, (y0, x0))
                beats = ours < theirs if j < i else ours <= theirs
                win[c0 - y0 : c1 - y0, d0 - x0 : d1 - x0] &= beats
                denom[c0 - y0 : c1 - y0, d0 - x0 : d1 - x0] += torch.exp((ours - theirs) / t)
            mask[y0:y1, x0:x1] = win.cpu()
            post_sum += float(torch.where(win, denom.reciprocal_(), 0.0).sum())
            area += int(win.sum())
        return post_sum / max(area, 1)

    def _log_own_prior(
        self,
        prior: _OwnPrior | None,
        field: _Field,
        region: tuple[int, int, int, int],
        log_union: torch.Tensor,
        origin: tuple[int, int],
    ) -> torch.Tensor:
        """log ``P`` of one person's own prior on ``region`` (y0, y1, x0, x1),
        at most ``1 - floor`` on its drawn keypoints' pixels; ``log_union`` is
        the union's on the band starting at ``origin`` (y, x) that holds the
        region: the prior of a person without its own."""
        y0, y1, x0, x1 = region
        r = self._blur_reach()
        if prior is None:
            out = log_union[y0 - origin[0] : y1 - origin[0], x0 - origin[1] : x1 - origin[1]].clone()
        elif _overlap((y0 - r, y1 + r, x0 - r, x1 + r), prior.box) is None:
            # Beyond the blur's reach of its mask: the floor, without blurring zeros.
            out = torch.full((y1 - y0, x1 - x0), math.log(self.prior_floor), device=self.device)
        else:
            out = torch.log(self._blurred_prior(prior, region))
        # GrabCut may leave a keypoint to a nearer neighbour's colours; the
        # keypoint's own pixel stays its person's (u = 0 there), as under the union.
        xy = field.keypoint_pixels
        hit = (xy[:, 0] >= x0) & (xy[:, 0] < x1) & (xy[:, 1] >= y0) & (xy[:, 1] < y1)
        out[xy[hit, 1] - y0, xy[hit, 0] - x0] = math.log(1 - self.prior_floor)
        return out

    def _threshold(self, union: np.ndarray | None, band: tuple[int, int, int, int]) -> torch.Tensor | float:
        """``radius + T logit(P)`` on ``band`` (y0, y1, x0, x1): a number under
        the uniform prior, else from ``P`` on the band."""
        if union is None:
            return self.radius
        prob = self._blurred_prior(union, band)
        return self.radius + self.temperature * (torch.log(prob) - torch.log1p(-prob))

    def _blur_reach(self) -> int:
        """OpenCV's Gaussian kernel radius for ``prior_blur`` (0: no blur)."""
        sigma = self.prior_blur
        return (int(round(sigma * 8 + 1)) | 1) // 2 if sigma > 0 else 0

    def _blurred_prior(self, union: np.ndarray | _OwnPrior, band: tuple[int, int, int, int]) -> torch.Tensor:
        """(y1 - y0, x1 - x0) float32 ``P`` in [floor, 1 - floor] on the device.

        OpenCV's Gaussian blur of the whole image, computed over the band plus
        the kernel's reach (4 sigma each side), with the image's edges reflected
        as OpenCV does (edge pixel not repeated). In torch rather than OpenCV:
        OpenCV's thread pool and torch's OpenMP threads, interleaved band by
        band, slowed each other down ten-fold on a busy CPU.
        """
        y0, y1, x0, x1 = band
        h, w = union.shape if isinstance(union, np.ndarray) else union.size
        sigma = self.prior_blur
        r = self._blur_reach()
        py0, py1, px0, px1 = max(0, y0 - r), min(h, y1 + r), max(0, x0 - r), min(w, x1 + r)
        crop = _region(union, py0, py1, px0, px1)
        # Reflected on every side: where the crop is inside the image, the
        # reflected rows lie beyond the kernel's reach of the band.
        padded = np.pad(crop, r, mode="reflect") if r else crop
        prob = torch.from_numpy(np.ascontiguousarray(padded)).to(self.device, torch.float32)[None, None]
        if r:
            kernel = torch.from_numpy(cv2.getGaussianKernel(2 * r + 1, sigma, cv2.CV_32F)).to(self.device)
            prob = F.conv2d(F.conv2d(prob, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))
        prob = prob[0, 0, y0 - py0 : y1 - py0, x0 - px0 : x1 - px0]
        return prob.clamp(self.prior_floor, 1 - self.prior_floor)

    def _priors(
        self, people: Instances, everyone: _Poses
    ) -> tuple[np.ndarray | None, list[_OwnPrior | None] | None]:
        """The union prior (None: uniform) and, with ``per_person_prior``, each
        of ``everyone``'s own GrabCut mask (None for competitors and people
        without one)."""
        if not isinstance(self.prior_segmenter, PoseGrabCutSegmenter):
            return self._prior_union(people), None
        union, own = self._grabcut_priors(people, everyone)
        if not union.any():
            return None, None
        return union, own if self.per_person_prior else None

    def _grabcut_priors(
        self, people: Instances, everyone: _Poses
    ) -> tuple[np.ndarray, list[_OwnPrior | None]]:
        """(H, W) bool union of ``people``'s GrabCut masks, made straight in one
        map (no (N, H, W) stack to reduce), and each of ``everyone``'s own mask
        (None for competitors and people without one). ``everyone``: ``people``'s
        poses, then their competitors' (GrabCut seeds those as background)."""
        assert isinstance(self.prior_segmenter, PoseGrabCutSegmenter)
        h, w = people.image_size
        union = np.zeros((h, w), dtype=bool)  # lazily mapped: only boxes get pages
        own: list[_OwnPrior | None] = [None] * len(everyone.keypoints)
        found: Iterator[tuple[int, PersonMask]] = self.prior_segmenter.person_masks(
            everyone.keypoints, everyone.valid, everyone.boxes, len(people))
        for i, (box, mask) in found:
            y0, y1, x0, x1 = box
            union[y0:y1, x0:x1] |= mask
            own[i] = _OwnPrior(box, mask, (h, w))
        return union, own

    def _prior_union(self, people: Instances) -> np.ndarray | None:
        """(H, W) bool union of the prior's masks, or None for a uniform ``P``."""
        masks = people.masks
        if isinstance(self.prior_segmenter, PoseGrabCutSegmenter):
            union, _ = self._grabcut_priors(people, self._poses(people))
            return union if union.any() else None
        if self.prior_segmenter is not None:
            masks = self.prior_segmenter.segment(people).masks
        elif self.prior == "uniform":
            masks = None
        if masks is None or len(masks) == 0:
            return None
        union = to_numpy(masks.any(0))
        return union if union.any() else None

    def person_probability(self, people: Instances) -> np.ndarray:
        """(H, W) float32 ``P`` in [floor, 1 - floor] for these people (the
        whole-image map; :meth:`segment` evaluates it per band). With
        ``per_person_prior`` this is the union, the background's ``P``."""
        h, w = people.image_size
        union = self._prior_union(people)
        if union is None:
            return np.full((h, w), 0.5, np.float32)
        return self._blurred_prior(union, (0, h, 0, w)).cpu().numpy()

    def _valid(self, people: Instances) -> np.ndarray:
        """(N, 17) keypoints to draw. Visibility when the pose model gives it,
        which for ground-truth poses is COCO's v > 0."""
        return (people.visibility >= self.kpt_thr) & np.isfinite(people.keypoints).all(-1)

    def _poses(self, people: Instances) -> _Poses:
        return _Poses(people.keypoints, self._valid(people), people.boxes)

    def _competitors(self, people: _Poses) -> _Poses:
        """Earlier people of this image that are not one of ``people`` again
        (pose NMS may have replaced an earlier person by its new duplicate)."""
        if self._earlier is None or not self.compete_with_earlier:
            return people.select(np.zeros(0, dtype=np.int64))
        earlier = self._earlier
        both = _Poses.cat([earlier, people])
        wh = np.clip(both.boxes[:, 2:] - both.boxes[:, :2], 0, None)
        oks = oks_matrix(both.keypoints, both.valid.astype(np.float32), wh[:, 0] * wh[:, 1], 0.5)
        m = len(earlier.keypoints)
        cross = np.maximum(oks[:m, m:], oks[m:, :m].T)  # (earlier, new)
        return earlier.select(np.flatnonzero(cross.max(1) <= 0.5))
