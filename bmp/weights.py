"""Official checkpoints: where they come from, where they are cached, how they load.

A config names a checkpoint either by a registry name (``'sam2.1-hiera-b+'``)
or by a path. :func:`resolve_checkpoint` finds the file in, in order, the
explicit path, ``--weights-dir`` folders and the cache ``$BMP_HOME/checkpoints``
(default ``~/.cache/bmp``), downloads it when allowed (:mod:`bmp.download`:
Hugging Face files through ``huggingface_hub``, others resumable; one process
at a time), and checks size and sha256 where known. Every failure is a
:class:`WeightsError` that names the file and the URL to get it from.

Loading: torch >= 2.6 unpickles with ``weights_only=True``. OpenMMLab
checkpoints carry numpy and mmengine metadata that it refuses, so
:func:`load_checkpoint` allows exactly those types.

Checkpoint safety, the one rule every loader follows (:func:`check_trusted`):
no file is fully unpickled (``weights_only=False``, or handed to Ultralytics,
which always unpickles whole objects) unless its sha256 is in this registry or
the user opted in for that file: ``--trust-checkpoint PATH`` on the command
line (:func:`trust_checkpoints`) or ``trust_checkpoint=True`` in the model's
config block. mmdet, mmpose and sam2 models are always built without a
checkpoint and get their state dict from :func:`load_weights`, so their own
loaders never unpickle anything.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .download import DownloadError, fetch, offline_reason, sha256sum

logger = logging.getLogger(__name__)

_HF = "https://huggingface.co/vrg-prague/BBoxMaskPose/resolve/main"
_SAM2 = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
_MMDET = "https://download.openmmlab.com/mmdetection/v3.0/rtmdet"
_MMPOSE = "https://download.openmmlab.com/mmpose/v1/body_2d_keypoint"
_ULTRA = "https://github.com/ultralytics/assets/releases/download/v8.3.0"


class WeightsError(RuntimeError):
    """A checkpoint is missing, corrupt or could not be loaded."""


class UntrustedCheckpointError(WeightsError):
    """A checkpoint would have to be fully unpickled, and nothing vouches for it."""


class MissingCheckpointError(WeightsError):
    """A registered checkpoint is neither on disk nor downloadable.

    Keeps what :func:`resolve_checkpoints` needs to report several at once.
    """

    def __init__(self, message: str, entry: Checkpoint, looked: list[Path], download_error: str = ""):
        super().__init__(message)
        self.entry = entry
        self.looked = looked
        self.download_error = download_error


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


def _ultralytics_family() -> list[Checkpoint]:
    """The other official YOLO11 / YOLOv8 pose and segment checkpoints, so any
    of them can stand in a config by name. Their sha256 digests are not
    published where they could be read, so they load only with
    ``--trust-checkpoint`` / ``trust_checkpoint=True`` (see "Checkpoint safety")."""
    out = []
    for family, sizes in (("yolo11", "nsmlx"), ("yolov8", "nsmlx")):
        for size in sizes:
            for task, what in (("pose", "pose"), ("seg", "segmentation: masks for the loop")):
                name = f"{family}{size}-{task}"
                if name == "yolo11n-pose":
                    continue
                out.append(Checkpoint(name, f"{name}.pt", f"{_ULTRA}/{name}.pt",
                                      description=f"Ultralytics {name} {what} (AGPL-3.0)"))
    return out


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
            "maskpose-b-1.0.0", "MaskPose-b-1.0.0.pth", f"{_HF}/MaskPose/MaskPose-b-1.0.0.pth",
            description="MaskPose-B 1.0.0 (ViT-B, 21 keypoints, alpha 0.2), BMP v1 / bmp_D3; "
            "sha256 not published where it could be read",
        ),
        Checkpoint(
            "pmpose-b", "PMPose-b-1.0.0.pth", f"{_HF}/PMPose/PMPose-b-1.0.0.pth",
            description="PMPose-B (ProbPose heads + MaskPose), BMP v2",
        ),
        # The rest of the published zoo (vrg-prague/BBoxMaskPose on Hugging Face,
        # named as the reference's PRETRAINED_URLS and README name them). Their
        # sizes and sha256 digests are not published where they could be read:
        # no size or digest check on download; loading goes through the safe
        # weights-only path like every other checkpoint.
        *[
            Checkpoint(
                f"pmpose-{s}", f"PMPose-{s}-1.0.0.pth", f"{_HF}/PMPose/PMPose-{s}-1.0.0.pth",
                description=f"PMPose-{s.upper()} 1.0.0 (ViT-{s.upper()}, ProbPose heads + MaskPose), "
                f"configs/pose/pmpose-{s}.py",
            )
            for s in "slh"
        ],
        *[
            Checkpoint(
                f"maskpose-{s}", f"MaskPose-{s}-1.1.0.pth", f"{_HF}/MaskPose/MaskPose-{s}-1.1.0.pth",
                description=f"MaskPose-{s.upper()} 1.1.0 (ViT-{s.upper()}, mask-conditioned, 23 keypoints), "
                f"configs/pose/maskpose-{s}.py",
            )
            for s in "slh"
        ],
        Checkpoint(
            "vitpose-b-multi", "ViTPose-b-multi_mmpose20.pth", f"{_HF}/ViTPose-b-multi_mmpose20.pth",
            description="ViTPose-B trained on COCO+AIC+MPII (21 keypoints), BMP; "
            "configs/pose/vitpose-b-multi.py",
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
        *_ultralytics_family(),
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


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _digest(path: Path) -> str:
    """``sha256sum`` remembered per (file, size, mtime), for download checks
    only: a config's checkpoints are resolved up front and again when each
    model is built, and hashing a 1 GB SAM file twice is wasted seconds. The
    decision to unpickle never uses it (a file rewritten with its old mtime
    would pass)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256sum(path)
    return _DIGESTS[key]


