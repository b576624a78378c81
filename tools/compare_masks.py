"""Side-by-side overlays of two configs on the same images: what a change of
segmenter does to the masks (README's lite-mask figure)::

    .venv/bin/python tools/compare_masks.py --a configs/bmp_lite_pose2instance.py \
        --b configs/bmp_lite.py --weights-dir ../shared/models --out docs/lite_masks.jpg \
        ../shared/data/coco/000000040083.jpg ../shared/data/coco/000000197388.jpg
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from bmp import BMP
from bmp.images import load_image
from bmp.vis import draw_instances, write_image


def _titled(image: np.ndarray, title: str, width: int) -> np.ndarray:
    scaled = cv2.resize(image, (width, round(image.shape[0] * width / image.shape[1])),
                        interpolation=cv2.INTER_AREA)
    bar = np.full((28, width, 3), 255, np.uint8)
    cv2.putText(bar, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, scaled])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--a", required=True, help="left config")
    parser.add_argument("--b", required=True, help="right config")
    parser.add_argument("--weights-dir", action="append", default=[])
    parser.add_argument("--width", type=int, default=480, help="width of each panel")
    parser.add_argument("--quality", type=int, default=80, help="JPEG quality")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    loops = [BMP.from_config(c, device="cpu", weights_dirs=args.weights_dir) for c in (args.a, args.b)]
    rows = []
    for path in args.images:
        image = load_image(path)
        panels = [_titled(draw_instances(image, loop.predict(image), show_prompts=False),
                          f"{Path(config).stem}: {path.name}", args.width)
                  for loop, config in zip(loops, (args.a, args.b), strict=True)]
        rows.append(np.hstack(panels))
    write_image(args.out, np.vstack(rows), (cv2.IMWRITE_JPEG_QUALITY, args.quality))
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
