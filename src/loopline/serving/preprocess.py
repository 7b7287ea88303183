"""Image bytes → model input, the one preprocessing of the code base (training's evaluation transform,
the register stage's evaluation, round-2 scoring and the model server all call ``preprocess``).

``preprocess`` is what torchvision's ``Resize((S, S))`` → ``ToTensor`` → ``Normalize(ImageNet)`` does to a
PIL image (PIL's bilinear resize, which antialiases when shrinking; /255; mean/std), written with PIL and
numpy only so the model server needs no torch. ``decode_image`` checks an upload's size in bytes and in
pixels (from the header, before any pixel is decoded) and then decodes it upright, as every stage does.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from loopline.data.pixels import decode_rgb
from loopline.errors import InvalidImage

MEAN = np.array((0.485, 0.456, 0.406), dtype=np.float32).reshape(3, 1, 1)
STD = np.array((0.229, 0.224, 0.225), dtype=np.float32).reshape(3, 1, 1)


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> Image.Image:
    """The upright RGB image in ``data`` (EXIF orientation applied).

    Raises:
        InvalidImage: ``data`` is empty, longer than ``max_bytes``, declares more than ``max_pixels``
            pixels, or is not a readable image.
    """
    check_image(data, max_bytes, max_pixels)
    return decode_checked(data)


def check_image(data: bytes, max_bytes: int, max_pixels: int) -> int:
    """The number of pixels ``data``'s header declares, once its size in bytes and in pixels is within the
    limits (no pixel is decoded).

    Raises:
        InvalidImage: as ``decode_image``, for all but corrupt pixel data.
    """
    if not data:
        raise InvalidImage(
            "The request holds no image (empty body). To fix this, send the image file's bytes."
        )
    if len(data) > max_bytes:
        raise InvalidImage(
            f"The image is {len(data)} bytes, over the limit of {max_bytes}. To fix this, send a smaller "
            "file (resize or recompress it), or raise the server's byte limit."
        )
    try:
        with Image.open(io.BytesIO(data)) as header:  # lazy: reads the header, decodes no pixels
            width, height = header.size
    except Image.DecompressionBombError as exc:
        raise _too_many_pixels(None, max_pixels) from exc
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ValueError, …
        raise _not_an_image(exc) from exc
    if width * height > max_pixels:
        raise _too_many_pixels((width, height), max_pixels)
    return width * height


def decode_checked(data: bytes) -> Image.Image:
    """``decode_image`` after ``check_image`` passed: the upright RGB image.

    Raises:
        InvalidImage: the pixel data is truncated or corrupt.
    """
    try:
        return decode_rgb(data)
    except Exception as exc:  # truncated or corrupt pixel data shows only while decoding
        raise _not_an_image(exc) from exc


def _too_many_pixels(size: tuple[int, int] | None, max_pixels: int) -> InvalidImage:
    shown = f"{size[0]}x{size[1]} = {size[0] * size[1]} pixels" if size else "too many pixels"
    return InvalidImage(
        f"The image is {shown}, over the limit of {max_pixels} pixels. To fix this, downscale it before "
        "sending (the model sees it resized to its small input size anyway), or raise the server's pixel "
        "limit."
    )


def _not_an_image(exc: Exception) -> InvalidImage:
    return InvalidImage(
        f"The body is not a readable image ({type(exc).__name__}: {exc}). To fix this, send a complete "
        "JPEG, PNG, WebP, BMP or GIF file."
    )


def preprocess(image: Image.Image, input_size: int) -> np.ndarray:
    """3 x S x S float32: ``image`` resized to S x S (bilinear, antialiased), scaled to [0, 1] and
    normalised with the ImageNet mean and standard deviation."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    resized = rgb.resize((input_size, input_size), Image.Resampling.BILINEAR)
    pixels = np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    return np.ascontiguousarray((pixels - MEAN) / STD, dtype=np.float32)


def preprocess_batch(images: Sequence[Image.Image], input_size: int) -> np.ndarray:
    """N x 3 x S x S float32: ``preprocess`` of each image, in order."""
    if not images:
        return np.zeros((0, 3, input_size, input_size), dtype=np.float32)
    return np.stack([preprocess(image, input_size) for image in images])
