"""Checkpoint safety (issue 12, item 1): no loader fully unpickles a file
unless its sha256 is registered or the user opted in for it.

The crafted checkpoint below runs code when unpickled: it writes a marker
file. Every refusal test checks that the marker was never written and that no
``torch.load`` without ``weights_only=True`` happened anywhere (ours,
Ultralytics', mmengine's or sam2's).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bmp import weights
from bmp.config import ConfigError
from bmp.weights import (
    CHECKPOINTS,
    Checkpoint,
    UntrustedCheckpointError,
    check_trusted,
    load_checkpoint,
    load_weights,
    trust_checkpoints,
)
from tests.conftest import COCO_DIR, MODELS_DIR, ROOT

YOLO11N = MODELS_DIR / "yolo11n.pt"


class _Payload:
    """Unpickles as ``exec(code)``: what a malicious checkpoint carries."""

    def __init__(self, marker: Path) -> None:
        self.code = f"open({str(marker)!r}, 'w').write('payload ran')"

    def __reduce__(self):
        return (exec, (self.code,))


@pytest.fixture(autouse=True)
def _no_trusted_paths(monkeypatch):
    """Each test starts with nothing trusted by --trust-checkpoint."""
    monkeypatch.setattr(weights, "_TRUSTED", set())


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    """(checkpoint, marker): a torch.save file laid out like an OpenMMLab /
    sam2 / Ultralytics checkpoint, with the payload in its metadata."""
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "model": {"w": torch.zeros(1)},
                "meta": {"note": _Payload(marker)}}, path)
    assert not marker.exists()
    return path, marker


@pytest.fixture
def no_full_unpickle(monkeypatch):
    """Fail any torch.load that is not weights-only, whoever calls it."""
    real = torch.load

    def guarded(*args, **kwargs):
        if kwargs.get("weights_only") is not True:
            raise AssertionError(f"full unpickle attempted: torch.load({args[0]!r}, {kwargs})")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", guarded)


def _assert_refusal(exc: BaseException, path: Path) -> None:
    text = str(exc)
    assert isinstance(exc, UntrustedCheckpointError)
    assert "\n" not in text
    assert str(path) in text
    assert "--trust-checkpoint" in text and "trust_checkpoint=True" in text


@pytest.fixture
def custom_yolo(tmp_path) -> Path:
    """A real, working Ultralytics checkpoint that is not in the registry:
    the official yolo11n.pt re-saved with one extra entry (new sha256)."""
    pytest.importorskip("ultralytics")
    ckpt = dict(load_checkpoint(YOLO11N))  # full unpickling allowed: registered sha256
    ckpt["bmp_test"] = "re-saved"
    path = tmp_path / "my_detector.pt"
    torch.save(ckpt, path)
    assert weights.registered_checkpoint(path) is None
    return path


# (a) Ultralytics ------------------------------------------------------------


def test_ultralytics_itself_runs_the_payload(evil):
    """The premise: handing the file to Ultralytics unpickles it fully, so
    the check must come before (this is what bmp did before the fix)."""
    ultralytics = pytest.importorskip("ultralytics")
    path, marker = evil
    with pytest.raises(Exception):  # noqa: B017 - any failure after the payload ran
        ultralytics.YOLO(str(path))
    assert marker.exists()


@pytest.mark.parametrize("cls", ["UltralyticsDetector", "UltralyticsTopDown"])
def test_ultralytics_refuses_unregistered_checkpoint(evil, no_full_unpickle, cls):
    from bmp.models import DETECTORS, POSE_ESTIMATORS

    path, marker = evil
    model = (DETECTORS.get(cls) or POSE_ESTIMATORS.get(cls))
    with pytest.raises(UntrustedCheckpointError) as err:
        model(checkpoint=str(path), device="cpu")
    _assert_refusal(err.value, path)
    assert "Ultralytics" in str(err.value)
    assert not marker.exists()


# (b) the command line ----------------------------------------------------------


def _config(tmp_path: Path, detector_checkpoint: Path) -> Path:
    cfg = tmp_path / "cfg.py"
    cfg.write_text(
        f"detector = dict(type='UltralyticsDetector', checkpoint={str(detector_checkpoint)!r})\n"
        "pose = dict(type='UltralyticsTopDown', checkpoint='yolo11n-pose')\n"
        "segmenter = dict(type='SkeletonSegmenter')\n"
    )
    return cfg


def test_bmp_run_refuses_in_one_line(evil, tmp_path):
    path, marker = evil
    image = sorted(COCO_DIR.glob("*.jpg"))[0]
    env = {**os.environ, "BMP_OFFLINE": "1", "BMP_HOME": str(tmp_path / "home"),
           "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "bmp", "run", str(image), "--config", str(_config(tmp_path, path)),
         "--out", str(tmp_path / "out"), "--weights-dir", str(MODELS_DIR), "--device", "cpu"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("bmp: error: refusing to unpickle")
    assert str(path) in lines[0] and "--trust-checkpoint" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not marker.exists()


@pytest.mark.parametrize("command", ["run", "eval", "video", "bench", "train-pose2seg"])
def test_every_command_takes_trust_checkpoint(tmp_path, command):
    from bmp.cli import build_parser

    trusted = tmp_path / "mine.pt"
    trusted.write_bytes(b"x")
    required = {
        "run": ["in.jpg", "--config", "c.py", "--out", "o"],
        "eval": ["--config", "c.py", "--ann", "a.json", "--images", "i", "--out", "o"],
        "video": ["v.mp4", "--config", "c.py", "--out", "o"],
        "bench": ["--config", "c.py"],
        "train-pose2seg": ["c.py"],
    }[command]
    args = build_parser().parse_args([command, *required, "--trust-checkpoint", str(trusted)])
    assert args.trust_checkpoint == [str(trusted)]
    assert weights.is_trusted(trusted)
    assert not weights.is_trusted(tmp_path / "other.pt")


def test_trusting_a_missing_file_is_a_usage_error(tmp_path, capsys):
    from bmp.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["bench", "--config", "c.py", "--trust-checkpoint",
                                   str(tmp_path / "nope.pt")])
    assert exit_info.value.code == 2
    assert "--trust-checkpoint" in capsys.readouterr().err


# (c) the other loaders ----------------------------------------------------------


def test_sam2_segmenter_refuses(evil, no_full_unpickle, monkeypatch):
    pytest.importorskip("sam2")
    import sam2.build_sam

    from bmp.models.segmenters import SAM2Segmenter
    from tests.tiny_models import SAM21_T

    def never(model, ckpt_path=None):  # sam2 always calls it; None means "load nothing"
        if ckpt_path is not None:
            raise AssertionError("sam2 loaded the checkpoint itself")

    monkeypatch.setattr(sam2.build_sam, "_load_checkpoint", never)
    path, marker = evil
    with pytest.raises(UntrustedCheckpointError) as err:
        SAM2Segmenter(config=SAM21_T, checkpoint=str(path))
    _assert_refusal(err.value, path)
    assert "(it pickles exec)" in str(err.value)  # what it would have run
    assert not marker.exists()


def test_sam2_video_propagation_refuses(evil, no_full_unpickle):
    pytest.importorskip("sam2")
    from bmp.video.propagation import SAM2MemoryPropagator
    from tests.tiny_models import SAM21_T

    path, marker = evil
    with pytest.raises(UntrustedCheckpointError) as err:
        SAM2MemoryPropagator(config=SAM21_T, checkpoint=str(path))
    _assert_refusal(err.value, path)
    assert not marker.exists()


def test_mmdet_detector_refuses(evil, no_full_unpickle, monkeypatch):
    pytest.importorskip("mmdet")
    import mmdet.apis.inference

    from bmp.models.detectors import MMDetDetector
    from tests.tiny_models import RTMDET_TINY

    def never(*args, **kwargs):
        raise AssertionError("mmengine loaded the checkpoint itself")

    monkeypatch.setattr(mmdet.apis.inference, "load_checkpoint", never)
    path, marker = evil
    with pytest.raises(UntrustedCheckpointError) as err:
        MMDetDetector(config=RTMDET_TINY, checkpoint=str(path))
    _assert_refusal(err.value, path)
    assert not marker.exists()


def test_mmpose_topdown_refuses(evil, no_full_unpickle, monkeypatch):
    pytest.importorskip("mmpose")
    import mmpose.apis.inference

    from bmp.models.pose import MMPoseTopDown
    from tests.tiny_models import RTMPOSE_T

    def never(*args, **kwargs):
        raise AssertionError("mmengine loaded the checkpoint itself")

    monkeypatch.setattr(mmpose.apis.inference, "load_checkpoint", never)
    path, marker = evil
    with pytest.raises(UntrustedCheckpointError) as err:
        MMPoseTopDown(config=RTMPOSE_T, checkpoint=str(path))
    _assert_refusal(err.value, path)
    assert not marker.exists()


def test_pose2seg_segmenter_refuses(evil, no_full_unpickle):
    from bmp.models.pose2seg.segmenter import Pose2SegSegmenter
    from tests.test_pose2seg_network import SMALL, network_config

    path, marker = evil
    with pytest.raises(UntrustedCheckpointError) as err:
        Pose2SegSegmenter(network=network_config(**SMALL), checkpoint=str(path))
    _assert_refusal(err.value, path)
    assert not marker.exists()


def test_finetune_resume_refuses(evil, no_full_unpickle):
    from bmp.finetune.checkpoint import load_training_state

    path, marker = evil
    with pytest.raises(UntrustedCheckpointError) as err:
        load_training_state(path)
    _assert_refusal(err.value, path)
    assert not marker.exists()


def test_finetune_checkpoints_are_weights_only_safe(tmp_path, no_full_unpickle):
    """Resuming needs no trust: what the trainer writes (model, optimizer, AMP
    scaler state, plain config) loads with plain torch.load(weights_only=True)."""
    from bmp.finetune.checkpoint import load_training_state, save_epoch
    from bmp.finetune.config import load_train_config

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    cfg = load_train_config(ROOT / "configs" / "train_sam_pose2seg_tiny.py")
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scaler": torch.amp.GradScaler("cpu", enabled=True).state_dict(), "epoch": 1, "step": 3,
        "config": cfg.to_dict(), "val": {"segm_AP": 0.5},
        "meta": {"sam2_config": "configs/sam2.1/sam2.1_hiera_t.yaml", "init_checkpoint": "x.pt"},
    }
    path = save_epoch(tmp_path, 1, state)
    plain = torch.load(path, map_location="cpu", weights_only=True)
    assert plain["step"] == 3
    assert load_training_state(path)["epoch"] == 1


def test_prefix_digest_does_not_vouch(evil, monkeypatch):
    """An 8-hex-digit OpenMMLab name prefix can be forged in minutes: only a
    full registered sha256 allows full unpickling."""
    path, marker = evil
    prefix = weights.sha256sum(path)[:8]
    monkeypatch.setitem(CHECKPOINTS, "forged", Checkpoint(
        "forged", "forged.pth", "https://example.invalid/forged.pth", sha256_prefix=prefix))
    with pytest.raises(UntrustedCheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def test_trust_opt_in_is_honoured_for_torch_files(evil):
    """The opt-in really unpickles (it is the user's call): config key, then flag."""
    path, marker = evil
    load_checkpoint(path, trusted=True)
    assert marker.exists()
    marker.unlink()
    trust_checkpoints([path])
    assert check_trusted(path) == "--trust-checkpoint"
    load_weights(torch.nn.Module(), path, strict=False)
    assert marker.exists()


def test_trust_checkpoint_key_reaches_the_loader(evil):
    """A model block's ``trust_checkpoint=True`` is passed down to load_weights."""
    from bmp.models import SEGMENTERS
    from bmp.models.base import build_component
    from tests.test_pose2seg_network import SMALL, network_config

    path, marker = evil
    block = {"type": "Pose2SegSegmenter", "network": network_config(**SMALL),
             "checkpoint": str(path), "strict": False}
    with pytest.raises(UntrustedCheckpointError):
        build_component(SEGMENTERS, block, "segmenter")
    assert not marker.exists()
    build_component(SEGMENTERS, {**block, "trust_checkpoint": True}, "segmenter")
    assert marker.exists()


def test_trust_checkpoint_config_key_is_validated():
    from bmp.models import DETECTORS, SEGMENTERS
    from bmp.models.base import build_component

    with pytest.raises(ConfigError, match="trust_checkpoint applies only"):
        build_component(SEGMENTERS, {"type": "SkeletonSegmenter", "trust_checkpoint": True},
                        "segmenter")
    with pytest.raises(ConfigError, match="must be True or False"):
        build_component(DETECTORS, {"type": "UltralyticsDetector", "trust_checkpoint": "yes"},
                        "detector")


# (d) opting in loads a real, unregistered checkpoint ------------------------------


def test_unregistered_yolo_loads_only_with_opt_in(custom_yolo, coco_images):
    from bmp.images import load_image
    from bmp.models import DETECTORS
    from bmp.models.base import build_component

    block = {"type": "UltralyticsDetector", "checkpoint": str(custom_yolo)}
    with pytest.raises(UntrustedCheckpointError):
        build_component(DETECTORS, block, "detector", device="cpu")
    detector = build_component(DETECTORS, {**block, "trust_checkpoint": True}, "detector",
                               device="cpu")
    assert len(detector.detect(load_image(coco_images[0]))) > 0
    trust_checkpoints([custom_yolo])
    build_component(DETECTORS, block, "detector", device="cpu")


def test_bmp_run_with_trust_checkpoint_flag(custom_yolo, tmp_path, coco_images, capsys):
    from bmp.cli import main

    args = ["run", str(coco_images[0]), "--config", str(_config(tmp_path, custom_yolo)),
            "--out", str(tmp_path / "out"), "--weights-dir", str(MODELS_DIR), "--device", "cpu"]
    assert main(args) == 2
    assert "--trust-checkpoint" in capsys.readouterr().err
    assert main([*args, "--trust-checkpoint", str(custom_yolo)]) == 0
    assert (tmp_path / "out" / "results.json").is_file()


# (e) a registered sha256 needs no opt-in -------------------------------------------


def test_registered_yolo_loads_without_opt_in(tmp_path):
    pytest.importorskip("ultralytics")
    from bmp.models.detectors import UltralyticsDetector

    assert weights.registered_checkpoint(YOLO11N).name == "yolo11n"
    UltralyticsDetector(checkpoint=str(YOLO11N), device="cpu")
    UltralyticsDetector(checkpoint="yolo11n", weights_dirs=[str(MODELS_DIR)], device="cpu")
    renamed = tmp_path / "renamed.pt"  # the digest vouches, whatever the name
    shutil.copy(YOLO11N, renamed)
    UltralyticsDetector(checkpoint=str(renamed), device="cpu")
