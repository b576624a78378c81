"""Small real architectures with random weights, saved to checkpoint files."""

from __future__ import annotations

from pathlib import Path

import torch

RTMDET_TINY = "mmdet::rtmdet/rtmdet-ins_tiny_8xb32-300e_coco.py"
RTMPOSE_T = "mmpose::body_2d_keypoint/rtmpose/coco/rtmpose-t_8xb256-420e_coco-256x192.py"
SAM21_T = "configs/sam2.1/sam2.1_hiera_t.yaml"
#: A small heatmap model with a UDP codec: exercises the batched top-down path.
CSPNEXT_T_UDP = "mmpose::body_2d_keypoint/topdown_heatmap/coco/cspnext-tiny_udp_8xb256-210e_coco-256x192.py"


def build_rtmdet_tiny(cls_bias: float | None = None, config: str = RTMDET_TINY) -> torch.nn.Module:
    from mmdet.apis import init_detector
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from bmp.models.base import resolve_model_config

    cfg = Config.fromfile(resolve_model_config(config))
    cfg.model.backbone.init_cfg = None  # no pretrained download
    with DefaultScope.overwrite_default_scope("mmdet"):
        model = init_detector(cfg, checkpoint=None, device="cpu")
    torch.manual_seed(0)
    model.init_weights()  # the head's prior-probability bias: random scores ~0.01
    if cls_bias is not None:
        # Make every anchor a confident person so the loop sees many detections.
        # Constant box sizes per level (stride x 3) spread the boxes over the image.
        for conv in model.bbox_head.rtm_cls:
            torch.nn.init.zeros_(conv.weight)
            torch.nn.init.constant_(conv.bias, -10.0)
            conv.bias.data[0] = cls_bias  # class 0 = person
        for conv in model.bbox_head.rtm_reg:
            torch.nn.init.zeros_(conv.weight)
            torch.nn.init.constant_(conv.bias, 3.0)
    return model


def save_tiny_checkpoints(folder: Path) -> None:
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpose.apis import init_model
    from sam2.build_sam import build_sam2

    from bmp.models.base import resolve_model_config

    torch.save({"state_dict": build_rtmdet_tiny().state_dict(), "meta": {}},
               folder / "rtmdet_tiny_random.pth")
    torch.save({"state_dict": build_rtmdet_tiny(cls_bias=4.0).state_dict(), "meta": {}},
               folder / "rtmdet_tiny_confident.pth")

    torch.manual_seed(1)
    cfg = Config.fromfile(resolve_model_config(RTMPOSE_T))
    with DefaultScope.overwrite_default_scope("mmpose"):
        pose = init_model(cfg, checkpoint=None, device="cpu")
    torch.save({"state_dict": pose.state_dict(), "meta": {}}, folder / "rtmpose_t_random.pth")
    torch.manual_seed(3)
    cfg = Config.fromfile(resolve_model_config(CSPNEXT_T_UDP))
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope("mmpose"):
        pose = init_model(cfg, checkpoint=None, device="cpu")
    torch.save({"state_dict": pose.state_dict(), "meta": {}}, folder / "cspnext_t_udp_random.pth")

    torch.manual_seed(2)
    sam = build_sam2(SAM21_T, ckpt_path=None, device="cpu", mode="eval")
    torch.save({"model": sam.state_dict()}, folder / "sam21_hiera_t_random.pt")


def tiny_config(folder: Path, detector: str = "rtmdet_tiny_random.pth", **loop) -> dict:
    """The full BMP config with the small architectures swapped in."""
    from mmengine.config import Config

    root = Path(__file__).resolve().parents[1]
    cfg = Config.fromfile(str(root / "configs" / "bmp_rtmdet_vitpose_sam2.py"))
    cfg.detector.update(config=RTMDET_TINY, checkpoint=str(folder / detector))
    cfg.pose.update(config=RTMPOSE_T, checkpoint=str(folder / "rtmpose_t_random.pth"),
                    flip_test=True)
    cfg.segmenter.update(config=SAM21_T, checkpoint=str(folder / "sam21_hiera_t_random.pt"))
    cfg.loop.update(loop)
    return cfg.to_dict()
