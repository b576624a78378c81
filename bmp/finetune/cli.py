"""``bmp train-pose2seg CONFIG``: fine-tune SAM 2.1 on pose prompts
(also ``python tools/train_pose2seg.py CONFIG``)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from mmengine.config import DictAction

logger = logging.getLogger("bmp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..weights import add_trust_argument

    parser.add_argument("config", help="training config, e.g. configs/train_sam_pose2seg.py")
    parser.add_argument("--work-dir", default=None, help="checkpoints and logs (default: config work_dir)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: config, then auto)")
    parser.add_argument(
        "--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
        help="continue from CHECKPOINT, or (no value, after CONFIG) from the newest in the work dir",
    )
    parser.add_argument(
        "--weights-dir", action="append", default=[], metavar="DIR",
        help="folder with checkpoint files, searched before the cache (repeatable)",
    )
    add_trust_argument(parser)
    parser.add_argument(
        "--cfg-options", nargs="+", action=DictAction, default={}, metavar="KEY=VALUE",
        help="override config values, e.g. schedule.epochs=2 data.batch_size=8",
    )
    parser.add_argument("--val-only", action="store_true", help="only run validation and print segm AP")


def run(args: argparse.Namespace) -> int:
    from .checkpoint import latest_checkpoint
    from .config import load_train_config
    from .trainer import Pose2SegTrainer

    cfg = load_train_config(args.config, dict(args.cfg_options or {}))
    if args.weights_dir:
        cfg = dataclasses.replace(cfg, weights_dirs=(*cfg.weights_dirs, *args.weights_dir))
    trainer = Pose2SegTrainer(cfg, device=args.device, work_dir=args.work_dir)
    if args.resume:
        path = latest_checkpoint(trainer.work_dir) if args.resume == "auto" else Path(args.resume)
        if path is None:
            logger.info("no checkpoint in %s to resume from: starting from scratch", trainer.work_dir)
        else:
            trainer.resume(path)
    if args.val_only:
        metrics = trainer.validate()
        if not metrics:
            print("no val datasets in the config (data.val)")
            return 1
    else:
        metrics = trainer.fit() or {}
        print(f"done: {trainer.epoch} epochs, {trainer.step} steps; checkpoints in {trainer.work_dir}")
    for name, stats in metrics.items():
        print(f"{name}: segm AP {stats['AP']:.4f}  AP50 {stats['AP50']:.4f}  AP75 {stats['AP75']:.4f}")
    return 0
