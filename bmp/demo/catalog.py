"""What the demo offers: the loop configs whose checkpoints are on disk, and sample images.

A config is offered only when every checkpoint it loads is already in a
``--weights-dir`` folder, a config's ``weights_dirs``, ``$BMP_WEIGHTS_DIR`` or the
cache: the demo never downloads (a page that stalls on a 1 GB fetch, or
reaches the network at all, is worse than a clear "missing" line).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError, LoopConfig, checkpoint_dirs, load_config
from ..images import IMAGE_SUFFIXES
from ..weights import WeightsError, cache_dir, resolve_checkpoint

#: The config preselected when it is available: it runs on a CPU with the shared YOLO weights.
DEFAULT_CONFIG = "bmp_lite"

#: Most sample images listed per folder: the dropdown stays readable.
MAX_SAMPLES_PER_FOLDER = 50


@dataclass(frozen=True)
class ConfigChoice:
    """One loop config and whether it can run here.

    ``missing``: ``{section: checkpoint}`` of the checkpoints not found
    offline; empty when the config can run.
    """

    name: str
    path: Path
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return not self.missing


def repo_configs_dir() -> Path:
    """``configs/`` next to the ``bmp`` package (a source checkout or editable install)."""
    return Path(__file__).resolve().parents[2] / "configs"


def missing_checkpoints(config: Path, weights_dirs: Sequence[str | os.PathLike] = ()) -> dict[str, str]:
    """``{section: checkpoint}`` of the config's checkpoints that are not on
    disk (never downloads). A file that is there but corrupt counts as missing.

    Raises:
        ConfigError: the file is not a valid loop config.
    """
    from ..models import DETECTORS, POSE_ESTIMATORS, SEGMENTERS
    from ..models.base import checkpoint_spec

    cfg = load_config(config)
    dirs = checkpoint_dirs(cfg, weights_dirs)
    missing: dict[str, str] = {}
    for section, registry in (("detector", DETECTORS), ("pose", POSE_ESTIMATORS), ("segmenter", SEGMENTERS)):
        spec = checkpoint_spec(registry, cfg.get(section) or {}, section)
        if spec is None:
            continue
        try:
            resolve_checkpoint(spec, dirs, download=False)
        except WeightsError:
            missing[section] = os.fspath(spec)
    return missing


def missing_message(choice: ConfigChoice, weights_dirs: Sequence[str | os.PathLike] = ()) -> str:
    """One line for the page: what is missing and where to put it."""
    names = ", ".join(f"{section} {spec!r}" for section, spec in choice.missing.items())
    where = [os.fspath(d) for d in weights_dirs] + [os.fspath(cache_dir())]
    return (
        f"{choice.name} cannot run: checkpoint(s) not found offline: {names}. "
        f"Put the files in {' or '.join(where)} (or start bmp demo with --weights-dir DIR); "
        f"`bmp weights --urls` lists where to download them."
    )


def discover_configs(
    folders: Sequence[Path] = (), extra: Sequence[Path] = (), weights_dirs: Sequence[str | os.PathLike] = ()
) -> list[ConfigChoice]:
    """Every loop config in ``folders`` (``*.py``, not recursive: ``configs/pose``
    holds model configs, not loops) and the ``extra`` files, ``extra`` first,
    each with its missing checkpoints. Files that are not loop configs (a
    training config) are left out; an ``extra`` file that is not one is a
    :class:`ConfigError`."""
    choices: list[ConfigChoice] = []
    seen: set[Path] = set()
    for path in extra:
        path = Path(path)
        choices.append(ConfigChoice(path.stem, path, missing_checkpoints(path, weights_dirs)))
        seen.add(path.resolve())
    for folder in folders:
        for path in sorted(Path(folder).glob("*.py")):
            if path.resolve() in seen:
                continue
            try:
                missing = missing_checkpoints(path, weights_dirs)
            except ConfigError:
                continue
            seen.add(path.resolve())
            choices.append(ConfigChoice(path.stem, path, missing))
    return choices


def default_choice(choices: Sequence[ConfigChoice], preferred: str | None = None) -> ConfigChoice | None:
    """The config preselected in the page: ``preferred`` (``--config``), else
    the lite config, else the first available one; None when none can run."""
    available = [c for c in choices if c.available]
    for name in (preferred, DEFAULT_CONFIG):
        match = next((c for c in available if c.name == name), None)
        if match is not None:
            return match
    return available[0] if available else None


def loop_defaults(config: Path) -> LoopConfig:
    """The config's loop thresholds: what the page's sliders start at."""
    return LoopConfig.from_dict(dict(load_config(config).get("loop") or {}))


def sample_images(folders: Sequence[Path]) -> list[Path]:
    """Images directly in each folder that exists, in name order, at most
    :data:`MAX_SAMPLES_PER_FOLDER` per folder, duplicates dropped."""
    out: list[Path] = []
    for folder in folders:
        if not Path(folder).is_dir():
            continue
        found = sorted(p for p in Path(folder).iterdir()
                       if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        out += [p for p in found[:MAX_SAMPLES_PER_FOLDER] if p not in out]
    return out
