"""Datasets from the labeled manifest: checks, class mapping, transforms, image loading.

Images are read through ``loopline.data.pixels.ImageReader`` (local paths or ``s3://`` URIs; S3 objects
are kept in a local cache folder) and decoded by ``decode_rgb`` (EXIF orientation applied), exactly as
collect measured them and as annotators saw them. Each split is decoded once and kept in memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from PIL import Image

from loopline.data.labeled import LabeledRow
from loopline.data.pixels import ImageReader, decode_rgb
from loopline.errors import TrainingDataError
from loopline.serving.preprocess import preprocess

SPLITS = ("train", "val", "test")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ClassMapping:
    """Labels in a fixed order; the index is the model's output position. Stored with the model."""

    labels: tuple[str, ...]

    @classmethod
    def from_rows(cls, rows: Sequence[LabeledRow]) -> ClassMapping:
        return cls.from_labels({r.label for r in rows})

    @classmethod
    def from_labels(cls, labels: set[str]) -> ClassMapping:
        """The labels in natural order (digit labels by value, then the others)."""
        return cls(tuple(sorted(labels, key=_natural)))

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
    """Training: resize, light augmentation, ImageNet normalisation (torchvision). Evaluation: the shared
    ``loopline.serving.preprocess`` as a tensor (what the register stage, round-2 scoring and the model
    server feed their models)."""
    if not train:
        return partial(_eval_tensor, input_size=input_size)
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize((input_size, input_size)),
            transforms.RandomAffine(degrees=8, translate=(0.06, 0.06), scale=(0.92, 1.08)),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )


def _eval_tensor(image: Image.Image, input_size: int) -> Any:
    import torch

    return torch.from_numpy(preprocess(image, input_size))


ReadBytes = Callable[[str], bytes]
READ_THREADS = 8  # concurrent S3 reads: round trips, not decoding, dominate the time


def default_reader() -> ImageReader:
    """An image reader from the settings now (S3 endpoint and credentials, cache under LOOPLINE_HOME)."""
    from loopline.settings import get_settings

    return ImageReader(get_settings())


def load_image(uri: str, read_bytes: ReadBytes | None = None) -> Image.Image:
    """The upright RGB image at a stored URI (a local path or ``s3://…``), EXIF orientation applied."""
    return decode_rgb((read_bytes or default_reader().read_bytes)(uri))


def load_images(uris: Sequence[str], read_bytes: ReadBytes | None = None) -> list[Image.Image]:
    """``load_image`` for many URIs, S3 reads in parallel threads; in the order given."""
    read = read_bytes or default_reader().read_bytes
    if not any(uri.startswith("s3://") for uri in uris):
        return [decode_rgb(read(uri)) for uri in uris]
    with ThreadPoolExecutor(READ_THREADS) as pool:
        return list(pool.map(lambda uri: decode_rgb(read(uri)), uris))


class LabeledImages:
    """A map-style dataset (``torch.utils.data.Dataset`` protocol) of one split; images cached decoded.

    ``read_bytes`` defaults to an ``ImageReader`` from the settings; it is used while the dataset is
    built and not kept (the dataset pickles to DataLoader worker processes without an S3 client).
    """

    def __init__(
        self,
        rows: Sequence[LabeledRow],
        mapping: ClassMapping,
        transform: Callable[[Image.Image], Any],
        read_bytes: ReadBytes | None = None,
    ) -> None:
        self.rows = list(rows)
        self.targets = [mapping.index(r.label) for r in self.rows]
        self.transform = transform
        self.images = load_images([r.stored_uri for r in self.rows], read_bytes)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.transform(self.images[i]), self.targets[i]


DatasetBuilder = Callable[[Sequence[LabeledRow], int, bool, ReadBytes], Any]  # rows, size, train, reader


def loader_factory(
    rows: Sequence[LabeledRow],
    mapping: ClassMapping,
    num_workers: int = 0,
    pin_memory: bool = False,
    read_bytes: ReadBytes | None = None,
    dataset: DatasetBuilder | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    drop_single: bool = False,
) -> Callable[[int, int, str], Any]:
    """``make(input size, batch size, split)`` → a DataLoader of that split; each split's images are
    read and decoded once per input size and shared by every trial. ``read_bytes`` defaults to an
    ``ImageReader`` from the settings (made once, so its S3 client and cache serve every split).

    ``dataset(rows, size, train, read_bytes)`` builds a split's dataset (default: ``LabeledImages`` for
    classification); ``collate_fn`` batches it (default: stacked tensors); ``drop_single`` leaves out a
    last training batch of one image (BatchNorm cannot train on one value per channel, as a detector's
    1x1 feature maps would give it).
    """
    import torch

    def classification(chosen: Sequence[LabeledRow], size: int, train: bool, read: ReadBytes) -> Any:
        return LabeledImages(chosen, mapping, build_transform(size, train=train), read)

    build = dataset or classification
    cache: dict[tuple[int, str], Any] = {}  # a Dataset by protocol
    reader: list[ReadBytes] = [read_bytes] if read_bytes else []

    def make(size: int, batch_size: int, split: str) -> Any:
        if (size, split) not in cache:
            if not reader:
                reader.append(default_reader().read_bytes)
            chosen = [r for r in rows if r.split == split]
            cache[size, split] = build(chosen, size, split == "train", reader[0])
        count = len(cache[size, split])
        return torch.utils.data.DataLoader(
            cache[size, split],
            batch_size=batch_size,
            drop_last=drop_single and split == "train" and count > 1 and count % batch_size == 1,
            shuffle=split == "train",
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            collate_fn=collate_fn,
        )

    return make
