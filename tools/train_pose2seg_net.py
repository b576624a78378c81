"""Train the Pose2Seg network on COCO-format data (keypoints + masks).

    .venv/bin/python tools/train_pose2seg_net.py --config configs/bmp_pose2seg.py \
        --ann data/coco/annotations/person_keypoints_train2017.json \
        --images data/coco/train2017 --work-dir work_dirs/pose2seg --device cuda

The network (backbone, widths, templates file) is the ``segmenter.network``
block of the bmp config, so the checkpoint fits the config that will use it;
``--set key=value`` overrides single entries (e.g. ``--set backbone=resnet18``).
Checkpoints go atomically to WORK_DIR/pose2seg_latest.pth; running the same
command again resumes from there (``--no-resume`` starts over).
"""

from __future__ import annotations

import argparse
import ast
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bmp.config import load_config  # noqa: E402
from bmp.models.pose2seg.training import TrainConfig, Trainer, mask_ious  # noqa: E402


def parse_overrides(items: list[str]) -> dict:
    """``key=value`` pairs; values are Python literals where they parse as one."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="bmp config with a Pose2SegSegmenter")
    p.add_argument("--ann", required=True, help="COCO-format annotation file (keypoints + masks)")
    p.add_argument("--images", required=True, help="folder of the annotation file's images")
    p.add_argument("--work-dir", required=True, help="checkpoints go here")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a segmenter.network entry (repeatable)")
    p.add_argument("--iters", type=int, default=20000, help="optimiser steps in all")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--images-per-step", type=int, default=1)
    p.add_argument("--max-instances", type=int, default=8, help="people per image per step")
    p.add_argument("--no-augment", action="store_true", help="no rotation/scale/shift jitter")
    p.add_argument("--freeze-backbone", action="store_true", help="train the SegModule only")
    p.add_argument("--cache", action="store_true",
                   help="keep samples (and frozen features) in memory: small data sets only")
    p.add_argument("--backbone-init", default=None,
                   help="torchvision ResNet checkpoint (e.g. ImageNet) for the backbone")
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--eval", action="store_true",
                   help="report mask IoU on the training data at the end (from GT poses)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    segmenter = load_config(args.config).segmenter
    if segmenter.get("type") != "Pose2SegSegmenter":
        raise SystemExit(f"{args.config}: segmenter is {segmenter.get('type')!r}, not Pose2SegSegmenter")
    network = {**dict(segmenter.get("network") or {}), **parse_overrides(args.set)}
    if network.get("templates") is None:
        raise SystemExit("segmenter.network.templates is not set (make one with "
                         "tools/pose2seg_templates.py)")
    cfg = TrainConfig(
        ann_file=args.ann, image_dir=args.images, work_dir=args.work_dir, network=network,
        iterations=args.iters, lr=args.lr, weight_decay=args.weight_decay,
        images_per_step=args.images_per_step, max_instances=args.max_instances,
        augment=not args.no_augment, freeze_backbone=args.freeze_backbone, cache=args.cache,
        backbone_init=args.backbone_init, save_every=args.save_every, log_every=args.log_every,
        resume=not args.no_resume, seed=args.seed, device=args.device,
    )
    trainer = Trainer(cfg)
    checkpoint = trainer.run()
    print(f"checkpoint: {checkpoint} (step {trainer.step})")
    if args.eval:
        from bmp.models.pose2seg.segmenter import Pose2SegSegmenter

        segmenter = Pose2SegSegmenter(network=network, checkpoint=str(checkpoint), device=args.device)
        ious = mask_ious(segmenter, trainer.data)
        print(f"mask IoU on {args.ann}: mean {ious.mean():.3f}, min {ious.min():.3f} "
              f"({len(ious)} people)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
