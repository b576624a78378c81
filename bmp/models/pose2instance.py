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

The person probability comes from a pluggable source (``prior``): the masks the
people already carry (a detector with masks, such as RTMDet-Ins, in the loop),
another segmenter (e.g. SAM 2 from a nested config), or a uniform 0.5 -- then
step 3 changes nothing and the result is a pure skeleton partition: each pixel
goes to the nearest body within ``radius``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from ..pose_nms import oks_matrix
from ..structures import Instances, to_numpy
from .base import SEGMENTERS, build_component
from .skeleton_field import person_scales, skeleton_distance


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


@SEGMENTERS.register_module()
class Pose2InstanceSegmenter:
    """Pose2Instance masks: nearest body by soft-maxed skeleton distance, gated by
    a person-probability map. Exclusive masks that always contain each person's
    visible keypoints (see ``prior_floor``).

    Args:
        prior: where ``P(x)`` comes from. ``'auto'``: the union of the masks the
            people carry (the detector's, in the loop) when there are any, else
            uniform; ``'uniform'``: 0.5 everywhere (pure skeleton partition); a
            dict: config of another registered segmenter (e.g. ``SAM2Segmenter``)
            whose masks' union is ``P``.
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
        stride: distances are computed every ``stride`` pixels and interpolated.
    """

    def __init__(
        self,
        prior: str | dict[str, Any] = "auto",
        kpt_thr: float = 0.3,
        temperature: float = 1 / 3,
        radius: float = 1.0,
        prior_floor: float = 0.05,
        prior_blur: float = 2.0,
        compete_with_earlier: bool = True,
        stride: int = 2,
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
        elif prior not in ("auto", "uniform"):
            raise ValueError(f"prior must be 'auto', 'uniform' or a segmenter config, got {prior!r}")
        self.prior = prior
        self.kpt_thr = kpt_thr
        self.temperature = temperature
        self.radius = radius
        self.prior_floor = prior_floor
        self.prior_blur = prior_blur
        self.compete_with_earlier = compete_with_earlier
        self.stride = stride
        self.device = device
        self._earlier: Instances | None = None

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
        if others is None:
            competitors = self._competitors(people)
        else:
            competitors = others if self.compete_with_earlier else others[np.zeros(0, dtype=np.int64)]
        everyone = Instances.cat([people, competitors]) if len(competitors) else people
        valid = self._valid(everyone)
        scales = person_scales(everyone.boxes, everyone.keypoints, valid)
        distances = skeleton_distance(
            torch.as_tensor(everyone.keypoints, dtype=torch.float32, device=self.device),
            torch.as_tensor(valid, device=self.device),
            torch.as_tensor(scales, device=self.device),
            (h, w),
            stride=self.stride,
        )
        prob = torch.as_tensor(self.person_probability(people), device=self.device)
        owner, posterior = pose_instance_partition(distances, prob, self.temperature, self.radius)
        masks = owner[None] == torch.arange(n, device=self.device)[:, None, None]  # (N, H, W)
        area = masks.sum((1, 2))
        mean_post = (posterior[None] * masks).sum((1, 2)) / area.clamp_min(1)
        kpt_conf = np.where(valid[:n], people.keypoint_scores, 0).sum(1) / np.maximum(
            valid[:n].sum(1), 1
        )
        scores = (mean_post.cpu().numpy() * kpt_conf).astype(np.float32)
        if self.compete_with_earlier:
            self._earlier = everyone
        return people.replace(masks=masks.cpu().numpy(), mask_scores=scores)

    def person_probability(self, people: Instances) -> np.ndarray:
        """(H, W) float32 ``P`` in [floor, 1 - floor] for these people."""
        h, w = people.image_size
        masks = people.masks
        if self.prior_segmenter is not None:
            masks = self.prior_segmenter.segment(people).masks
        elif self.prior == "uniform":
            masks = None
        if masks is not None:
            masks = to_numpy(masks)
        if masks is None or not masks.any():
            return np.full((h, w), 0.5, np.float32)
        union = masks.any(0).astype(np.float32)
        if self.prior_blur > 0:
            union = cv2.GaussianBlur(union, (0, 0), self.prior_blur)
        return np.clip(union, self.prior_floor, 1 - self.prior_floor).astype(np.float32)

    def _valid(self, people: Instances) -> np.ndarray:
        """(N, 17) keypoints to draw. Visibility when the pose model gives it,
        which for ground-truth poses is COCO's v > 0."""
        return (people.visibility >= self.kpt_thr) & np.isfinite(people.keypoints).all(-1)

    def _competitors(self, people: Instances) -> Instances:
        """Earlier people of this image that are not one of ``people`` again
        (pose NMS may have replaced an earlier person by its new duplicate)."""
        if self._earlier is None or not self.compete_with_earlier:
            return people[np.zeros(0, dtype=np.int64)]
        earlier = self._earlier
        both = Instances.cat([earlier, people])
        oks = oks_matrix(both.keypoints, self._valid(both).astype(np.float32), both.areas, 0.5)
        m = len(earlier)
        cross = np.maximum(oks[:m, m:], oks[m:, :m].T)  # (earlier, new)
        return earlier[np.flatnonzero(cross.max(1) <= 0.5)]
