"""Demo data: scikit-learn's handwritten digits rendered as PNG files, with planted problems.

Writes ``OUT/round-1/`` and ``OUT/round-2/`` (flat folders: the file names and folders say nothing about
the labels, so the pipeline cannot see them), a few corrupt files and duplicates so collect has real
work, and ``OUT/ground_truth.json`` mapping each image's SHA-256 to its digit. Only the *demo
annotator* reads the ground truth.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from loopline.data.labeled import LabeledRow
from loopline.data.splits import SplitFractions, stratified_split
from loopline.data.store import DataStore

GROUND_TRUTH_FILE = "ground_truth.json"


@dataclass(frozen=True)
class DemoData:
    root: Path
    rounds: tuple[Path, ...]
    ground_truth: Path
    images: int
    planted: dict[str, int]


def render_digit(pixels: np.ndarray, size: int) -> Image.Image:
    """An 8x8 digit with values 0..16 as a ``size``x``size`` grey image, dark ink on white."""
    grey = (255 - pixels.reshape(8, 8) * (255 / 16)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").resize((size, size), Image.Resampling.BICUBIC)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_demo_data(out: str | Path, size: int = 32, rounds: int = 2, limit: int | None = None) -> DemoData:
    """Write the digits (all 1,797, or ``limit``) split over ``rounds`` folders, plus planted problems."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    if limit is not None:
        order = order[:limit]
    root = Path(out).expanduser().resolve()
    folders = tuple(root / f"round-{r + 1}" for r in range(rounds))
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    truth: dict[str, int] = {}
    for position, index in enumerate(order):
        data = png_bytes(render_digit(digits.images[index], size))
        truth[hashlib.sha256(data).hexdigest()] = int(digits.target[index])
        folder = folders[position * rounds // len(order)]
        (folder / f"img-{index:05d}.png").write_bytes(data)
    planted = _plant_problems(folders[0], digits.images[order[:5]], digits.target[order[:5]], size, truth)
    ground_truth = root / GROUND_TRUTH_FILE
    ground_truth.write_text(json.dumps(truth, sort_keys=True, indent=0))
    return DemoData(root, folders, ground_truth, len(order), planted)


def _plant_problems(
    folder: Path, images: np.ndarray, targets: np.ndarray, size: int, truth: dict[str, int]
) -> dict[str, int]:
    """Corrupt files and duplicates of the first images, so that collect has something to remove."""
    plant_corrupt_and_copies(folder, [png_bytes(render_digit(img, size)) for img in images])
    for k in range(2, 5):  # near duplicates: the same digit, slightly brighter, saved as JPEG
        brighter = render_digit(images[k], size).point(lambda v: min(255, v + 6))
        buffer = io.BytesIO()
        brighter.save(buffer, format="JPEG", quality=92)
        (folder / f"scan-retake-{k}.jpg").write_bytes(buffer.getvalue())
        truth[hashlib.sha256(buffer.getvalue()).hexdigest()] = int(targets[k])
    return {"corrupt or unusable": 5, "exact duplicates": 2, "near duplicates": 3}


def plant_corrupt_and_copies(folder: Path, first: list[bytes]) -> None:
    """Five files collect must refuse (empty, truncated, not an image, too small, extreme aspect ratio,
    the truncated one cut from ``first[0]``) and exact copies of ``first[0]`` and ``first[1]`` under other
    names (both demos plant them)."""
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes(first[0][: len(first[0]) // 2])
    (folder / "notes.png").write_text("this is a text file with an image extension\n")
    (folder / "tiny.png").write_bytes(png_bytes(Image.new("L", (4, 4), 255)))
    (folder / "banner.png").write_bytes(png_bytes(Image.new("L", (400, 16), 255)))
    for k in range(2):  # exact copies under other names
        (folder / f"scan-copy-{k}.png").write_bytes(first[k])


def labeled_digit_rows(
    store: DataStore, n: int, val: float = 0.15, test: float = 0.15, dataset_version: str = "digits"
) -> list[LabeledRow]:
    """The first ``n`` digits written to ``store`` as labeled rows with a stratified split, labels taken
    from the dataset itself: ready-made training data for tests and benchmarks (no people involved)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = [str(t) for t in digits.target[:n]]
    splits = stratified_split([(f"h{i}", labels[i]) for i in range(n)], SplitFractions(val, test))
    rows = []
    for i in range(n):
        key = f"images/{i}.png"
        store.put_bytes(key, png_bytes(render_digit(digits.images[i], 32)))
        rows.append(
            LabeledRow(f"h{i}", store.uri(key), labels[i], splits[f"h{i}"], dataset_version, 0, 0, i, ())
        )
    return rows
