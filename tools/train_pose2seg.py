#!/usr/bin/env python
"""Fine-tune SAM 2.1 into SAM-pose2seg: ``python tools/train_pose2seg.py CONFIG [options]``.

The same command as ``bmp train-pose2seg``; see ``--help`` and the
"Fine-tuning SAM-pose2seg" section of README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bmp.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train-pose2seg", *sys.argv[1:]]))