# Checkpoint safety --------------------------------------------------------

#: Files the user vouched for with ``--trust-checkpoint`` (resolved paths).
_TRUSTED: set[Path] = set()


def trust_checkpoints(paths: Iterable[str | os.PathLike]) -> None:
    """Allow full unpickling of these files for the rest of the process
    (``--trust-checkpoint PATH``). Symlinks are followed: trust is given to
    the file, not to a name that could later point elsewhere."""
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if not path.is_file():
            raise WeightsError(f"--trust-checkpoint {raw}: no such file")
        _TRUSTED.add(path)


def is_trusted(path: str | os.PathLike) -> bool:
    """Whether ``path`` was named with :func:`trust_checkpoints`."""
    return Path(path).expanduser().resolve() in _TRUSTED


def registered_checkpoint(path: str | os.PathLike) -> Checkpoint | None:
    """The registry entry whose full sha256 the file has, if any.

    Only full digests count: an 8-digit OpenMMLab prefix is a download check,
    not a guarantee against a crafted file.
    """
    digest = sha256sum(Path(path))
    return next((c for c in CHECKPOINTS.values() if c.sha256 and c.sha256 == digest), None)


def check_trusted(path: str | os.PathLike, trusted: bool = False, detail: str = "") -> str:
    """The rule for fully unpickling ``path``: allowed when its sha256 is
    registered or the user opted in (``trusted``: the config block's
    ``trust_checkpoint``; or ``--trust-checkpoint``).

    Returns:
        why it is allowed, for the log.
    Raises:
        UntrustedCheckpointError: a one-line refusal naming the file and the opt-in.
    """
    path = Path(path)
    if trusted:
        return "trust_checkpoint=True in its config block"
    if is_trusted(path):
        return "--trust-checkpoint"
    official = registered_checkpoint(path)
    if official is not None:
        return f"sha256 of the registered {official.name}"
    what = f" ({detail})" if detail else ""
    raise UntrustedCheckpointError(
        f"refusing to unpickle {path}{what}: it is not a registered official checkpoint and "
        f"unpickling can run code stored in the file; if you trust it, pass "
        f"--trust-checkpoint {path} or set trust_checkpoint=True in its config block"
    )


