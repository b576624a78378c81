"""The cost of bmp's COCO-17 -> CrowdPose approximation, measured on the shared COCO images.

Ground truth "both ways": the 12 limb points are COCO's own; the head top is
Halpe's human label for the same persons (Halpe annotates these 4 COCO val
images; the values below are its ``head`` point, transcribed from mmpose's
tests/data/halpe/test_halpe.json); the neck is the shoulder midpoint in both
(Halpe leaves the neck unlabelled here, so the neck's share of the cost is not
measured). Predictions: the COCO GT poses, mapped by bmp's approximation.

    .venv/bin/python tools/crowdpose_mapping_cost.py
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bmp.evaluation.crowdpose import crowdpose_metrics, to_crowdpose_result  # noqa: E402
from bmp.evaluation.crowdpose_keypoints import (  # noqa: E402
    CROWDPOSE_KEYPOINT_NAMES,
    HEAD,
    NOSE_AND_EYES,
    SHOULDERS,
    approximate_head_and_neck,
)

ANN = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco" / "annotations.json"
#: Halpe's head-top label per COCO annotation id.
HALPE_HEAD = {442619: (370, 52), 198196: (106, 120), 230195: (343, 143), 460541: (309, 78),
              488308: (589, 102), 1717641: (575, 211), 1724673: (47, 71), 437295: (333, 109),
              467657: (344, 70), 531914: (587, 57), 533949: (582, 184), 543117: (33, 54)}
CROWD_INDEX = 0.5  # one split: E/M/H is not what is measured here


def main() -> None:
    data = json.loads(ANN.read_text())
    fitted = []
    gt = copy.deepcopy(data)
    gt["categories"][0]["keypoints"] = list(CROWDPOSE_KEYPOINT_NAMES)
    for image in gt["images"]:
        image["crowdIndex"] = CROWD_INDEX
    for a in gt["annotations"]:
        kpts = np.asarray(a["keypoints"], np.float64).reshape(17, 3)
        mapped = np.asarray(to_crowdpose_result({"keypoints": a["keypoints"]})["keypoints"]).reshape(14, 3)
        mapped[HEAD] = (*HALPE_HEAD[a["id"]], 2) if a["id"] in HALPE_HEAD else (0, 0, 0)
        mapped[mapped[:, 2] == 0] = 0
        mapped[:, 2] = np.rint(mapped[:, 2])
        a["keypoints"] = mapped.reshape(-1).tolist()
        a["num_keypoints"] = int((mapped[:, 2] > 0).sum())
        seen = kpts[list(NOSE_AND_EYES), 2] > 0
        if a["id"] in HALPE_HEAD and seen.any() and (kpts[list(SHOULDERS), 2] > 0).all():
            neck = kpts[list(SHOULDERS), :2].mean(0)
            face = kpts[list(NOSE_AND_EYES)][seen, :2].mean(0)
            axis = face - neck
            fitted.append(float(np.dot(np.asarray(HALPE_HEAD[a["id"]]) - neck, axis) / np.dot(axis, axis)))
    print(f"head-top factor fitted per person (projection on neck->face): n={len(fitted)}, "
          f"median {np.median(fitted):.2f}, range {min(fitted):.2f}..{max(fitted):.2f}")
    results = [
        {"image_id": a["image_id"], "category_id": 1, "score": 1.0, "bbox": a["bbox"],
         "keypoints": a["keypoints"]}
        for a in data["annotations"] if a["num_keypoints"]
    ]
    ids = [i["id"] for i in gt["images"]]
    for factor in (1.5, float(np.median(fitted)), 1.0, 2.0):
        mapped = []
        for r in results:
            kpts = np.asarray(r["keypoints"], np.float64).reshape(1, 17, 3)
            out = np.asarray(to_crowdpose_result(r)["keypoints"]).reshape(14, 3)
            (head, _), (conf, _) = (v[0] for v in approximate_head_and_neck(kpts[..., :2], kpts[..., 2:],
                                                                               factor))
            out[HEAD] = (*head, conf[0])
            mapped.append({**r, "keypoints": out.reshape(-1).tolist()})
        stats = crowdpose_metrics(gt, mapped, ids)
        print(f"k={factor:.2f}: AP {stats['AP']:.3f}  AP50 {stats['AP50']:.3f}  AP75 {stats['AP75']:.3f}  "
              f"AR {stats['AR']:.3f}")
    exact = [{**r, "keypoints": [v for a in gt["annotations"] if a["image_id"] == r["image_id"]
                                 and a["bbox"] == r["bbox"] for v in a["keypoints"]]} for r in results]
    print(f"exact head top (the GT itself): AP {crowdpose_metrics(gt, exact, ids)['AP']:.3f}")


if __name__ == "__main__":
    main()
