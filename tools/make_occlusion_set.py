#!/usr/bin/env python3
"""Build the synthetic occlusion benchmark from a COCO-format person set.

    .venv/bin/python tools/make_occlusion_set.py --ann ../shared/data/coco/annotations.json \
        --images ../shared/data/coco --out outputs/occlusion_set --seed 0

Each target person gets a ground-truth-masked person pasted over it, hiding
30-70 % of its mask (--occlusion); the annotations follow (the pasted person
added, covered masks, areas, boxes and keypoint visibilities updated). The same
seed rebuilds the same set. Evaluate on it with
``bmp eval --ann OUT/annotations.json --images OUT/images ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bmp.evaluation.occlusion_set import OcclusionSpec, make_occlusion_set  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ann", required=True, help="COCO-format person annotations (masks, keypoints)")
    parser.add_argument("--images", required=True, help="folder of the annotated images")
    parser.add_argument("--out", required=True, help="output folder (images/, annotations.json)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--occlusion", type=float, nargs=2, default=(0.3, 0.7), metavar=("LOW", "HIGH"),
                        help="share of the target's mask to hide (default 0.3 0.7)")
    parser.add_argument("--per-target", type=int, default=2, help="variants per target person (default 2)")
    parser.add_argument("--min-area", type=float, default=4000.0, help="smallest person area in px² (4000)")
    args = parser.parse_args(argv)
    lo, hi = args.occlusion
    if not 0 <= lo <= hi <= 1:
        parser.error(f"--occlusion needs 0 <= LOW <= HIGH <= 1, got {lo} {hi}")
    spec = OcclusionSpec(seed=args.seed, occlusion=(lo, hi), per_target=args.per_target,
                         min_area=args.min_area)
    try:
        data = make_occlusion_set(args.ann, args.images, args.out, spec)
    except (OSError, ValueError) as exc:
        print(f"make_occlusion_set: error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(data['images'])} images, {len(data['annotations'])} people -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