class _TrustAction(argparse.Action):
    """Trusts each ``--trust-checkpoint`` file as it is parsed, so every
    command that takes the flag honours it without code of its own."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        try:
            trust_checkpoints([values])
        except WeightsError as exc:
            raise argparse.ArgumentError(self, f"{values}: no such file") from exc
        # A new list: appending to the default would leak into later parses.
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), values])


def add_trust_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--trust-checkpoint PATH`` option (repeatable)."""
    parser.add_argument(
        "--trust-checkpoint", action=_TrustAction, default=[], metavar="PATH",
        help="allow fully unpickling this checkpoint file, which can run code stored in it: "
        "only for files you trust that are not registered official checkpoints (repeatable)",
    )


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
            default: yes unless ``$BMP_OFFLINE`` is set (or, for a Hugging
            Face-hosted file, ``$HF_HUB_OFFLINE``).
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
        download = offline_reason(entry.url) is None
    target = cache_dir() / entry.filename
    looked = "\n  ".join(str(p) for p in candidates)
    if not download:
        raise MissingCheckpointError(
            f"checkpoint {entry.name!r} ({entry.filename}) not found; looked in:\n  {looked}\n"
            f"Download it from {entry.url} and put it in one of those folders "
            f"(or pass --weights-dir DIR).",
            entry, candidates,
        )
    try:
        fetch(entry.url, target, sha256=entry.sha256, sha256_prefix=entry.sha256_prefix, size=entry.size)
    except Exception as exc:
        why = str(exc) if isinstance(exc, DownloadError) else f"downloading {entry.url} failed: {exc!r}"
        raise MissingCheckpointError(
            f"checkpoint {entry.name!r} ({entry.filename}) not found locally (looked in:\n  "
            f"{looked}), and {why}.\n"
            f"Download it by hand from {entry.url} into {target.parent} or a folder given with "
            f"--weights-dir.",
            entry, candidates, why,
        ) from exc
    return _verified(target, entry)


def resolve_checkpoints(
    specs: Mapping[str, str | os.PathLike | None],
    weights_dirs: Iterable[str | os.PathLike] = (),
    download: bool | None = None,
) -> dict[str, Path]:
    """:func:`resolve_checkpoint` for several checkpoints (``{label: spec}``,
    ``None`` skipped), so that one error lists everything that is missing
    instead of the user fetching files one failed run at a time.

    Raises:
        WeightsError: the only failure as it is, or one message listing every
            failure (missing registry checkpoints with their URLs).
    """
    dirs = list(weights_dirs)
    found: dict[str, Path] = {}
    failures: list[tuple[str, WeightsError]] = []
    for label, spec in specs.items():
        if spec is None:
            continue
        try:
            found[label] = resolve_checkpoint(spec, dirs, download)
        except WeightsError as exc:
            failures.append((label, exc))
    if len(failures) == 1:
        raise failures[0][1]
    if failures:
        raise WeightsError(_several_failures(failures))
    return found


def _several_failures(failures: list[tuple[str, WeightsError]]) -> str:
    lines = [f"{len(failures)} checkpoints are not available:"]
    looked: list[Path] = []
    for label, exc in failures:
        if isinstance(exc, MissingCheckpointError):
            entry = exc.entry
            why = f" ({exc.download_error})" if exc.download_error else ""
            lines.append(f"  {label}: {entry.name!r} ({entry.filename}) from {entry.url}{why}")
            looked += [p.parent for p in exc.looked if p.parent not in looked]
        else:
            lines.append(f"  {label}: {' '.join(str(exc).split())}")
    if looked:
        lines.append(
            "Looked in: " + ", ".join(str(p) for p in looked) + ". Download the missing files "
            "into one of those folders (or pass --weights-dir DIR)."
        )
    return "\n".join(lines)


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
        ok = entry.matches_digest(_digest(path))
        if not ok:
            raise WeightsError(
                f"{path} does not match the sha256 of {entry.filename} (corrupt, truncated or "
                f"a different file). Delete it and download again from {entry.url}"
            )
    return path


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


