"""Decode-check one image and compute its perceptual hash.

Every file is fully decoded (not just its header), so truncated and corrupt files are caught here and
quarantined with a reason rather than failing a training job later. Sizes and the perceptual hash are
those of the upright picture: the EXIF orientation is applied (a phone photo stored 40x20 with
orientation 6 is 20x40), as ``loopline.data.pixels.decode_rgb`` does for every stage that reads pixels.
(Pillow reads damaged EXIF as "no orientation", with a warning; if reading it raises, the image is
``corrupt``.)
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

QuarantineReason = Literal[
    "zero_byte",
    "unreadable",
    "not_an_image",
    "truncated",
    "corrupt",
    "too_large",
    "too_small",
    "extreme_aspect_ratio",
]
ORIENTATION_TAG = 0x0112  # EXIF Orientation: 1 upright; 5-8 rotate by 90 degrees (width and height swap)
_SWAPS_SIDES = frozenset({5, 6, 7, 8})

QUARANTINE_REASONS: tuple[QuarantineReason, ...] = (
    "zero_byte",
    "unreadable",
    "not_an_image",
    "truncated",
    "corrupt",
    "too_large",
    "too_small",
    "extreme_aspect_ratio",
)


@dataclass(frozen=True)
class ImageLimits:
    """What an acceptable image looks like."""

    min_side: int = 8
    max_aspect_ratio: float = 10.0
    max_pixels: int = 100_000_000


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str
    phash: int


@dataclass(frozen=True)
class Rejection:
    reason: QuarantineReason
    detail: str


def inspect_image(data: bytes, limits: ImageLimits) -> ImageInfo | Rejection:
    """Decode ``data`` completely and check it against ``limits``."""
    if not data:
        return Rejection("zero_byte", "the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            fmt = image.format or "UNKNOWN"
            width, height = image.size
            if width * height > limits.max_pixels:
                return Rejection("too_large", f"{width}x{height} exceeds {limits.max_pixels} pixels")
            image.load()
            orientation = image.getexif().get(ORIENTATION_TAG, 1)
    except UnidentifiedImageError:
        return Rejection("not_an_image", "no image format recognises the bytes")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return Rejection("too_large", str(exc))
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        message = str(exc)
        if "truncated" in message.lower() or isinstance(exc, EOFError):
            return Rejection("truncated", message)
        return Rejection("corrupt", message or type(exc).__name__)
    if orientation in _SWAPS_SIDES:
        width, height = height, width
    if min(width, height) < limits.min_side:
        return Rejection("too_small", f"{width}x{height} is below the minimum side {limits.min_side}")
    ratio = max(width, height) / min(width, height)
    if ratio > limits.max_aspect_ratio:
        return Rejection(
            "extreme_aspect_ratio",
            f"{width}x{height} has aspect ratio {ratio:.1f} > {limits.max_aspect_ratio}",
        )
    upright = ImageOps.exif_transpose(image) if orientation != 1 else image
    return ImageInfo(width=width, height=height, format=fmt, phash=perceptual_hash(upright))


@cache
def _dct_rows(n: int, keep: int) -> np.ndarray:
    """The first ``keep`` rows of the orthonormal DCT-II basis of size n: ``D @ x`` is x's low spectrum."""
    k = np.arange(keep)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    matrix[0] /= np.sqrt(2)
    return matrix


_BIT_VALUES = np.array([1 << (63 - b) for b in range(64)], dtype=np.uint64)


def perceptual_hash(image: Image.Image, size: int = 32, bits_side: int = 8) -> int:
    """64-bit pHash: signs of the low-frequency DCT coefficients of a 32x32 grey image vs their median."""
    small = image.convert("L").resize((size, size), Image.Resampling.BILINEAR)
    grey = np.frombuffer(small.tobytes(), dtype=np.uint8).reshape(size, size).astype(np.float64)
    dct = _dct_rows(size, bits_side)
    low = (dct @ grey @ dct.T).ravel()
    ac = low[1:]  # the DC term only measures brightness
    median = np.partition(ac, len(ac) // 2)[len(ac) // 2]
    return int(_BIT_VALUES[low > median].sum())
