"""Reading images and expanding command-line inputs into image files."""

from __future__ import annotations

import glob
import io
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from .link_safe_glob import link_safe_glob, real_path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageError(ValueError):
    """An input image is missing, unreadable or of an unsupported layout."""


ImageLike = str | os.PathLike | np.ndarray | torch.Tensor

#: Defaults of :class:`ImageLimits`: a 100-megapixel photo decodes to 300 MB of
#: RGB; the largest camera JPEGs are a few tens of MB.
DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_MAX_MB = 256


@dataclass(frozen=True)
class ImageLimits:
    """What one input image may cost, checked before it is decoded: a small
    file can decode to gigabytes (a decompression bomb), so the pixel count is
    read from its header first, and a huge file is refused before it is read.

    Attributes:
        max_pixels: width x height of the largest image (None: no limit). Also
            the largest video frame ``bmp video`` accepts.
        max_bytes: size of the largest image file (None: no limit).
    """

    max_pixels: int | None = DEFAULT_MAX_PIXELS
    max_bytes: int | None = DEFAULT_MAX_MB * 2**20

    def check_pixels(self, pixels: int, what: str) -> None:
        """Raise :class:`ImageError` when ``what`` (an image, a frame) of
        ``pixels`` pixels is over the limit."""
        if self.max_pixels is not None and pixels > self.max_pixels:
            raise ImageError(
                f"{what} has {pixels / 1e6:.1f} megapixels, over the limit of "
                f"{self.max_pixels / 1e6:g} (--max-image-pixels, config images.max_pixels)"
            )

    def check_bytes(self, size: int, what: str) -> None:
        """Raise :class:`ImageError` when a file of ``size`` bytes is over the limit."""
        if self.max_bytes is not None and size > self.max_bytes:
            raise ImageError(
                f"{what} is {size / 2**20:.1f} MB, over the limit of {self.max_bytes / 2**20:g} MB "
                "(--max-image-mb, config images.max_mb)"
            )


_limits = ImageLimits()


def image_limits() -> ImageLimits:
    """The limits :func:`load_image` applies when it is given none (see :func:`set_image_limits`)."""
    return _limits


def set_image_limits(limits: ImageLimits) -> None:
    """Make ``limits`` this process's default for every image and video frame
    read (the commands set it from their flags and config). Decoding workers
    started later inherit it."""
    global _limits
    _limits = limits


def load_image(
    image: ImageLike, color_order: str = "rgb", value_range: tuple[float, float] | None = None,
    limits: ImageLimits | None = None,
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
        limits: the file size and pixel count a file may have, checked before
            it is decoded (default: :func:`image_limits`). Arrays are not checked.
    Raises:
        ImageError: the image is missing, undecodable, over ``limits``, of an unsupported shape
            or dtype (bool: a mask, not an image), holds NaN or infinity, or
            has values outside ``value_range`` -- e.g. a float image in 0..255
            without ``value_range=(0, 255)``, which would otherwise saturate to
            white and silently find nobody.
    """
    if isinstance(image, str | os.PathLike):
        return _decode_file(Path(image), limits or _limits)
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


def _decode_file(path: Path, limits: ImageLimits) -> np.ndarray:
    """The RGB pixels of an image file, within ``limits``: the file is read once
    (at most one byte past the size limit, whatever it grew to since it was
    listed), its header checked, and only then decoded, from those same bytes."""
    try:
        with open(path, "rb") as f:
            limits.check_bytes(os.fstat(f.fileno()).st_size, f"image {path}")
            data = f.read() if limits.max_bytes is None else f.read(limits.max_bytes + 1)
    except FileNotFoundError:
        raise ImageError(f"image file not found: {path}") from None
    except IsADirectoryError:
        raise ImageError(f"image file not found: {path} is a folder") from None
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: {exc.strerror or exc}") from None
    limits.check_bytes(len(data), f"image {path}")
    _check_header(data, path, limits)
    try:
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. over OpenCV's own pixel limit, or a codec failure
        raise ImageError(f"cannot decode image {path}: {str(exc).strip().splitlines()[-1]}") from None
    if bgr is None:
        raise ImageError(f"cannot decode image {path} (corrupt or not an image)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


#: Pillow's own ``Image.open``, taken before anything replaces it: importing
#: Ultralytics swaps in a wrapper that pip-installs a HEIF plugin whenever Pillow
#: cannot identify a file, so a corrupt image would reach for the network and
#: print a traceback.
_PIL_OPEN = Image.open


def _pillow_open():
    patches = sys.modules.get("ultralytics.utils.patches")
    if getattr(_PIL_OPEN, "__module__", "") == getattr(patches, "__name__", None):
        # Ultralytics was imported before bmp: its wrapper keeps the original.
        return getattr(patches, "_image_open", _PIL_OPEN)
    return _PIL_OPEN


#: Pillow warns about, and past twice its ``MAX_IMAGE_PIXELS`` refuses, large
#: headers; bmp applies its own limit instead, so both are caught while a header
#: is read. ``warnings.catch_warnings`` is process-wide state: one header at a time.
_HEADER_LOCK = threading.Lock()


def _check_header(data: bytes, path: Path, limits: ImageLimits) -> None:
    """Read an image's size from its header, without decoding its pixels, and
    hold it against ``limits``; a header that cannot be read is an undecodable image."""
    with _HEADER_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with _pillow_open()(io.BytesIO(data)) as header:
                width, height = header.size
        except Image.DecompressionBombError as exc:
            # Pillow names the pixel count only; without a bmp limit OpenCV's own applies.
            count = re.search(r"\((\d+) pixels\)", str(exc))
            if count is None:
                raise ImageError(f"image {path} is too large to decode: {exc}") from None
            limits.check_pixels(int(count.group(1)), f"image {path}")
            return
        except Exception:  # noqa: BLE001 -- Pillow's plugins raise many kinds for a bad header
            raise ImageError(f"cannot decode image {path} (corrupt or not an image)") from None
    limits.check_pixels(width * height, f"image {path} ({width}x{height})")


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

    A link that loops is skipped with a warning, and ``**`` enters each folder
    once, however many links lead to it (:mod:`bmp.link_safe_glob`).

    Raises:
        ImageError: an input matches nothing.
    """
    found: list[Path] = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            matches = _real_files(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
            if not matches:
                raise ImageError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        elif path.is_file():
            matches = _real_files([path])
        elif glob.has_magic(text):
            images = (p for p in link_safe_glob(text) if p.suffix.lower() in IMAGE_SUFFIXES)
            matches = _real_files(sorted(images))
            if not matches:
                raise ImageError(f"pattern {text!r} matches no image")
        elif path.is_symlink():
            raise ImageError(f"input not found: {text} is a broken link or a link loop")
        else:
            raise ImageError(f"input not found: {text}")
        found.extend(matches)
    return list(dict.fromkeys(found))


def _real_files(paths: list[Path]) -> list[Path]:
    """``paths`` resolved (absolute, links followed), less the links that loop."""
    return [real for real in map(real_path, paths) if real is not None]
