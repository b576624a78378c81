"""What the demo page does, without the page: pick the image and config a
request names, run it, write its download. :mod:`bmp.demo.app` only turns
this into Gradio components, so everything here is testable without a browser."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..images import ImageLimits
from ..input_limits import resolve_limits
from .catalog import (
    ConfigChoice,
    default_choice,
    discover_configs,
    loop_defaults,
    missing_message,
    sample_images,
)
from .inference import DemoResult, LoopSettings, ModelCache, predict_image, results_folder


class DemoInputError(ValueError):
    """A request the page cannot run (no image, an unknown config or sample), in one line."""


@dataclass
class DemoOptions:
    """``bmp demo``'s settings.

    - ``config_folders``: searched for loop configs (``*.py``); ``configs``:
      more config files, the first one preselected;
    - ``sample_folders``: images offered as samples;
    - ``max_image_pixels`` / ``max_image_mb``: as ``bmp run``'s flags (None:
      the config's ``images`` section, else the defaults);
    - ``results_root``: where each request's JSON download is written.
    """

    results_root: Path
    weights_dirs: list[str] = field(default_factory=list)
    device: str | None = None
    config_folders: list[Path] = field(default_factory=list)
    configs: list[Path] = field(default_factory=list)
    sample_folders: list[Path] = field(default_factory=list)
    max_image_pixels: int | None = None
    max_image_mb: float | None = None


class DemoService:
    """The configs and samples on offer, the model cache, and one request's run."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.choices = discover_configs(options.config_folders, options.configs, options.weights_dirs)
        preferred = Path(options.configs[0]).stem if options.configs else None
        self.default = default_choice(self.choices, preferred)
        self.samples = sample_images(options.sample_folders)
        self.cache = ModelCache(options.weights_dirs)

    @property
    def available(self) -> list[ConfigChoice]:
        return [c for c in self.choices if c.available]

    def unavailable_note(self) -> str:
        """One line per config that cannot run, for the page."""
        return "\n".join(f"- {missing_message(c, self.options.weights_dirs)}"
                         for c in self.choices if not c.available)

    def choice(self, name: str | None) -> ConfigChoice:
        """The config called ``name``.

        Raises:
            DemoInputError: no such config. WeightsError: it has missing checkpoints.
        """
        match = next((c for c in self.choices if c.name == name), None)
        if match is None:
            offered = ", ".join(c.name for c in self.available) or "none"
            raise DemoInputError(f"unknown config {name!r}; available: {offered}")
        return match

    def sample(self, name: str) -> Path:
        """The sample image of that file name; only listed files can be named,
        so a request cannot make the server read any other path."""
        match = next((p for p in self.samples if p.name == name), None)
        if match is None:
            raise DemoInputError(f"unknown sample image {name!r}")
        return match

    def image_path(self, upload: str | os.PathLike | None, sample: str | None) -> Path:
        """The uploaded file, else the chosen sample."""
        if upload:
            return Path(upload)
        if sample:
            return self.sample(sample)
        raise DemoInputError("upload an image or pick a sample first")

    def settings(self, name: str) -> LoopSettings:
        """The config's own iterations and thresholds."""
        return LoopSettings.from_loop(loop_defaults(self.choice(name).path))

    def limits(self, choice: ConfigChoice) -> ImageLimits:
        """The input limits of ``bmp run --config`` with the same flags."""
        return resolve_limits(choice.path, self.options.max_image_pixels, self.options.max_image_mb)

    def run(
        self, upload: str | os.PathLike | None, sample: str | None, config: str,
        settings: LoopSettings | None = None,
    ) -> tuple[DemoResult, Path]:
        """The loop on the requested image, and its COCO JSON file.

        Raises:
            DemoInputError, ImageError, WeightsError, ConfigError: one-line
            messages for the page.
        """
        path = self.image_path(upload, sample)
        choice = self.choice(config)
        result = predict_image(self.cache, choice, path, settings, self.options.device, self.limits(choice))
        return result, result.write_json(results_folder(self.options.results_root))


def describe_error(exc: BaseException) -> str:
    """An error as one line for the page (several-line messages, such as a
    list of missing checkpoints, are joined)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def samples_folders(extra: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """The shared COCO samples (when present) and ``--samples`` folders."""
    from ..sample_data import shared_samples_dir

    return [shared_samples_dir(), *(Path(p) for p in extra)]
