"""Wall time and peak RSS of one ``BMP.predict`` on a large synthetic photo.

Each case runs in a fresh subprocess, after one warm-up call on the small
source image, so the peak RSS (``VmHWM``) is that call's (models, image and loop
together)::

    .venv/bin/python tools/measure_memory.py --case 8000x6000 --case crowd48

- ``8000x6000``: ``000000196141.jpg`` (four people) upscaled to 8000 x 6000;
- ``crowd48``: ``000000197388.jpg`` (five people) tiled 2 x 2, upscaled to
  8000 x 6000 (48 MP, ~20 people).

``--pythonpath DIR`` measures another checkout of the package (e.g. ``git
archive HEAD bmp configs | tar -x -C /tmp/old``) for before/after numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "8000x6000": ("000000196141.jpg", 1, (6000, 8000)),
    "crowd48": ("000000197388.jpg", 2, (6000, 8000)),
}

PROBE = r"""
import json, resource, sys, time
import cv2
import numpy as np

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

def peak_rss_mb():
    # VmHWM, not ru_maxrss: that one keeps the forking parent's peak across exec.
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))

args = json.loads(sys.argv[1])
from bmp import BMP
from bmp.images import load_image

bmp = BMP.from_config(args["config"], device="cpu", weights_dirs=args["weights_dirs"])
tile = load_image(args["image"])
bmp.predict(tile)  # warm-up: the first call sets up the models' predictors
image = cv2.resize(np.tile(tile, (args["tiles"], args["tiles"], 1)), tuple(args["size"][::-1]),
                   interpolation=cv2.INTER_LINEAR)
loaded = rss_mb()
start = time.perf_counter()
people = bmp.predict(image)
wall = time.perf_counter() - start
print(json.dumps({
    "bmp": __import__("bmp").__file__, "people": len(people), "wall_s": round(wall, 2),
    "rss_before_mb": round(loaded),
    "peak_rss_mb": round(peak_rss_mb()),
    "stages_ms": {k: round(v * 1000) for k, v in bmp.times.seconds.items()},
}))
"""


def measure(case: str, config: str, weights_dirs: list[str], data: Path, pythonpath: str | None) -> dict:
    name, tiles, size = CASES[case]
    payload = {"config": config, "weights_dirs": weights_dirs, "image": str(data / name),
               "tiles": tiles, "size": list(size)}
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(payload)], capture_output=True,
                          text=True, env=env, cwd=pythonpath or ROOT)
    if done.returncode:
        return {"case": case, "error": done.stderr.strip().splitlines()[-1:], "rc": done.returncode}
    return {"case": case, **json.loads(done.stdout.strip().splitlines()[-1])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", action="append", choices=sorted(CASES), default=None)
    parser.add_argument("--config", default=str(ROOT / "configs" / "bmp_lite.py"))
    parser.add_argument("--weights-dir", action="append", default=None, metavar="DIR")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "coco"))
    parser.add_argument("--pythonpath", default=None, help="checkout whose bmp package to measure")
    args = parser.parse_args(argv)
    dirs = [os.path.abspath(d) for d in (args.weights_dir or [str(ROOT.parent / "shared" / "models")])]
    for case in args.case or sorted(CASES):
        print(json.dumps(measure(case, os.path.abspath(args.config), dirs, Path(args.data), args.pythonpath)),
              flush=True)


if __name__ == "__main__":
    main()
