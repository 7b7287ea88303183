"""Small image builders shared by the tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def image_bytes(seed: int, size: tuple[int, int] = (32, 32), fmt: str = "PNG") -> bytes:
    """A random-looking but deterministic image: smooth blobs, so perceptual hashes differ by seed."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(4, 4), dtype=np.uint8)
    image = Image.fromarray(coarse, mode="L").resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def brighter_jpeg(data: bytes, delta: int = 6) -> bytes:
    """The same picture, slightly brighter and re-encoded as JPEG: a near duplicate."""
    image = Image.open(io.BytesIO(data)).convert("L").point(lambda v: min(255, v + delta))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def phone_photo(width: int = 40, height: int = 20, orientation: int = 6) -> bytes:
    """A JPEG stored ``width`` x ``height`` whose EXIF says: rotate for display (6: 90 degrees clockwise)."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = (250, 30, 30)  # the left half red: the stored picture is not symmetric
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()
