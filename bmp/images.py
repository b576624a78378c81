"""Reading images and expanding command-line inputs into image files."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import torch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageError(ValueError):
    """An input image is missing, unreadable or of an unsupported layout."""


ImageLike = str | os.PathLike | np.ndarray | torch.Tensor


def load_image(
    image: ImageLike, color_order: str = "rgb", value_range: tuple[float, float] | None = None
) -> np.ndarray:
    """Any supported image as an (H, W, 3) uint8 RGB array.

    Args:
        image: a file path, or an array of shape (H, W), (H, W, 1), (H, W, 3) or
            (H, W, 4) (alpha dropped). A torch tensor may also be (3, H, W).
        color_order: channel order of a 3/4-channel array: ``'rgb'`` or ``'bgr'``.
            Files are decoded correctly regardless.
        value_range: the (black, white) values of a non-uint8 array, mapped
            linearly to 0..255. Default: (0, 1) for floats, (0, 65535) for
            uint16, (0, 255) for other integers.
    Raises:
        ImageError: the image is missing, undecodable, of an unsupported shape
            or dtype (bool: a mask, not an image), holds NaN or infinity, or
            has values outside ``value_range`` -- e.g. a float image in 0..255
            without ``value_range=(0, 255)``, which would otherwise saturate to
            white and silently find nobody.
    """
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        if not path.is_file():
            raise ImageError(f"image file not found: {path}")
        data = np.fromfile(path, dtype=np.uint8)
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if bgr is None:
            raise ImageError(f"cannot decode image {path} (corrupt or not an image)")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if color_order not in ("rgb", "bgr"):
        raise ValueError(f"color_order must be 'rgb' or 'bgr', got {color_order!r}")
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu()
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = array.permute(1, 2, 0)
        if array.dtype in (torch.float16, torch.bfloat16):  # numpy has no bfloat16
            array = array.float()
        image = array.numpy()
    if not isinstance(image, np.ndarray):
        raise ImageError(f"unsupported image type {type(image).__name__}")
    array = image
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
        color_order = "rgb"
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageError(f"image array must be (H, W[, 1|3|4]), got shape {image.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"image array is empty: shape {image.shape}")
    array = array[..., :3]
    if array.dtype != np.uint8 or value_range is not None:
        array = _to_uint8(array, value_range)
    if color_order == "bgr":
        array = array[..., ::-1]
    return np.ascontiguousarray(array)


def _to_uint8(array: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
    """``array`` mapped from ``value_range`` (default by dtype) to uint8; see
    :func:`load_image` for what is rejected."""
    if array.dtype == np.bool_:
        raise ImageError("image array is bool (a mask?); pass uint8 0..255 or float 0..1 pixels")
    floating = np.issubdtype(array.dtype, np.floating)
    if not (floating or np.issubdtype(array.dtype, np.integer)):
        raise ImageError(f"unsupported image dtype {array.dtype}")
    if value_range is None:
        value_range = (0.0, 1.0) if floating else (0.0, 65535.0) if array.dtype == np.uint16 else (0.0, 255.0)
    lo, hi = (float(v) for v in value_range)
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"value_range must be two finite numbers (black, white) with black < white, "
                         f"got {value_range}")
    vmin, vmax = float(array.min()), float(array.max())
    if floating and not (np.isfinite(vmin) and np.isfinite(vmax)):
        raise ImageError("image array contains NaN or infinity")
    # Resampling overshoots a little; anything more is a wrong range, not noise.
    slack = 1e-3 * (hi - lo)
    if vmin < lo - slack or vmax > hi + slack:
        hint = " (a 0..255 float image? pass value_range=(0, 255))" if floating and vmax > 1.5 else ""
        raise ImageError(
            f"image values span [{vmin:g}, {vmax:g}], outside value_range [{lo:g}, {hi:g}]{hint}"
        )
    if (lo, hi) == (0.0, 255.0) and not floating:
        return array.astype(np.uint8)
    scaled = (array.astype(np.float32) - lo) * np.float32(255.0 / (hi - lo))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


#: An (H, W, 3) uint8 RGB image: host array, or tensor on a model's device
#: (convert with :func:`bmp.structures.to_numpy` / :func:`~bmp.structures.to_tensor`).
PixelArray = np.ndarray | torch.Tensor


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files named by paths, folders (not recursive) and glob patterns,
    sorted within each input and de-duplicated.

    Raises:
        ImageError: an input matches nothing.
    """
    found: list[Path] = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not matches:
                raise ImageError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        elif path.is_file():
            matches = [path]
        elif glob.has_magic(text):
            matches = sorted(
                Path(p) for p in glob.glob(text, recursive=True)
                if Path(p).suffix.lower() in IMAGE_SUFFIXES
            )
            if not matches:
                raise ImageError(f"pattern {text!r} matches no image")
        else:
            raise ImageError(f"input not found: {text}")
        found.extend(matches)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique
