"""bmp: people detection, pose estimation and instance segmentation in crowds
with the BBox-Mask-Pose loop."""

from .loop import BMP
from .structures import Instances

__version__ = "0.1.0"

__all__ = ["BMP", "Instances", "__version__"]
