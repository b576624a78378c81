"""Conversions between :class:`~bmp.structures.Instances` and supervision's
``Detections`` / ``KeyPoints`` (the optional extra ``bmp[supervision]``).

supervision is imported here only, and only when a conversion is asked for:
``import bmp`` never needs it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .structures import Instances, to_numpy

if TYPE_CHECKING:
    import supervision as sv

#: supervision's COCO-80 convention (Ultralytics models): person is class 0.
PERSON_CLASS_ID = 0
#: The per-person fields that travel in ``Detections.data`` and come back.
DATA_FIELDS = ("iteration", "det_scores", "mask_scores", "scores")


def _supervision() -> Any:
    try:
        import supervision
    except ImportError:
        raise ImportError("supervision interop needs supervision: pip install 'bmp[supervision]'") from None
    return supervision


def to_supervision(people: Instances, kpt_thr: float = 0.3) -> tuple[sv.Detections, sv.KeyPoints]:
    """``people`` as supervision ``Detections`` (boxes, masks, ``confidence`` =
    the person score, class 0 "person", ``tracker_id`` when any person is
    tracked, and :data:`DATA_FIELDS` in ``data``) and ``KeyPoints`` (17 COCO
    keypoints, their scores, ``visible`` = score >= ``kpt_thr``)."""
    sv = _supervision()
    host = people.to_host()
    n = len(host)
    class_id = np.full(n, PERSON_CLASS_ID, dtype=int)
    tracked = bool((host.track_id >= 0).any())
    detections = sv.Detections(
        xyxy=host.boxes.astype(np.float32),
        mask=host.masks,  # no copy: bmp's masks map only their box regions (see copy_masks)
        confidence=host.scores.astype(np.float32),
        class_id=class_id,
        tracker_id=host.track_id.astype(int) if tracked else None,
        data={"class_name": np.array(["person"] * n), **{f: getattr(host, f).copy() for f in DATA_FIELDS}},
    )
    keypoints = sv.KeyPoints(
        xy=host.keypoints.astype(np.float32),
        class_id=class_id,
        keypoint_confidence=host.keypoint_scores.astype(np.float32),
        detection_confidence=host.scores.astype(np.float32),
        visible=host.keypoint_scores >= kpt_thr,
        data={"visibility": host.visibility.copy()},
    )
    return detections, keypoints


def from_supervision(
    detections: sv.Detections,
    image_size: tuple[int, int] | None = None,
    keypoints: sv.KeyPoints | None = None,
    class_id: int | None = None,
) -> Instances:
    """The people of ``detections`` as :class:`Instances`: boxes, masks (dense
    or ``CompactMask``), ``confidence`` as ``det_scores`` (default 1),
    ``tracker_id`` as ``track_id``, the :data:`DATA_FIELDS` that
    :func:`to_supervision` wrote, and ``keypoints`` when given.

    Feed them to the loop with ``bmp.estimate_pose(image, people.boxes,
    people.masks, people.det_scores)`` or ``bmp.predict(image, boxes=people.boxes)``.

    Args:
        image_size: (height, width); default: the masks' size (required without masks).
        class_id: keep only detections of this class (e.g. :data:`PERSON_CLASS_ID`
            for a COCO-80 detector); default: all of them.
    Raises:
        ValueError: no image size, masks of another size, a keypoint count that
            differs, or malformed boxes or scores, in one line.
    """
    from .loop import given_people  # the loop's own validation of a caller's boxes

    if class_id is not None:
        if detections.class_id is None:
            raise ValueError(f"class_id={class_id} given, but the detections have no class_id")
        keep = np.asarray(detections.class_id) == class_id
        detections = detections[keep]
        keypoints = None if keypoints is None else keypoints[keep]
    masks = detections.mask
    if masks is not None and not isinstance(masks, np.ndarray):
        masks = masks.to_dense()  # CompactMask
    if image_size is None:
        if masks is None:
            raise ValueError("from_supervision needs image_size=(height, width) for detections without masks")
        image_size = tuple(masks.shape[1:])
    elif masks is not None and tuple(masks.shape[1:]) != tuple(image_size):
        raise ValueError(
            f"the detections' masks are {tuple(masks.shape[1:])}, image_size is {tuple(image_size)}"
        )
    people = given_people(tuple(image_size), detections.xyxy, detections.confidence, masks)
    changes: dict[str, np.ndarray] = {}
    if detections.tracker_id is not None:
        changes["track_id"] = np.asarray(detections.tracker_id).astype(np.int32)
    for name in DATA_FIELDS:
        if name in detections.data:
            changes[name] = np.asarray(detections.data[name]).astype(getattr(people, name).dtype)
    if keypoints is not None:
        xy = to_numpy(keypoints.xy).astype(np.float32)
        if xy.shape != people.keypoints.shape:
            raise ValueError(
                f"keypoints must be {people.keypoints.shape} (COCO's 17 per person), got {xy.shape}"
            )
        changes["keypoints"] = xy
        if keypoints.keypoint_confidence is not None:
            changes["keypoint_scores"] = np.asarray(keypoints.keypoint_confidence, np.float32)
        if "visibility" in (keypoints.data or {}):
            changes["visibility"] = np.asarray(keypoints.data["visibility"], np.float32)
    return people.replace(**changes) if changes else people
