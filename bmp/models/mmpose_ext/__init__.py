"""bmp's additions to mmpose's registries (MaskPose conditioning, ProbPose head).

Imported for its side effect of registering modules; kept out of
``bmp.models`` imports so mmpose is loaded only when a pose model is built.
"""

from .mask_background import MaskBackground
from .prob_head import ProbPoseHead

__all__ = ["MaskBackground", "ProbPoseHead"]
