"""Detection datasets from the labeled manifest: checks, targets, box-aware augmentation, batching.

Images are read and decoded by ``loopline.training.data`` (the same reader, EXIF handling and per-split
cache as classification); boxes come from ``LabeledRow.boxes`` (pixels of the decoded image, left, top,
width, height) and become torchvision targets ``{"boxes": x1y1x2y2 float, "labels": class index + 1}``.
An image with no boxes is a valid negative (zero-box target). Augmentation is ``torchvision.transforms.v2``
on ``tv_tensors.BoundingBoxes``: boxes move with the pixels; no horizontal flip (digits are not
symmetric).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from loopline.data.labeled import LabeledRow, PixelBox
from loopline.errors import TrainingDataError
from loopline.training.data import SPLITS, ClassMapping, ReadBytes, load_images, loader_factory

OUTSIDE_TOLERANCE = 1.0  # px a box may pass the image edge (rounding); it is clipped, more is an error


def box_problems(row: LabeledRow, labels: Sequence[str] | None = None) -> list[str]:
    """What is wrong with one row's boxes: zero area, outside the image, a label outside ``labels``."""
    problems = []
    width, height = row.image_size or (float("inf"), float("inf"))
    for box in row.boxes or ():
        where = f"{row.content_hash[:12]} {box}"
        if box.width <= 0 or box.height <= 0:
            problems.append(f"zero-area box {where}")
        elif (
            box.x < -OUTSIDE_TOLERANCE
            or box.y < -OUTSIDE_TOLERANCE
            or box.x + box.width > width + OUTSIDE_TOLERANCE
            or box.y + box.height > height + OUTSIDE_TOLERANCE
        ):
            problems.append(f"box outside the {width}x{height} image {where}")
        if labels is not None and box.label not in labels:
            problems.append(f"label {box.label!r} outside the label set {list(labels)} in {where}")
    return problems


def check_detection_rows(rows: Sequence[LabeledRow], labels: Sequence[str] | None = None) -> ClassMapping:
    """Refuse box data that cannot train and evaluate a detector; list every problem at once. The class
    mapping holds the box labels (natural order); ``labels``, when given, is the project's label set."""
    problems = []
    not_detection = sum(r.boxes is None for r in rows)
    if not_detection:
        problems.append(f"{not_detection} rows have no boxes field (classification rows)")
    for split in SPLITS:
        chosen = [r for r in rows if r.split == split]
        if not chosen:
            problems.append(f"no images in the {split} split")
        elif split != "test" and not any(r.boxes for r in chosen):
            problems.append(f"no boxes in the {split} split (only negatives)")
    bad = [p for r in rows for p in box_problems(r, labels)]
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        problems.append(f"{len(bad)} bad boxes: {shown}")
    found = {b.label for r in rows for b in r.boxes or ()}
    if not found and not not_detection:
        problems.append("no boxes at all")
    if problems:
        raise TrainingDataError(
            "The labeled boxes cannot train a detector: " + "; ".join(problems) + ". To fix this, label more "
            "images with boxes, and fix or delete the named boxes in Label Studio before exporting again."
        )
    return ClassMapping.from_labels(found)


def target_for(row: LabeledRow, mapping: ClassMapping, size: tuple[int, int]) -> dict[str, Any]:
    """The torchvision target of a row: boxes x1y1x2y2 clipped to the image, labels = index + 1."""
    import torch

    width, height = size
    boxes = [
        [
            min(max(b.x, 0.0), width),
            min(max(b.y, 0.0), height),
            min(max(b.x + b.width, 0.0), width),
            min(max(b.y + b.height, 0.0), height),
        ]
        for b in row.boxes or ()
    ]
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([mapping.index(b.label) + 1 for b in row.boxes or ()], dtype=torch.int64),
    }


def pixel_boxes(target: dict[str, Any], labels: Sequence[str]) -> list[PixelBox]:
    """A target's boxes back as ``PixelBox``es (left, top, width, height)."""
    return [
        PixelBox(labels[int(label) - 1], x1, y1, x2 - x1, y2 - y1)
        for (x1, y1, x2, y2), label in zip(target["boxes"].tolist(), target["labels"].tolist(), strict=True)
    ]


def build_detection_transform(train: bool) -> Callable[[Image.Image, dict[str, Any]], Any]:
    """``(image, target) -> (float [0,1] tensor, target)``. Training adds a small affine jitter (shift,
    scale, a few degrees) that moves the boxes with the pixels, and photometric jitter; boxes pushed out
    are clipped, and those left smaller than 2 px dropped with their labels."""
    import torch
    from torchvision.transforms import v2

    steps: list[Any] = [v2.ToImage()]
    if train:
        steps += [
            v2.RandomAffine(degrees=4, translate=(0.06, 0.06), scale=(0.9, 1.1)),
            v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3),
        ]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(2)]
    return v2.Compose(steps)


class DetectionImages:
    """A map-style dataset of one split: ``(image tensor, target)``; images cached decoded."""

    def __init__(
        self,
        rows: Sequence[LabeledRow],
        mapping: ClassMapping,
        transform: Callable[[Image.Image, dict[str, Any]], Any],
        read_bytes: ReadBytes | None = None,
    ) -> None:
        self.rows = list(rows)
        self.mapping = mapping
        self.transform = transform
        self.images = load_images([r.stored_uri for r in self.rows], read_bytes)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[Any, dict[str, Any]]:
        import torch
        from torchvision import tv_tensors

        image = self.images[i]
        target = target_for(self.rows[i], self.mapping, image.size)
        boxes = tv_tensors.BoundingBoxes(
            target["boxes"], format="XYXY", canvas_size=(image.height, image.width)
        )
        tensor, out = self.transform(image, {"boxes": boxes, "labels": target["labels"]})
        return tensor, {"boxes": out["boxes"].as_subclass(torch.Tensor), "labels": out["labels"]}


def collate_detections(batch: list[tuple[Any, dict[str, Any]]]) -> tuple[list[Any], list[dict[str, Any]]]:
    """Images and targets as lists (detectors take images of different sizes)."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


def detection_loader_factory(
    rows: Sequence[LabeledRow],
    mapping: ClassMapping,
    num_workers: int = 0,
    pin_memory: bool = False,
    read_bytes: ReadBytes | None = None,
) -> Callable[[int, int, str], Any]:
    """``make(size, batch size, split)`` → a DataLoader of ``(images, targets)`` lists (``size`` is
    unused: a detector resizes inside), through ``loopline.training.data.loader_factory``'s cache; a last
    training batch of a single image is left out (a detector's BatchNorm on 1x1 maps cannot take it)."""

    def dataset(chosen: Sequence[LabeledRow], size: int, train: bool, read: ReadBytes) -> Any:
        return DetectionImages(chosen, mapping, build_detection_transform(train), read)

    return loader_factory(
        rows, mapping, num_workers, pin_memory, read_bytes, dataset, collate_detections, drop_single=True
    )
