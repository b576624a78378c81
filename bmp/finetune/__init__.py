"""Fine-tuning SAM 2.1 into SAM-pose2seg (BMP_NOTES, "SAM-pose2seg").

Modules, one job each:

- :mod:`.config` -- the training config file, checked into typed sections;
- :mod:`.data` -- COCO-format person masks with GT or detected keypoints;
- :mod:`.samplers` -- MaskRefine, PoseMaskRefine, Pose1MaskRefine clicks;
- :mod:`.features` -- frozen image-encoder features, cached per image;
- :mod:`.interactive` -- first click + correction clicks through SAM's decoder;
- :mod:`.losses` -- SAM 2's focal, dice, IoU and object-score losses;
- :mod:`.evaluate` -- validation segm AP with pycocotools;
- :mod:`.checkpoint` -- atomic checkpoints, resume;
- :mod:`.trainer` -- the training loop; :mod:`.cli` -- ``bmp train-pose2seg``.

Nothing heavy is imported here, so ``bmp --help`` stays fast.
"""
