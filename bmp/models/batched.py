"""The loop's calls into its models, for several images at once.

A model may take a whole batch of images in one call: ``detect_batch(images)``,
``estimate_batch(images, people, others)``, ``set_images(images)`` +
``segment_batch(people, others)``. Models that only have the per-image methods
of :mod:`bmp.models.base` are called once per image here, so every model
serves :meth:`bmp.loop.BMP.predict_batch`, and ``predict`` is a batch of one.
Lists are aligned: item ``i`` of every argument and of the answer belongs to
image ``i``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from ..images import PixelArray
from ..structures import Instances


def detect_batch(
    detector: Any, images: Sequence[PixelArray], names: Sequence[str | None]
) -> list[Instances]:
    """People in every image. Detectors that look an image up by its file
    name (``select``, e.g. ground truth) are told each name first."""
    if hasattr(detector, "select"):
        found = []
        for image, name in zip(images, names, strict=True):
            if name is not None:
                detector.select(name)
            found.append(detector.detect(image))
        return found
    if hasattr(detector, "detect_batch"):
        return detector.detect_batch(list(images))
    return [detector.detect(image) for image in images]


def estimate_batch(
    pose: Any, images: Sequence[PixelArray], people: Sequence[Instances],
    others: Sequence[Instances | None],
) -> list[Instances]:
    """Poses of ``people[i]`` on ``images[i]``; ``others[i]``: the people found
    earlier in image ``i`` (for models that condition on them)."""
    if hasattr(pose, "estimate_batch"):
        return pose.estimate_batch(list(images), list(people), list(others))
    takes_others = "others" in inspect.signature(pose.estimate).parameters
    return [
        pose.estimate(image, p, **({"others": o} if takes_others and o is not None else {}))
        for image, p, o in zip(images, people, others, strict=True)
    ]


class BatchSegmenter:
    """A segmenter seen through the batch interface.

    ``set_images`` does the per-image work (SAM's image encode) for a batch;
    ``segment_batch`` then fills the masks of ``people[i]`` on image ``i`` of
    that batch, as often as the loop needs. A segmenter with only
    ``set_image``/``segment`` holds one image at a time, so it is given each
    image again when its people are segmented (once, for a batch of one).
    """

    def __init__(self, segmenter: Any) -> None:
        self.segmenter = segmenter
        self.native = hasattr(segmenter, "segment_batch") and hasattr(segmenter, "set_images")
        self.takes_others = "others" in inspect.signature(
            segmenter.segment_batch if self.native else segmenter.segment
        ).parameters
        self._images: list[PixelArray] = []
        self._current: int | None = None

    def set_images(self, images: Sequence[PixelArray]) -> None:
        if self.native:
            self.segmenter.set_images(list(images))
            return
        self._images = list(images)
        self._current = None
        if len(self._images) == 1:  # the per-image work now, as for a native segmenter
            self._select(0)

    def _select(self, index: int) -> None:
        if self._current != index:
            self.segmenter.set_image(self._images[index])
            self._current = index

    def segment_batch(
        self, people: Sequence[Instances], others: Sequence[Instances | None]
    ) -> list[Instances]:
        if self.native:
            kwargs = {"others": list(others)} if self.takes_others else {}
            return self.segmenter.segment_batch(list(people), **kwargs)
        out = []
        for index, (p, o) in enumerate(zip(people, others, strict=True)):
            if len(p) == 0:
                out.append(p)
                continue
            self._select(index)
            kwargs = {"others": o} if self.takes_others and o is not None else {}
            out.append(self.segmenter.segment(p, **kwargs))
        return out
