"""The published model zoo beyond the ``-b`` sizes: PMPose-S/L/H 1.0.0,
MaskPose-S/L/H 1.1.0 and ViTPose-B multi-dataset, each by registry name.

Every architecture is built from its config, saved the way the official
checkpoint is laid out (``{'state_dict': ..., 'meta': ...}`` under the
registry's file name in a ``--weights-dir`` folder) and reloaded strictly
through ``MMPoseTopDown`` -> ``bmp.weights``, as the ``-b`` models are in
test_pose_models.py.

The small networks (ViT-S, ViT-B) are materialised at random init, reloaded
value for value, and run on real crops. ViT-L and ViT-H (PMPose-H: 814 M
parameters, 3.3 GB in fp32, about 45 s per build-save-reload on two cores) are
built on torch's ``meta`` device instead: the real architecture, every layer,
without memory behind it. Their checkpoint holds one tensor per key with the
exact shape and dtype, each stored as a single element expanded (stride 0), so
the file is kilobytes; loading it strictly checks every key and every shape,
exactly as it would check the published file.

The expected shapes are the reference's configs (MiraPurkrabek/BBoxMaskPose
``mmpose/configs/ProbMaskPose/PMPose-{s,l,h}-1.0.0.py`` and
``mmpose/configs/MaskPose/MaskPose-{s,l,h}-1.1.0.py``; ViTPose-B multi: the
model card of vrg-prague/BBoxMaskPose, 21 keypoints), written out here rather
than read back from bmp's configs, so a config that drifts fails.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT

_HF = "https://huggingface.co/vrg-prague/BBoxMaskPose/resolve/main"


@dataclass(frozen=True)
class Published:
    name: str
    config: str
    filename: str
    url: str
    embed: int  # ViT width = the head's in_channels
    layers: int
    keypoints: int
    probabilistic: bool  # PMPose's presence / visibility / OKS / error heads
    mask_alpha: float  # MaskBackground alpha of the val pipeline (0: none)


ZOO = {
    z.name: z
    for z in [
        *[
            Published(f"pmpose-{s}", f"configs/pose/pmpose-{s}.py", f"PMPose-{s}-1.0.0.pth",
                      f"{_HF}/PMPose/PMPose-{s}-1.0.0.pth", embed, layers, 23, True, 0.25)
            for s, embed, layers in (("s", 384, 12), ("l", 1024, 24), ("h", 1280, 32))
        ],
        *[
            Published(f"maskpose-{s}", f"configs/pose/maskpose-{s}.py", f"MaskPose-{s}-1.1.0.pth",
                      f"{_HF}/MaskPose/MaskPose-{s}-1.1.0.pth", embed, layers, 23, False, 0.25)
            for s, embed, layers in (("s", 384, 12), ("l", 1024, 24), ("h", 1280, 32))
        ],
        Published("vitpose-b-multi", "configs/pose/vitpose-b-multi.py", "ViTPose-b-multi_mmpose20.pth",
                  f"{_HF}/ViTPose-b-multi_mmpose20.pth", 768, 12, 21, False, 0.0),
    ]
}
#: Built for real at random init; the others on the meta device.
MATERIALISED = ("pmpose-s", "maskpose-s", "vitpose-b-multi")


def build(config: str, meta: bool, seed: int = 0) -> torch.nn.Module:
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpose.apis import init_model

    import bmp.models.mmpose_ext  # noqa: F401
    from bmp.models.base import resolve_model_config

    torch.manual_seed(seed)
    cfg = Config.fromfile(resolve_model_config(config))
    with DefaultScope.overwrite_default_scope("mmpose"):
        if meta:
            with torch.device("meta"):
                return init_model(cfg, None, device="meta")
        return init_model(cfg, None, device="cpu")


def save_official(model: torch.nn.Module, path: Path, meta: bool) -> None:
    """``{'state_dict', 'meta'}`` as OpenMMLab checkpoints are; a meta model's
    tensors become one stored element expanded to the real shape."""
    state = model.state_dict()
    if meta:
        state = {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in state.items()}
    torch.save({"state_dict": state, "meta": {"mmpose_version": "1.3.2"}}, path)


def load_by_name(entry: Published, folder: Path, meta: bool, config: str | None = None):
    from bmp.models.pose import MMPoseTopDown

    if not meta:
        return MMPoseTopDown(config or entry.config, entry.name, weights_dirs=[str(folder)])
    with warnings.catch_warnings(), torch.device("meta"):
        # Copying into a meta parameter checks the shape and stores nothing.
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter.*")
        return MMPoseTopDown(config or entry.config, entry.name, weights_dirs=[str(folder)], device="meta")


def test_registry_names_the_published_files():
    from bmp.weights import CHECKPOINTS

    for entry in ZOO.values():
        c = CHECKPOINTS[entry.name]
        assert (c.filename, c.url) == (entry.filename, entry.url), entry.name
        # Sizes and digests are not published where they could be read: none invented.
        assert c.size is None and c.sha256 is None and c.sha256_prefix is None, entry.name


def test_weights_urls_lists_the_zoo(capsys):
    from bmp.cli import main

    assert main(["weights", "--urls"]) == 0
    out = capsys.readouterr().out
    for entry in ZOO.values():
        assert f"{entry.name} " in out and entry.filename in out and entry.url in out


@pytest.mark.parametrize("name", list(ZOO))
def test_architecture_has_the_published_layout(name):
    entry = ZOO[name]
    model = build(entry.config, meta=True)
    state = model.state_dict()
    e, k = entry.embed, entry.keypoints
    expected = {
        "backbone.patch_embed.projection.weight": (e, 3, 16, 16),
        "backbone.pos_embed": (1, 192, e),  # 16 x 12 patches of a 256 x 192 crop, no cls token
        f"backbone.layers.{entry.layers - 1}.attn.qkv.weight": (3 * e, e),
        f"backbone.layers.{entry.layers - 1}.ffn.layers.0.0.weight": (4 * e, e),
        "backbone.ln1.weight": (e,),
        "head.deconv_layers.0.weight": (e, 256, 4, 4),
        "head.final_layer.weight": (k, 256, 1, 1),
    }
    if entry.probabilistic:
        for side in ("probability_layers", "visibility_layers", "oks_layers", "error_layers"):
            expected[f"head.{side}.0.weight"] = (e, e, 3, 3)
            expected[f"head.{side}.12.weight"] = (k, e, 1, 1)
    for key, shape in expected.items():
        assert key in state, (name, key)
        assert tuple(state[key].shape) == shape, (name, key)
    assert f"backbone.layers.{entry.layers}.attn.qkv.weight" not in state
    assert entry.probabilistic == any("visibility_layers" in key for key in state)
    assert model.dataset_meta["num_keypoints"] == k
    assert "cls_token" not in " ".join(state)


#: A network of the same width whose keys differ: PMPose <-> MaskPose.
COUNTERPART = {
    **{f"pmpose-{s}": f"configs/pose/maskpose-{s}.py" for s in "slh"},
    **{f"maskpose-{s}": f"configs/pose/pmpose-{s}.py" for s in "slh"},
    "vitpose-b-multi": "configs/pose/pmpose-b.py",
}


@pytest.mark.parametrize("name", list(ZOO))
def test_checkpoint_reloads_strictly_by_registry_name(name, tmp_path, people_with_masks):
    from bmp.weights import WeightsError

    entry = ZOO[name]
    meta = name not in MATERIALISED
    model = build(entry.config, meta=meta, seed=7)
    save_official(model, tmp_path / entry.filename, meta=meta)
    del model
    pose = load_by_name(entry, tmp_path, meta=meta)
    assert pose.mask_alpha == entry.mask_alpha
    assert pose.model.head.final_layer.out_channels == entry.keypoints
    if not meta:
        saved = torch.load(tmp_path / entry.filename, weights_only=True)["state_dict"]
        for key, value in pose.model.state_dict().items():
            if not key.startswith("data_preprocessor."):
                assert torch.equal(value, saved[key]), (name, key)
        # ... and the reloaded network runs on real crops, 17 COCO keypoints out.
        image, people = people_with_masks
        out = pose.estimate(image, people)
        n = len(people)
        assert out.keypoints.shape == (n, 17, 2) and out.keypoint_scores.shape == (n, 17)
        assert np.isfinite(out.keypoints).all()
        if entry.probabilistic:
            for field in (out.visibility, out.presence, out.kpt_oks):
                assert field.shape == (n, 17) and field.min() >= 0 and field.max() <= 1
    # The file does not fit the other family's network: strict loading refuses it.
    with pytest.raises((WeightsError, RuntimeError), match="size mismatch|missing keys|unexpected keys"):
        load_by_name(entry, tmp_path, meta=True, config=COUNTERPART[name])


def test_bmp_v2_with_each_pmpose_size_is_base_plus_one_override():
    """configs/bmp_v2_pmpose_{s,l,h}.py: ``_base_`` (BMP v2) plus the pose
    network and checkpoint; everything else is BMP v2's, through bmp's loader."""
    from bmp.config import load_config

    v2 = load_config(ROOT / "configs" / "bmp_pmpose_sampose2seg.py")
    for size in "slh":
        path = ROOT / "configs" / f"bmp_v2_pmpose_{size}.py"
        code = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
        assert code == ['_base_ = ["./bmp_pmpose_sampose2seg.py"]',
                        f'pose = dict(config="configs/pose/pmpose-{size}.py", checkpoint="pmpose-{size}")']
        cfg = load_config(path)
        assert (cfg.pose.config, cfg.pose.checkpoint) == (f"configs/pose/pmpose-{size}.py", f"pmpose-{size}")
        assert {k: v for k, v in cfg.pose.items() if k not in ("config", "checkpoint")} == {
            k: v for k, v in v2.pose.items() if k not in ("config", "checkpoint")}
        for part in ("detector", "segmenter", "loop"):
            assert cfg[part] == v2[part], (size, part)


def test_base_plus_one_override_in_any_config(tmp_path):
    """The same one-override pattern from a user's own folder: the base is
    found by absolute path and only the named keys change."""
    from bmp.config import load_config

    mine = tmp_path / "mine.py"
    base = (ROOT / "configs" / "bmp_pmpose_sampose2seg.py").as_posix()
    mine.write_text(f'_base_ = ["{base}"]\n'
                    'pose = dict(config="configs/pose/pmpose-l.py", checkpoint="pmpose-l")\n')
    cfg = load_config(mine)
    assert (cfg.pose.type, cfg.pose.checkpoint, cfg.pose.flip_test) == ("MMPoseTopDown", "pmpose-l", True)
    assert cfg.segmenter.checkpoint == "sam-pose2seg-hiera-b+"


def test_meta_reload_checks_every_shape(tmp_path):
    """What makes the meta-device round trip a real check: one wrong shape
    anywhere in the file (here the 23-heatmap layer saved with 21) is refused."""
    entry = ZOO["maskpose-h"]
    state = {k: torch.zeros((), dtype=v.dtype).expand(v.shape)
             for k, v in build(entry.config, meta=True).state_dict().items()}
    state["head.final_layer.weight"] = torch.zeros(()).expand(21, 256, 1, 1)
    torch.save({"state_dict": state, "meta": {}}, tmp_path / entry.filename)
    with pytest.raises(RuntimeError, match="size mismatch for head.final_layer.weight"):
        load_by_name(entry, tmp_path, meta=True)
