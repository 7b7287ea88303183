"""Decode + resize: Pillow (what loopline does) against OpenCV (``opencv-python-headless``), side by side.

The paths measured are loopline's own:
  - the model server (and the register stage, scoring, the smoke test): image bytes → ``decode_rgb``
    (Pillow, EXIF orientation applied, RGB) → ``preprocess`` (Pillow bilinear resize, antialiased when
    shrinking, /255, ImageNet mean/std) — one call per request image;
  - the training loader: ``decode_rgb`` once per image and split (kept in memory), then per epoch the
    resize of the evaluation transform (``preprocess``) on the decoded image.
The OpenCV side does the same work: ``cv2.imdecode`` (``IMREAD_COLOR_RGB``, which applies EXIF
orientation too) → ``cv2.resize`` (``INTER_AREA``, OpenCV's antialiased shrink; ``INTER_LINEAR`` is
shown for the equivalence check only: it does not antialias) → the same normalisation.

Images: the demo digits (``loopline.data.demo``: 32x32 grey PNG), and photo-like RGB images (gradients,
smooth blobs and noise, made with numpy) at 640x480 and 1920x1080 as PNG and JPEG (quality 90). Each image
is timed ``--repeats`` times, Pillow and OpenCV alternating; the median per image is kept and the table
shows the median over the images of a kind. OpenCV runs single-threaded by default (``--cv-threads``):
the server decodes one request image per worker thread, so CPU per image is what counts.

Run: .venv/bin/python benchmarks/decode_resize.py [--input-size 64] [--images 20] [--repeats 15]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from loopline.data.demo import write_demo_data
from loopline.data.pixels import decode_rgb
from loopline.serving.preprocess import MEAN, STD, preprocess


@dataclass(frozen=True)
class Kind:
    name: str
    images: list[bytes]


def photo_like(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """An H x W x 3 uint8 image with a photo's statistics roughly: gradients, smooth blobs, sensor noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    gradient = np.stack([x / width, y / height, 1 - x / width], axis=-1) * 160
    coarse = rng.uniform(0, 90, size=(height // 60 + 2, width // 60 + 2, 3)).astype(np.float32)
    blobs = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, 6, size=(height, width, 3)).astype(np.float32)
    return np.clip(gradient + blobs + noise, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    options = {"quality": 90} if fmt == "JPEG" else {}
    Image.fromarray(pixels, mode="RGB").save(buffer, format=fmt, **options)
    return buffer.getvalue()


def make_kinds(count: int, workdir: Path) -> list[Kind]:
    demo = write_demo_data(workdir / "demo", limit=count)
    digits = sorted(demo.rounds[0].glob("img-*.png"))[:count]
    kinds = [Kind("demo digit 32x32 PNG", [p.read_bytes() for p in digits])]
    rng = np.random.default_rng(0)
    for width, height in ((640, 480), (1920, 1080)):
        photos = [photo_like(width, height, rng) for _ in range(max(1, count // 4))]
        for fmt in ("PNG", "JPEG"):
            kinds.append(Kind(f"photo-like {width}x{height} {fmt}", [encode(p, fmt) for p in photos]))
    return kinds


def cv_decode(data: bytes) -> np.ndarray:
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR_RGB)
    if pixels is None:
        raise ValueError("not an image")
    return pixels


def normalise(rgb: np.ndarray) -> np.ndarray:
    pixels = rgb.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    return np.ascontiguousarray((pixels - MEAN) / STD, dtype=np.float32)


def cv_interpolation(rgb: np.ndarray, size: int) -> int:
    """``INTER_AREA`` when shrinking (antialiased, like Pillow's bilinear), ``INTER_LINEAR`` otherwise."""
    return cv2.INTER_AREA if min(rgb.shape[:2]) > size else cv2.INTER_LINEAR


def cv_preprocess(rgb: np.ndarray, size: int) -> np.ndarray:
    return normalise(cv2.resize(rgb, (size, size), interpolation=cv_interpolation(rgb, size)))


def pil_resized(image: Image.Image, size: int) -> np.ndarray:
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def time_call(fn: Callable[..., object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def per_image_median(
    pairs: Sequence[tuple[Callable[..., object], Callable[..., object]]], repeats: int
) -> tuple[float, float]:
    """Median over images of each image's median time, Pillow and OpenCV alternating."""
    pil_times, cv_times = [], []
    for pil_fn, cv_fn in pairs:
        pil_fn(), cv_fn()  # warm-up
        p, c = [], []
        for r in range(repeats):
            if r % 2:
                c.append(time_call(cv_fn))
                p.append(time_call(pil_fn))
            else:
                p.append(time_call(pil_fn))
                c.append(time_call(cv_fn))
        pil_times.append(statistics.median(p))
        cv_times.append(statistics.median(c))
    return statistics.median(pil_times), statistics.median(cv_times)


def measure(kind: Kind, size: int, repeats: int) -> dict[str, tuple[float, float]]:
    decoded_pil = [decode_rgb(d) for d in kind.images]
    decoded_cv = [cv_decode(d) for d in kind.images]
    serving = [
        ((lambda d=d: preprocess(decode_rgb(d), size)), (lambda d=d: cv_preprocess(cv_decode(d), size)))
        for d in kind.images
    ]
    decode = [((lambda d=d: decode_rgb(d)), (lambda d=d: cv_decode(d))) for d in kind.images]
    resize = [
        ((lambda i=i: preprocess(i, size)), (lambda a=a: cv_preprocess(a, size)))
        for i, a in zip(decoded_pil, decoded_cv, strict=True)
    ]
    return {
        "serve: decode+preprocess": per_image_median(serving, repeats),
        "train: decode (once)": per_image_median(decode, repeats),
        "train: resize+normalise (per epoch)": per_image_median(resize, repeats),
    }


def equivalence(kind: Kind, size: int) -> dict[str, float]:
    """Largest differences between the two sides, in 8-bit levels (decoded and resized pixels)."""
    decoded, area, linear, model_input = 0.0, [], [], 0.0
    for data in kind.images:
        pil = decode_rgb(data)
        pil_pixels = np.asarray(pil, dtype=np.int16)
        cv_pixels = cv_decode(data)
        decoded = max(decoded, float(np.abs(pil_pixels - cv_pixels).max()))
        reference = pil_resized(pil, size).astype(np.int16)
        area.append(np.abs(reference - cv2.resize(cv_pixels, (size, size), interpolation=cv2.INTER_AREA)))
        linear.append(np.abs(reference - cv2.resize(cv_pixels, (size, size), interpolation=cv2.INTER_LINEAR)))
        model_input = max(
            model_input, float(np.abs(preprocess(pil, size) - cv_preprocess(cv_pixels, size)).max())
        )
    return {
        "decoded max": decoded,
        "AREA mean": float(np.mean([a.mean() for a in area])),
        "AREA max": float(max(a.max() for a in area)),
        "LINEAR mean": float(np.mean([a.mean() for a in linear])),
        "LINEAR max": float(max(a.max() for a in linear)),
        "input max (normalised)": model_input,
    }


def exif_check() -> str:
    """Both sides turn a JPEG with EXIF orientation 6 (rotate 90° clockwise to view) upright."""
    pixels = photo_like(64, 32, np.random.default_rng(1))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95, exif=exif)
    pil, cv = decode_rgb(buffer.getvalue()), cv_decode(buffer.getvalue())
    same = (pil.height, pil.width) == cv.shape[:2]
    diff = float(np.abs(np.asarray(pil, dtype=np.int16) - cv).max()) if same else float("nan")
    return (
        f"EXIF orientation 6, 64x32 stored: Pillow {pil.width}x{pil.height}, "
        f"OpenCV {cv.shape[1]}x{cv.shape[0]}, max diff {diff:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--input-size", type=int, default=64, help="model input side (32 small_cnn, 64 others)"
    )
    parser.add_argument("--images", type=int, default=20, help="demo digits; photo-like: a quarter of it")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--cv-threads", type=int, default=1)
    args = parser.parse_args()
    cv2.setNumThreads(args.cv_threads)
    print(
        f"Pillow {Image.__version__}, OpenCV {cv2.__version__} ({cv2.getNumThreads()} thread(s)), "
        f"input {args.input_size}x{args.input_size}, median of {args.repeats} per image"
    )
    with tempfile.TemporaryDirectory() as tmp:
        kinds = make_kinds(args.images, Path(tmp))
    print(f"\n{'images':<30} {'path':<37} {'Pillow':>10} {'OpenCV':>10} {'Pillow/OpenCV':>14}")
    for kind in kinds:
        for path, (pil, cv) in measure(kind, args.input_size, args.repeats).items():
            print(f"{kind.name:<30} {path:<37} {pil * 1e6:>8.0f}us {cv * 1e6:>8.0f}us {pil / cv:>13.2f}x")
    print("\nEquivalence against Pillow (8-bit levels; the model input in normalised units):")
    columns = ("decoded max", "AREA mean", "AREA max", "LINEAR mean", "LINEAR max", "input max")
    print(f"{'images':<30} " + " ".join(f"{k:>12}" for k in columns))
    for kind in kinds:
        row = equivalence(kind, args.input_size)
        print(f"{kind.name:<30} " + " ".join(f"{v:>12.2f}" for v in row.values()))
    print("\n" + exif_check())


if __name__ == "__main__":
    main()
