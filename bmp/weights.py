"""Official checkpoints: where they come from, where they are cached, how they load.

A config names a checkpoint either by a registry name (``'sam2.1-hiera-b+'``)
or by a path. :func:`resolve_checkpoint` finds the file in, in order, the
explicit path, ``--weights-dir`` folders and the cache ``$BMP_HOME/checkpoints``
(default ``~/.cache/bmp``), downloads it with a progress bar when allowed, and
checks size and sha256 where known. Every failure is a :class:`WeightsError`
that names the file and the URL to get it from.

Loading: torch >= 2.6 unpickles with ``weights_only=True``. OpenMMLab
checkpoints carry numpy and mmengine metadata that it refuses, so
:func:`load_checkpoint` allows exactly those types; ``weights_only=False`` is used
only for a file whose sha256 matches this registry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

logger = logging.getLogger(__name__)

_HF = "https://huggingface.co/vrg-prague/BBoxMaskPose/resolve/main"
_SAM2 = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
_MMDET = "https://download.openmmlab.com/mmdetection/v3.0/rtmdet"
_MMPOSE = "https://download.openmmlab.com/mmpose/v1/body_2d_keypoint"
_ULTRA = "https://github.com/ultralytics/assets/releases/download/v8.3.0"


class WeightsError(RuntimeError):
    """A checkpoint is missing, corrupt or could not be loaded."""


@dataclass(frozen=True)
class Checkpoint:
    """One official checkpoint.

    ``sha256`` is the full digest where it was measured; ``sha256_prefix`` the
    leading hex digits that OpenMMLab encodes in its file names.
    """

    name: str
    filename: str
    url: str
    sha256: str | None = None
    sha256_prefix: str | None = None
    size: int | None = None
    description: str = ""

    def matches_digest(self, digest: str) -> bool | None:
        """True/False when the registry knows a digest for this file, else None."""
        if self.sha256:
            return digest == self.sha256
        if self.sha256_prefix:
            return digest.startswith(self.sha256_prefix)
        return None


CHECKPOINTS: dict[str, Checkpoint] = {
    c.name: c
    for c in [
        Checkpoint(
            "rtmdet-ins-l-mask", "rtmdet-ins-l-mask.pth", f"{_HF}/rtmdet-ins-l-mask.pth",
            description="RTMDet-Ins-L fine-tuned by BMP (detector with masks)",
        ),
        Checkpoint(
            "rtmdet-ins-l",
            "rtmdet-ins_l_8xb32-300e_coco_20221124_103237-78d1d652.pth",
            f"{_MMDET}/rtmdet-ins_l_8xb32-300e_coco/"
            "rtmdet-ins_l_8xb32-300e_coco_20221124_103237-78d1d652.pth",
            sha256_prefix="78d1d652",
            description="RTMDet-Ins-L, COCO, OpenMMLab",
        ),
        Checkpoint(
            "vitpose-b",
            "td-hm_ViTPose-base_8xb64-210e_coco-256x192-216eae50_20230314.pth",
            f"{_MMPOSE}/topdown_heatmap/coco/"
            "td-hm_ViTPose-base_8xb64-210e_coco-256x192-216eae50_20230314.pth",
            sha256_prefix="216eae50",
            description="ViTPose-B, COCO 256x192, OpenMMLab",
        ),
        Checkpoint(
            "maskpose-b", "MaskPose-b-1.1.0.pth", f"{_HF}/MaskPose/MaskPose-b-1.1.0.pth",
            description="MaskPose-B (ViT-B, mask-conditioned), BMP",
        ),
        Checkpoint(
            "pmpose-b", "PMPose-b-1.0.0.pth", f"{_HF}/PMPose/PMPose-b-1.0.0.pth",
            description="PMPose-B (ProbPose heads + MaskPose), BMP v2",
        ),
        Checkpoint(
            "sam-pose2seg-hiera-b+", "SAM-pose2seg_hiera_b+.pt", f"{_HF}/SAM-pose2seg_hiera_b%2B.pt",
            description="SAM-pose2seg: SAM 2.1 Hiera-B+ fine-tuned on pose prompts",
        ),
        Checkpoint(
            "sam2.1-hiera-t", "sam2.1_hiera_tiny.pt", f"{_SAM2}/sam2.1_hiera_tiny.pt",
            description="SAM 2.1 Hiera-T, Meta",
        ),
        Checkpoint(
            "sam2.1-hiera-s", "sam2.1_hiera_small.pt", f"{_SAM2}/sam2.1_hiera_small.pt",
            description="SAM 2.1 Hiera-S, Meta",
        ),
        Checkpoint(
            "sam2.1-hiera-b+", "sam2.1_hiera_base_plus.pt", f"{_SAM2}/sam2.1_hiera_base_plus.pt",
            description="SAM 2.1 Hiera-B+, Meta",
        ),
        Checkpoint(
            "sam2.1-hiera-l", "sam2.1_hiera_large.pt", f"{_SAM2}/sam2.1_hiera_large.pt",
            description="SAM 2.1 Hiera-L, Meta",
        ),
        Checkpoint(
            "yolo11n", "yolo11n.pt", f"{_ULTRA}/yolo11n.pt",
            sha256="0ebbc80d4a7680d14987a577cd21342b65ecfd94632bd9a8da63ae6417644ee1",
            description="Ultralytics YOLO11n detector (AGPL-3.0)",
        ),
        Checkpoint(
            "yolo11n-pose", "yolo11n-pose.pt", f"{_ULTRA}/yolo11n-pose.pt",
            sha256="869e83fcdffdc7371fa4e34cd8e51c838cc729571d1635e5141e3075e9319dc0",
            description="Ultralytics YOLO11n-pose (AGPL-3.0)",
        ),
    ]
}


def bmp_home() -> Path:
    """The cache root: ``$BMP_HOME`` or ``~/.cache/bmp``."""
    return Path(os.environ.get("BMP_HOME", Path.home() / ".cache" / "bmp")).expanduser()


def cache_dir() -> Path:
    return bmp_home() / "checkpoints"


def weights_dirs_from_env() -> list[Path]:
    """Folders listed in ``$BMP_WEIGHTS_DIR`` (os.pathsep-separated)."""
    raw = os.environ.get("BMP_WEIGHTS_DIR", "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p]


def sha256sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_checkpoint(
    spec: str | os.PathLike,
    weights_dirs: Iterable[str | os.PathLike] = (),
    download: bool | None = None,
) -> Path:
    """The local file for a checkpoint name or path.

    Args:
        spec: a registry name (see :data:`CHECKPOINTS`) or a file path.
        weights_dirs: folders searched before the cache (``--weights-dir``).
        download: fetch a registered checkpoint that is not found locally;
            default: yes unless ``$BMP_OFFLINE`` is set.
    Raises:
        WeightsError: not found (naming where it was looked for and its URL),
            or a size / sha256 mismatch.
    """
    dirs = [Path(d).expanduser() for d in weights_dirs] + weights_dirs_from_env()
    spec_str = os.fspath(spec)
    entry = CHECKPOINTS.get(spec_str)
    if entry is None:
        entry = next((c for c in CHECKPOINTS.values() if c.filename == Path(spec_str).name), None)
        path = Path(spec_str).expanduser()
        if path.is_file():
            return _verified(path, entry)
        for d in dirs:
            if (d / path.name).is_file():
                return _verified(d / path.name, entry)
        if entry is None:
            where = ", ".join(str(d) for d in dirs) or "no --weights-dir given"
            raise WeightsError(
                f"checkpoint file {spec_str!r} does not exist (also looked in: {where}); "
                f"known checkpoint names: {', '.join(sorted(CHECKPOINTS))}"
            )
    candidates = [d / entry.filename for d in dirs] + [cache_dir() / entry.filename]
    for path in candidates:
        if path.is_file():
            return _verified(path, entry)
    if download is None:
        download = not os.environ.get("BMP_OFFLINE")
    target = cache_dir() / entry.filename
    looked = "\n  ".join(str(p) for p in candidates)
    if not download:
        raise WeightsError(
            f"checkpoint {entry.name!r} ({entry.filename}) not found; looked in:\n  {looked}\n"
            f"Download it from {entry.url} and put it in one of those folders "
            f"(or pass --weights-dir DIR)."
        )
    try:
        download_file(entry.url, target)
    except Exception as exc:
        raise WeightsError(
            f"checkpoint {entry.name!r} ({entry.filename}) not found locally (looked in:\n  "
            f"{looked}) and downloading {entry.url} failed: {exc}.\n"
            f"Download it by hand into {target.parent} or a folder given with --weights-dir."
        ) from exc
    return _verified(target, entry)


def _verified(path: Path, entry: Checkpoint | None) -> Path:
    if entry is None:
        return path
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        raise WeightsError(
            f"{path} has {size} bytes, expected {entry.size}: the file is truncated or not "
            f"{entry.filename}. Delete it and download again from {entry.url}"
        )
    if entry.sha256 or entry.sha256_prefix:
        ok = entry.matches_digest(sha256sum(path))
        if not ok:
            raise WeightsError(
                f"{path} does not match the sha256 of {entry.filename} (corrupt, truncated or "
                f"a different file). Delete it and download again from {entry.url}"
            )
    return path


def download_file(url: str, target: Path, timeout: float = 30.0) -> None:
    """Download ``url`` to ``target`` through a temp file, so an interrupted
    download never leaves a partial file under the final name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, os.fdopen(fd, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {target.name}") as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _safe_globals() -> list[Any]:
    """The non-tensor types OpenMMLab checkpoints pickle in their metadata.

    Each numpy type is allowed under its current module and under the
    ``numpy.core`` name that files written with numpy 1 refer to.
    """
    import numpy as np
    from numpy._core import multiarray

    allowed: list[Any] = [np.ndarray, np.dtype]
    for func in (multiarray._reconstruct, multiarray.scalar):
        allowed += [func, (func, f"numpy.core.multiarray.{func.__name__}")]
    for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"):
        allowed.append(type(np.dtype(name)))
    allowed += [np.float64, np.float32, np.int64, np.int32, np.bool_]
    # mmengine's message-hub HistoryBuffer is deliberately absent: it unpickles
    # through `getattr`, which would open the door to arbitrary code.
    return allowed


def load_checkpoint(path: str | os.PathLike) -> Mapping[str, Any]:
    """Unpickle a checkpoint file safely.

    Tries ``weights_only=True`` with numpy metadata types allowed;
    falls back to full unpickling only when the file's sha256 matches a
    registered official checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint file {path} does not exist")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first_error = exc
    digest = sha256sum(path)
    official = next(
        (c for c in CHECKPOINTS.values() if c.matches_digest(digest)), None
    )
    if official is None:
        if isinstance(first_error, EOFError | RuntimeError) and "pickle" not in str(first_error):
            raise WeightsError(
                f"{path} could not be read ({type(first_error).__name__}: {first_error}); "
                "the file is probably truncated or not a torch checkpoint"
            ) from first_error
        raise WeightsError(
            f"{path} could not be loaded with torch.load(weights_only=True): {first_error}\n"
            "It is not one of the registered official checkpoints, so bmp will not unpickle "
            "arbitrary objects from it. Re-save its state_dict with torch.save(model.state_dict())."
        ) from first_error
    logger.info("loading %s (sha256 of official %s) with weights_only=False", path, official.name)
    return torch.load(path, map_location="cpu", weights_only=False)


def extract_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint (OpenMMLab ``state_dict``, sam2 ``model``)."""
    for key in ("state_dict", "model", "module"):
        inner = checkpoint.get(key) if isinstance(checkpoint, Mapping) else None
        if isinstance(inner, Mapping):
            checkpoint = inner
            break
    state = {k.removeprefix("module."): v for k, v in checkpoint.items() if torch.is_tensor(v)}
    if not state:
        raise WeightsError("the checkpoint holds no tensors")
    return state


def load_weights(
    model: torch.nn.Module,
    path: str | os.PathLike,
    strict: bool = True,
    ignore_prefixes: tuple[str, ...] = ("data_preprocessor.",),
) -> None:
    """Load a checkpoint file into ``model``, reporting key mismatches clearly."""
    state = extract_state_dict(load_checkpoint(path))
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(ignore_prefixes)]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        msg = (
            f"{path} does not fit {type(model).__name__}: {len(missing)} missing keys "
            f"{_preview(missing)}, {len(unexpected)} unexpected keys {_preview(unexpected)}"
        )
        if strict:
            raise WeightsError(msg + " (is the config the one this checkpoint was trained with?)")
        logger.warning(msg)


def _preview(keys: list[str], n: int = 5) -> str:
    return "[" + ", ".join(keys[:n]) + (", ..." if len(keys) > n else "") + "]"


def load_or_warn(model: torch.nn.Module, path: Path | None, strict: bool = True) -> None:
    """Load the resolved checkpoint ``path`` into ``model``; ``None`` keeps the
    random init, which is only good for timing (``bmp bench --random-init``)
    and says so."""
    if path is None:
        logger.warning("%s: no checkpoint given, random weights (speed tests only)", type(model).__name__)
        return
    load_weights(model, path, strict=strict)
