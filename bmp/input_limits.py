"""``--max-image-pixels`` / ``--max-image-mb`` and the config's ``images`` section:
the :class:`~bmp.images.ImageLimits` a command applies to its inputs.

A flag wins over the config, the config over the defaults; 0 lifts a limit::

    images = dict(max_pixels=100_000_000, max_mb=256)
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from .config import ConfigError, load_config
from .images import DEFAULT_MAX_MB, DEFAULT_MAX_PIXELS, ImageLimits, set_image_limits

#: Keys of the config's ``images`` section.
CONFIG_KEYS = ("max_pixels", "max_mb")


def add_limit_arguments(parser: argparse.ArgumentParser, file_size: bool = True) -> None:
    """The limit flags; ``file_size=False`` leaves out ``--max-image-mb`` (for
    video, whose files are large by nature and whose frames have no file)."""
    parser.add_argument(
        "--max-image-pixels", type=int, default=None, metavar="N",
        help="skip images (refuse video frames) of more than N pixels, read from the header "
        f"before decoding; 0: no limit (default: config images.max_pixels, else {DEFAULT_MAX_PIXELS:,})",
    )
    if file_size:
        parser.add_argument(
            "--max-image-mb", type=float, default=None, metavar="MB",
            help="skip image files larger than MB megabytes without reading them; 0: no limit "
            f"(default: config images.max_mb, else {DEFAULT_MAX_MB})",
        )


def _limit(value: Any, where: str) -> float | None:
    """A limit as given: a number >= 0 (0: none) -> the number or None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(f"{where} must be a number >= 0 (0: no limit), got {value!r}")
    return None if value == 0 else value


def resolve_limits(
    config: str | os.PathLike | None, max_pixels: int | None, max_mb: float | None
) -> ImageLimits:
    """The limits of a command: flags (None: not given), else the config's
    ``images`` section, else the defaults.

    Raises:
        ConfigError: a negative limit, or a bad ``images`` section.
    """
    section: dict[str, Any] = {}
    if config is not None:
        section = dict(load_config(config).get("images") or {})
        unknown = sorted(set(section) - set(CONFIG_KEYS))
        if unknown:
            raise ConfigError(f"images: unknown key(s) {unknown}; accepted: {list(CONFIG_KEYS)}")
    pixels = (_limit(max_pixels, "--max-image-pixels") if max_pixels is not None
              else _limit(section.get("max_pixels", DEFAULT_MAX_PIXELS), "images.max_pixels"))
    mb = (_limit(max_mb, "--max-image-mb") if max_mb is not None
          else _limit(section.get("max_mb", DEFAULT_MAX_MB), "images.max_mb"))
    return ImageLimits(max_pixels=None if pixels is None else int(pixels),
                       max_bytes=None if mb is None else int(mb * 2**20))


def apply_limits(args: argparse.Namespace) -> ImageLimits:
    """Resolve a command's limits (``args.config`` and the flags) and make
    them this process's default (:func:`~bmp.images.set_image_limits`)."""
    limits = resolve_limits(getattr(args, "config", None), getattr(args, "max_image_pixels", None),
                            getattr(args, "max_image_mb", None))
    set_image_limits(limits)
    return limits
