"""Demo data for detection: scenes of scikit-learn's handwritten digits on larger canvases, with boxes.

Each scene is a near-white canvas (``canvas`` pixels a side, width and height drawn separately) holding 0 to 4
digits (``render_digit``, ``digit`` pixels a side) at random non-overlapping places; a scene with no
digit is a valid negative. Like the classification demo: ``OUT/round-1/``, ``OUT/round-2/`` flat folders
whose file names say nothing, the same awkward files (corrupt, exact and near duplicates), and
``OUT/ground_truth.json`` kept apart for the *demo annotator* only. Its detection format maps each
image's SHA-256 to ``{"width", "height", "boxes": [{"label", "x", "y", "width", "height"}, ...]}``, boxes
in pixels (left, top, width, height) tight around the digit's ink. Everything is seeded: the same
arguments write the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from loopline.data.demo import (
    GROUND_TRUTH_FILE,
    DemoData,
    plant_corrupt_and_copies,
    png_bytes,
    render_digit,
)
from loopline.data.labeled import PixelBox

INK = 3  # an 8x8 cell with a value above this (of 16) is ink: the box is tight around those cells
DIGITS_PER_SCENE = (0, 1, 2, 3, 4)
DIGITS_WEIGHTS = (0.1, 0.25, 0.3, 0.2, 0.15)
GAP = 2  # pixels between two digits' squares
CANVAS = (96, 128)  # (smallest, largest) side of a scene, in pixels
DIGIT = (20, 36)  # (smallest, largest) side of a digit's square


@dataclass(frozen=True)
class DemoScene:
    """One demo image's ground truth: its size and its boxes in pixels (empty: a negative)."""

    width: int
    height: int
    boxes: tuple[PixelBox, ...]

    def as_dict(self) -> dict[str, object]:
        return {"width": self.width, "height": self.height, "boxes": [asdict(b) for b in self.boxes]}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DemoScene:
        """The inverse of ``as_dict`` (one image of ``ground_truth.json``)."""
        boxes = tuple(
            PixelBox(str(b["label"]), float(b["x"]), float(b["y"]), float(b["width"]), float(b["height"]))
            for b in raw["boxes"]
        )
        return cls(int(raw["width"]), int(raw["height"]), boxes)


def ink_box(pixels: np.ndarray, left: int, top: int, size: int, label: str) -> PixelBox:
    """The box around an 8x8 digit's ink cells once rendered ``size`` pixels a side at (left, top)."""
    rows, cols = np.nonzero(pixels.reshape(8, 8) > INK)
    cell = size / 8
    x0, x1 = left + cols.min() * cell, left + (cols.max() + 1) * cell
    y0, y1 = top + rows.min() * cell, top + (rows.max() + 1) * cell
    return PixelBox(label, round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2))


def _places(
    rng: np.random.Generator, width: int, height: int, sizes: list[int]
) -> list[tuple[int, int, int]]:
    """Non-overlapping squares ``(left, top, size)``; a square that finds no free place is left out."""
    placed: list[tuple[int, int, int]] = []
    for size in sizes:
        for _ in range(50):
            left, top = int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))
            if all(
                left + size + GAP <= x or x + s + GAP <= left or top + size + GAP <= y or y + s + GAP <= top
                for x, y, s in placed
            ):
                placed.append((left, top, size))
                break
    return placed


def render_scene(
    rng: np.random.Generator,
    digits: np.ndarray,
    targets: np.ndarray,
    canvas: tuple[int, int],
    digit: tuple[int, int],
) -> tuple[Image.Image, DemoScene]:
    """One scene drawn with ``rng``: its grey image and ground truth."""
    width, height = (int(rng.integers(canvas[0], canvas[1] + 1)) for _ in range(2))
    count = int(rng.choice(DIGITS_PER_SCENE, p=DIGITS_WEIGHTS))
    picks = rng.integers(0, len(targets), count)
    sizes = [int(rng.integers(digit[0], digit[1] + 1)) for _ in range(count)]
    paper = rng.integers(244, 256, (height, width), dtype=np.uint8)  # faint grain: no two scenes alike
    boxes = []
    for index, (left, top, size) in zip(picks, _places(rng, width, height, sizes), strict=False):
        ink = np.asarray(render_digit(digits[index], size))
        window = paper[top : top + size, left : left + size]
        np.minimum(window, ink, out=window)
        boxes.append(ink_box(digits[index], left, top, size, str(int(targets[index]))))
    return Image.fromarray(paper, mode="L"), DemoScene(width, height, tuple(boxes))


def write_demo_boxes(
    out: str | Path,
    rounds: int = 2,
    images: int = 300,
    canvas: tuple[int, int] = CANVAS,
    digit: tuple[int, int] = DIGIT,
    seed: int = 0,
) -> DemoData:
    """Write ``images`` digit scenes split over ``rounds`` folders, the planted problems and the ground
    truth. ``canvas`` and ``digit`` are (smallest, largest) sides in pixels."""
    from sklearn.datasets import load_digits

    if not (0 < digit[0] <= digit[1] <= canvas[0] <= canvas[1]):
        raise ValueError(
            f"digit sizes {digit} must fit the canvas sizes {canvas}: 0 < smallest digit <= largest "
            "digit <= smallest canvas <= largest canvas, e.g. digit=(20, 36), canvas=(96, 128)"
        )
    data = load_digits()
    rng = np.random.default_rng(seed)
    root = Path(out).expanduser().resolve()
    folders = tuple(root / f"round-{r + 1}" for r in range(rounds))
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    truth: dict[str, DemoScene] = {}
    scenes: list[tuple[Image.Image, DemoScene]] = []
    for position in range(images):
        image, scene = render_scene(rng, data.images, data.target, canvas, digit)
        content = png_bytes(image)
        truth[hashlib.sha256(content).hexdigest()] = scene
        (folders[position * rounds // images] / f"img-{position:05d}.png").write_bytes(content)
        scenes.append((image, scene))
    planted = _plant_problems(folders[0], [s for s in scenes if s[1].boxes][:5], truth)
    ground_truth = root / GROUND_TRUTH_FILE
    ground_truth.write_text(json.dumps({h: s.as_dict() for h, s in truth.items()}, sort_keys=True, indent=0))
    return DemoData(root, folders, ground_truth, images, planted)


def _plant_problems(
    folder: Path, scenes: list[tuple[Image.Image, DemoScene]], truth: dict[str, DemoScene]
) -> dict[str, int]:
    """The classification demo's awkward files, made of scenes: corrupt files, exact copies and near
    duplicates (the same scene slightly brighter, saved as JPEG: same boxes, another hash)."""
    plant_corrupt_and_copies(folder, [png_bytes(image) for image, _ in scenes])
    for k in range(2, 5):
        image, scene = scenes[k]
        buffer = io.BytesIO()
        image.point(lambda v: min(255, v + 6)).save(buffer, format="JPEG", quality=92)
        (folder / f"scan-retake-{k}.jpg").write_bytes(buffer.getvalue())
        truth[hashlib.sha256(buffer.getvalue()).hexdigest()] = scene
    return {"corrupt or unusable": 5, "exact duplicates": 2, "near duplicates": 3}
