"""Datasets from the labeled manifest: checks, class mapping, transforms, image loading."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from loopline.errors import TrainingDataError
from loopline.labeling.labeled import LabeledRow

SPLITS = ("train", "val", "test")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ClassMapping:
    """Labels in a fixed order; the index is the model's output position. Stored with the model."""

    labels: tuple[str, ...]

    @classmethod
    def from_rows(cls, rows: Sequence[LabeledRow]) -> ClassMapping:
        return cls(tuple(sorted({r.label for r in rows}, key=_natural)))

    def index(self, label: str) -> int:
        return self.labels.index(label)


def _natural(label: str) -> tuple[int, Any]:
    return (0, int(label)) if label.isdigit() else (1, label)


def check_labeled_rows(rows: Sequence[LabeledRow], min_per_class: int = 5) -> ClassMapping:
    """Refuse data that cannot train and evaluate a model; list every problem at once."""
    problems = []
    counts = Counter(r.label for r in rows)
    if len(counts) < 2:
        problems.append(f"{len(counts)} class(es) {sorted(counts)}; a classifier needs at least 2")
    few = {label: n for label, n in sorted(counts.items()) if n < min_per_class}
    if few:
        problems.append(f"classes with fewer than {min_per_class} labels: {few}")
    for split in SPLITS:
        present = {r.label for r in rows if r.split == split}
        missing = sorted(set(counts) - present, key=_natural)
        if missing:
            problems.append(f"classes missing from the {split} split: {missing}")
    if problems:
        raise TrainingDataError(
            "The labeled data cannot train a model: " + "; ".join(problems) + ". To fix this, label more "
            "images of those classes (raise the label budget) or drop the classes from the label set."
        )
    return ClassMapping.from_rows(rows)


def build_transform(input_size: int, train: bool) -> Callable[[Image.Image], Any]:
    """Resize to the model's input size, light augmentation for training, ImageNet normalisation."""
    from torchvision import transforms

    steps: list[Any] = [transforms.Resize((input_size, input_size))]
    if train:
        steps.append(transforms.RandomAffine(degrees=8, translate=(0.06, 0.06), scale=(0.92, 1.08)))
    steps += [transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    return transforms.Compose(steps)


def load_image(uri: str, read_bytes: Callable[[str], bytes] | None = None) -> Image.Image:
    """An RGB image from a stored URI (local path, or via ``read_bytes`` for S3)."""
    data = read_bytes(uri) if read_bytes else open(uri, "rb").read()
    return Image.open(io.BytesIO(data)).convert("RGB")


class LabeledImages:
    """A map-style dataset (``torch.utils.data.Dataset`` protocol) of one split; images cached decoded."""

    def __init__(
        self,
        rows: Sequence[LabeledRow],
        mapping: ClassMapping,
        transform: Callable[[Image.Image], Any],
        read_bytes: Callable[[str], bytes] | None = None,
    ) -> None:
        self.rows = list(rows)
        self.targets = [mapping.index(r.label) for r in self.rows]
        self.transform = transform
        self.images = [load_image(r.stored_uri, read_bytes) for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.transform(self.images[i]), self.targets[i]


def loader_factory(
    rows: Sequence[LabeledRow], mapping: ClassMapping, num_workers: int = 0, pin_memory: bool = False
) -> Callable[[int, int, str], Any]:
    """``make(input size, batch size, split)`` → a DataLoader of that split; each split's images are
    decoded once per input size and shared by every trial."""
    import torch

    cache: dict[tuple[int, str], Any] = {}  # LabeledImages (a Dataset by protocol)

    def make(size: int, batch_size: int, split: str) -> Any:
        if (size, split) not in cache:
            chosen = [r for r in rows if r.split == split]
            cache[size, split] = LabeledImages(chosen, mapping, build_transform(size, train=split == "train"))
        return torch.utils.data.DataLoader(
            cache[size, split],
            batch_size=batch_size,
            shuffle=split == "train",
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
        )

    return make
