import io

import pytest
from PIL import Image

from loopline.data.images import ImageInfo, ImageLimits, Rejection, inspect_image, perceptual_hash
from tests.helpers import brighter_jpeg, image_bytes

pytestmark = pytest.mark.unit


def png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_good_image_is_measured() -> None:
    info = inspect_image(image_bytes(1, (40, 30)), ImageLimits())
    assert isinstance(info, ImageInfo)
    assert (info.width, info.height, info.format) == (40, 30, "PNG")


@pytest.mark.parametrize(
    ("data", "limits", "reason"),
    [
        (b"", ImageLimits(), "zero_byte"),
        (b"hello, I am text with a .png name\n", ImageLimits(), "not_an_image"),
        (image_bytes(2, (64, 64))[:300], ImageLimits(), "truncated"),
        (image_bytes(3, (64, 64), "JPEG")[:400], ImageLimits(), "truncated"),
        (png((4, 4)), ImageLimits(min_side=8), "too_small"),
        (png((400, 16)), ImageLimits(max_aspect_ratio=10), "extreme_aspect_ratio"),
        (png((100, 100)), ImageLimits(max_pixels=5_000), "too_large"),
    ],
    ids=["zero-byte", "text", "truncated-png", "truncated-jpeg", "tiny", "banner", "too-many-pixels"],
)
def test_every_quarantine_reason(data: bytes, limits: ImageLimits, reason: str) -> None:
    result = inspect_image(data, limits)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert result.detail


def test_corrupt_bytes_inside_a_valid_header() -> None:
    data = bytearray(image_bytes(4, (64, 64)))
    idat = data.index(b"IDAT")
    data[idat + 8 : idat + 40] = b"\x00" * 32  # damage the compressed pixel stream
    result = inspect_image(bytes(data), ImageLimits())
    assert isinstance(result, Rejection)
    assert result.reason in {"corrupt", "truncated"}


def test_perceptual_hash_is_stable_under_reencoding_and_differs_between_pictures() -> None:
    original = Image.open(io.BytesIO(image_bytes(5)))
    near = Image.open(io.BytesIO(brighter_jpeg(image_bytes(5))))
    other = Image.open(io.BytesIO(image_bytes(6)))
    assert (perceptual_hash(original) ^ perceptual_hash(near)).bit_count() <= 4
    assert (perceptual_hash(original) ^ perceptual_hash(other)).bit_count() > 10


def rotated_with_exif(upright: bytes, orientation: int = 6) -> bytes:
    """The picture stored the way a phone stores it: pixels turned, EXIF saying how to turn them back."""
    image = Image.open(io.BytesIO(upright))
    stored = image.transpose(Image.Transpose.ROTATE_90)  # orientation 6 undoes this (rotate 270)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    stored.save(buffer, format="PNG", exif=exif.tobytes())
    return buffer.getvalue()


def test_exif_orientation_gives_upright_sizes_and_hash() -> None:
    upright = image_bytes(7, (20, 40))
    info = inspect_image(upright, ImageLimits())
    turned = inspect_image(rotated_with_exif(upright), ImageLimits())
    assert isinstance(info, ImageInfo) and isinstance(turned, ImageInfo)
    assert (turned.width, turned.height) == (info.width, info.height) == (20, 40)
    assert turned.phash == info.phash  # the same picture: lossless, so the same hash
