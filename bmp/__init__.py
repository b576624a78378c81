"""bmp: people detection, pose estimation and instance segmentation in crowds
with the BBox-Mask-Pose loop."""

# First: it must run before anything imports mmpretrain.
from . import mmpretrain_compat  # noqa: F401, I001
from .loop import BMP
from .structures import Instances

__version__ = "0.1.0"

__all__ = ["BMP", "Instances", "__version__", "track"]


def __getattr__(name: str):
    # bmp.track lives in bmp.video; imported on first use so that `import bmp`
    # stays free of the video stack (PyAV, scipy).
    if name == "track":
        from .video import track

        return track
    raise AttributeError(f"module 'bmp' has no attribute {name!r}")