def load_checkpoint(path: str | os.PathLike, trusted: bool = False) -> Mapping[str, Any]:
    """Unpickle a checkpoint file safely.

    Tries ``weights_only=True`` with numpy metadata types allowed; falls back
    to full unpickling only as :func:`check_trusted` allows (registered
    sha256, ``trusted``, or ``--trust-checkpoint``).

    Raises:
        WeightsError: the file is corrupt (naming its URL when it carries a
            registry file name), or holds objects that only full unpickling
            would build and nothing vouches for it (one line, naming the opt-in).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint file {path} does not exist")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first_error = exc
    # A damaged file is reported as such before the trust question: torch's own
    # advice for it ("re-run with weights_only=False") is exactly wrong.
    if _damaged(path, first_error):
        raise _corrupt(path, first_error) from None
    unsafe_global = _unsafe_global(first_error)
    why = check_trusted(path, trusted, f"it pickles {unsafe_global}" if unsafe_global else "")
    logger.info("loading %s with weights_only=False (%s)", path, why)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise _corrupt(path, exc) from exc


#: What torch.save's legacy (pre-zip) format starts with: pickle protocol 2,
#: then torch's magic number as a 10-byte long.
_LEGACY_HEAD = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def _unsafe_global(exc: BaseException) -> str | None:
    """The forbidden global a weights-only load stopped at, if that was the reason."""
    if not isinstance(exc, pickle.UnpicklingError):
        return None
    text = str(exc)
    for pattern in (r"GLOBAL (\S+) was not an allowed global", r"global \S+ whose module (\S+) is blocked",
                    r"Unsupported global: GLOBAL (\S+)"):
        if match := re.search(pattern, text):
            return match.group(1)
    return None


def _damaged(path: Path, exc: BaseException) -> bool:
    """Whether a failed weights-only load means a broken file rather than
    disallowed content: neither of torch.save's formats (random bytes; a bare
    pickle, which torch.load rejects anyway), a zip cut short (its central
    directory is at the end), or a read error inside the archive."""
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_HEAD))
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            return True
        return not isinstance(exc, pickle.UnpicklingError) and "TorchScript" not in str(exc)
    if head == _LEGACY_HEAD:
        return not isinstance(exc, pickle.UnpicklingError)
    return True


def _corrupt(path: Path, exc: BaseException) -> WeightsError:
    entry = next((c for c in CHECKPOINTS.values() if c.filename == path.name), None)
    where = f"; download {entry.filename} again from {entry.url}" if entry is not None else ""
    return WeightsError(
        f"{path} is corrupt, truncated or not a torch checkpoint ({_short_error(exc)}){where}"
    )


def _short_error(exc: BaseException) -> str:
    """The cause in one line, without torch's weights_only advice."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if "weights_only" in first:
        first = ""
    return f"{type(exc).__name__}: {first[:200]}" if first else type(exc).__name__


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
    trusted: bool = False,
) -> None:
    """Load a checkpoint file into ``model``, reporting key mismatches clearly.

    ``trusted``: the config block's ``trust_checkpoint`` (see :func:`check_trusted`).
    """
    state = extract_state_dict(load_checkpoint(path, trusted=trusted))
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


def load_or_warn(
    model: torch.nn.Module, path: Path | None, strict: bool = True, trusted: bool = False
) -> None:
    """Load the resolved checkpoint ``path`` into ``model``; ``None`` keeps the
    random init, which is only good for timing (``bmp bench --random-init``)
    and says so."""
    if path is None:
        logger.warning("%s: no checkpoint given, random weights (speed tests only)", type(model).__name__)
        return
    load_weights(model, path, strict=strict, trusted=trusted)
