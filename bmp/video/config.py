"""The ``video`` section of a bmp config (read by ``bmp video`` and ``bmp.track``)::

    video = dict(
        tracker=dict(mask_weight=0.5, match_thr=0.2, reid_thr=0.3, birth_score=0.3, max_age=15),
        prior=dict(enabled=False, max_gap=1),
        propagation=None,  # or dict(config="configs/sam2.1/sam2.1_hiera_b+.yaml",
                           #         checkpoint="sam2.1-hiera-b+", max_memory=6)
    )

Every key is optional; unknown keys are errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from ..config import ConfigError
from .tracking import TrackerConfig


@dataclass(frozen=True)
class PriorConfig:
    """Temporal prior: the previous frame's tracks seed the loop (``BMP.seed``).

    - ``enabled``: off by default (see the README's measurements).
    - ``max_gap``: tracks seen within this many processed frames are seeded.
    """

    enabled: bool = False
    max_gap: int = 1


@dataclass(frozen=True)
class VideoConfig:
    """``tracker`` (:class:`TrackerConfig`), ``prior`` (:class:`PriorConfig`) and
    ``propagation`` (None, or the arguments of
    :class:`bmp.video.propagation.SAM2MemoryPropagator`)."""

    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    propagation: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> VideoConfig:
        values = dict(values or {})
        unknown = sorted(set(values) - {"tracker", "prior", "propagation"})
        if unknown:
            raise ConfigError(f"video: unknown key(s) {unknown}; accepted: tracker, prior, propagation")
        prior = dict(values.get("prior") or {})
        known = {f.name for f in fields(PriorConfig)}
        if set(prior) - known:
            raise ConfigError(f"video.prior: unknown key(s) {sorted(set(prior) - known)}; "
                              f"accepted: {sorted(known)}")
        propagation = values.get("propagation")
        if propagation is not None and not isinstance(propagation, dict):
            raise ConfigError("video.propagation must be None or a dict")
        return cls(
            tracker=TrackerConfig.from_dict(values.get("tracker")),
            prior=PriorConfig(**prior),
            propagation=dict(propagation) if propagation is not None else None,
        )

    def with_prior(self, enabled: bool | None) -> VideoConfig:
        """A copy with the prior switched on/off (None: unchanged)."""
        if enabled is None:
            return self
        return VideoConfig(self.tracker, PriorConfig(enabled, self.prior.max_gap), self.propagation)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"tracker": asdict(self.tracker), "prior": asdict(self.prior),
                "propagation": self.propagation}
