"""Learn Pose2Seg's pose templates from a COCO-format keypoint file.

    .venv/bin/python tools/pose2seg_templates.py \
        --ann data/coco/annotations/person_keypoints_train2017.json \
        --out configs/pose2seg/templates_coco_train2017.json

K-means (K = 3, the paper's choice) over poses with more than --min-points
labelled keypoints, normalised to their box's unit square, each also mirrored.
The output JSON is what a Pose2Seg network config's ``templates`` points to.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bmp.models.pose2seg.templates import templates_from_coco  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ann", required=True, help="COCO-format annotation file with keypoints")
    parser.add_argument("--out", required=True, help="templates JSON to write")
    parser.add_argument("--k", type=int, default=3, help="number of templates (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="K-means seed (default 0)")
    parser.add_argument("--min-points", type=int, default=8,
                        help="poses need more than this many labelled keypoints (default 8)")
    parser.add_argument("--vis-threshold", type=float, default=0.4,
                        help="a template keypoint is valid when this share of its cluster labels it")
    parser.add_argument("--no-mirror", action="store_true", help="do not add mirrored poses")
    args = parser.parse_args(argv)
    templates = templates_from_coco(args.ann, args.k, args.seed, args.min_points,
                                    args.vis_threshold, mirror=not args.no_mirror)
    templates.save(args.out)
    counts = ", ".join(str(int(v.sum())) for v in templates.valid)
    print(f"{args.out}: {args.k} templates from {templates.meta['num_poses']} poses "
          f"(valid keypoints per template: {counts})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
