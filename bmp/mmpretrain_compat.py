"""Keep mmpretrain 1.2.0 importable beside transformers 5.

mmpretrain enables its multimodal models (BLIP, CLIP, LLaVA, ...) whenever
``transformers>=4.28`` is installed, and then imports them with every
``mmpretrain.models``. Under transformers 5 (the H200 target has 5.17) their
imports fail inside a bare ``except`` and BLIP subclasses ``None``: importing
mmpretrain.models, which the ViT pose backbones need, raises
``TypeError: NoneType takes no arguments``. bmp uses none of those models, so
mmpretrain is told they are unavailable, before anything imports it; it then
registers its own placeholders for them, as it does without transformers.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_DEPENDENCY = "mmpretrain.utils.dependency"


def disable_mmpretrain_multimodal() -> None:
    """Load mmpretrain's dependency flags with ``WITH_MULTIMODAL`` off (no-op
    when mmpretrain is absent or already imported)."""
    if "mmpretrain" in sys.modules or _DEPENDENCY in sys.modules:
        return
    package = importlib.util.find_spec("mmpretrain")
    if package is None or not package.submodule_search_locations:
        return
    path = Path(next(iter(package.submodule_search_locations))) / "utils" / "dependency.py"
    spec = importlib.util.spec_from_file_location(_DEPENDENCY, path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.WITH_MULTIMODAL = False
    # Found here by mmpretrain's own `from .dependency import ...` and
    # `from mmpretrain.utils.dependency import WITH_MULTIMODAL`.
    sys.modules[_DEPENDENCY] = module


disable_mmpretrain_multimodal()
