"""The one preprocessing: byte and pixel limits before decoding, EXIF orientation, and exact parity with
torchvision's evaluation transform (the pixels and the logits a model gives on them)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from loopline.errors import InvalidImage
from loopline.serving.preprocess import decode_image, preprocess, preprocess_batch
from loopline.training.data import build_transform
from tests.helpers import phone_photo
from tests.unit.test_serving_model import linear_onnx

pytestmark = pytest.mark.unit

LIMITS = {"max_bytes": 1_000_000, "max_pixels": 10_000}
# (width, height, input size): shrink, enlarge, odd sizes, already square at the input size
CASES = [(37, 53, 28), (200, 120, 64), (10, 10, 32), (64, 64, 64), (301, 300, 224), (5, 90, 16)]


def torchvision_eval(size: int) -> Any:
    """The evaluation transform training used before ``preprocess`` replaced it."""
    from torchvision import transforms

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return transforms.Compose(
        [transforms.Resize((size, size)), transforms.ToTensor(), transforms.Normalize(mean, std)]
    )


def random_image(seed: int, width: int, height: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def png(width: int, height: int, colour: tuple[int, int, int] = (9, 99, 199)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(("width", "height", "size"), CASES)
def test_preprocess_matches_the_torchvision_evaluation_transform(width: int, height: int, size: int) -> None:
    image = random_image(width * height, width, height)
    ours = preprocess(image, size)
    theirs = torchvision_eval(size)(image).numpy()
    assert ours.shape == theirs.shape == (3, size, size) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() <= 1e-5


def test_training_evaluation_path_is_the_shared_preprocess() -> None:
    image = random_image(1, 50, 30)
    tensor = build_transform(24, train=False)(image)
    np.testing.assert_array_equal(tensor.numpy(), preprocess(image, 24))


def test_a_model_gives_the_same_logits_on_both_preprocessings(tmp_path: Path) -> None:
    import onnxruntime as ort

    size = 16
    session = ort.InferenceSession(
        str(linear_onnx(tmp_path / "m.onnx", size, 5)), providers=["CPUExecutionProvider"]
    )
    images = [random_image(seed, 20 + 7 * seed, 40 - 3 * seed) for seed in range(6)]
    ours = session.run(None, {"image": preprocess_batch(images, size)})[0]
    reference = np.stack([torchvision_eval(size)(i).numpy() for i in images]).astype(np.float32)
    theirs = session.run(None, {"image": reference})[0]
    assert ours.shape == (6, 5)
    assert np.abs(ours - theirs).max() <= 1e-5


def test_preprocess_batch_keeps_order_and_handles_no_images() -> None:
    images = [random_image(seed, 12, 9) for seed in range(3)]
    batch = preprocess_batch(images, 8)
    assert batch.shape == (3, 3, 8, 8)
    np.testing.assert_array_equal(batch[2], preprocess(images[2], 8))
    assert preprocess_batch([], 8).shape == (0, 3, 8, 8)


def test_grey_and_transparent_images_become_three_channels() -> None:
    grey = Image.new("L", (10, 10), 128)
    rgba = Image.new("RGBA", (10, 10), (128, 128, 128, 0))
    np.testing.assert_array_equal(preprocess(grey, 4), preprocess(rgba, 4))
    assert preprocess(grey, 4).shape == (3, 4, 4)


def test_decode_image_turns_a_phone_photo_upright() -> None:
    image = decode_image(phone_photo(40, 20, orientation=6), **LIMITS)
    assert image.mode == "RGB" and image.size == (20, 40)
    top = image.getpixel((10, 5))
    assert isinstance(top, tuple) and top[0] > 200  # the stored left half (red) is on top once rotated


def test_decode_image_accepts_an_image_at_the_limits() -> None:
    data = png(100, 100)
    assert decode_image(data, max_bytes=len(data), max_pixels=10_000).size == (100, 100)


@pytest.mark.parametrize(
    ("data", "limits", "message"),
    [
        (b"", LIMITS, "empty body"),
        (png(10, 10), {"max_bytes": 20, "max_pixels": 10_000}, "over the limit of 20"),
        (png(101, 100), LIMITS, "101x100 = 10100 pixels, over the limit of 10000"),
        (b"definitely not a picture", LIMITS, "not a readable image"),
        (png(40, 40)[:-30], LIMITS, "not a readable image"),  # truncated: fails only while decoding
    ],
    ids=["empty", "too-many-bytes", "too-many-pixels", "not-an-image", "truncated"],
)
def test_decode_image_refuses_bad_uploads(data: bytes, limits: dict[str, int], message: str) -> None:
    with pytest.raises(InvalidImage, match=message) as caught:
        decode_image(data, **limits)
    assert "To fix this" in str(caught.value)


def test_pixel_limit_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    import loopline.serving.preprocess as module

    def no_decoding(data: bytes) -> Image.Image:
        raise AssertionError("pixels were decoded before the pixel limit was checked")

    monkeypatch.setattr(module, "decode_rgb", no_decoding)
    with pytest.raises(InvalidImage, match="pixels"):
        decode_image(png(200, 200), **LIMITS)
