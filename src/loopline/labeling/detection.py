"""Detection labels: boxes from a Label Studio export, box agreement between annotators, and COCO.

Images are mapped by task id (Label Studio's own COCO ``file_name`` values are unreliable relative paths):
the COCO ``image.id`` is the task id and ``file_name`` the stored image URI from the task data.
Each image's boxes for COCO come from its reference annotation: the earliest one that was not cancelled.

Bad input is handled explicitly and counted in ``DetectionSummary.counts`` under its own name:

- a box partly outside the image is clipped to it (``boxes clipped to the image``);
- a box entirely outside the image, with zero area, or with a missing or non-numeric coordinate is
  dropped (``boxes dropped: outside the image`` / ``: zero area`` / ``: malformed``);
- a rotated box becomes its axis-aligned bounds (``rotated boxes: axis-aligned bounds used``), or is
  dropped when the export gives no image size to rotate in (``boxes dropped: rotated, no image size``);
- a label outside the label set is dropped (``unknown labels``, and by label in ``unknown_labels``);
- an annotation with no boxes is a valid negative: the image holds no object (``annotations with no
  boxes (negatives)``), never an error.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from loopline.data.labeled import AnnotationRecord, LabeledRow
from loopline.labeling.agreement import Box, box_agreement
from loopline.labeling.configs import LabelConfig


@dataclass(frozen=True)
class DetectionTask:
    task_id: int
    content_hash: str
    image_uri: str
    width: int | None
    height: int | None
    annotations: dict[int, list[Box]]  # annotation id → boxes (percent), earliest first; cancelled left out
    looked: int = 0  # every annotation on the task, skipped ones included (as ``TiedTask.annotations``)
    # annotation id → who and when; ``label`` holds the annotation's box labels, sorted, comma-separated
    records: dict[int, AnnotationRecord] = field(default_factory=dict)


@dataclass(frozen=True)
class DetectionSummary:
    tasks: tuple[DetectionTask, ...]
    counts: dict[str, int]
    unknown_labels: dict[str, int]


def _number(value: dict[str, Any], key: str) -> float | None:
    raw = value.get(key)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        return None
    return float(raw)


def _unrotated(
    x: float, y: float, w: float, h: float, degrees: float, width: int, height: int
) -> tuple[float, float, float, float]:
    """Axis-aligned bounds (percent) of a box Label Studio rotated by ``degrees`` about its top-left
    corner, in pixels of a ``width`` x ``height`` image (y down, so positive angles turn clockwise)."""
    angle = math.radians(degrees)
    px, py, pw, ph = x * width / 100, y * height / 100, w * width / 100, h * height / 100
    cos, sin = math.cos(angle), math.sin(angle)
    xs = [px + cx * cos - cy * sin for cx, cy in ((0, 0), (pw, 0), (pw, ph), (0, ph))]
    ys = [py + cx * sin + cy * cos for cx, cy in ((0, 0), (pw, 0), (pw, ph), (0, ph))]
    x0, y0 = min(xs) * 100 / width, min(ys) * 100 / height
    return x0, y0, max(xs) * 100 / width - x0, max(ys) * 100 / height - y0


def region_box(
    value: dict[str, Any], label: str, width: int | None, height: int | None, counts: Counter[str]
) -> Box | None:
    """One region's box in percent of the image, clipped to it; ``None`` (counted by reason) when the
    region cannot be a box."""
    numbers = [_number(value, key) for key in ("x", "y", "width", "height")]
    if any(n is None for n in numbers):
        counts["boxes dropped: malformed"] += 1
        return None
    x, y, w, h = (float(n) for n in numbers if n is not None)
    rotation = _number(value, "rotation") or 0.0
    if w <= 0 or h <= 0:
        counts["boxes dropped: zero area"] += 1
        return None
    if rotation % 360:
        if not width or not height:
            counts["boxes dropped: rotated, no image size"] += 1
            return None
        counts["rotated boxes: axis-aligned bounds used"] += 1
        x, y, w, h = _unrotated(x, y, w, h, rotation, width, height)
    x0, y0, x1, y1 = max(0.0, x), max(0.0, y), min(100.0, x + w), min(100.0, y + h)
    if x1 <= x0 or y1 <= y0:
        counts["boxes dropped: outside the image"] += 1
        return None
    if (x0, y0, x1, y1) != (x, y, x + w, y + h):
        counts["boxes clipped to the image"] += 1
    return Box(label, x0, y0, x1 - x0, y1 - y0)


def _annotation_boxes(
    result: list[dict[str, Any]],
    config: LabelConfig,
    size: tuple[int | None, int | None],
    counts: Counter[str],
    unknown: Counter[str],
) -> tuple[list[Box], tuple[int | None, int | None]]:
    boxes = []
    width, height = size
    for region in result:
        if region.get("from_name") != config.control_name or region.get("type") != config.result_type:
            continue
        width, height = region.get("original_width", width), region.get("original_height", height)
        value = region.get("value") or {}
        for label in value.get(config.result_type, []):
            if label not in config.labels:
                counts["unknown labels"] += 1
                unknown[label] += 1
                continue
            box = region_box(value, label, width, height, counts)
            if box is not None:
                boxes.append(box)
    return boxes, (width, height)


def parse_detection_export(tasks: list[dict[str, Any]], config: LabelConfig) -> DetectionSummary:
    counts: Counter[str] = Counter()
    unknown: Counter[str] = Counter()
    parsed = []
    for task in tasks:
        counts["tasks"] += 1
        data = task.get("data") or {}
        size: tuple[int | None, int | None] = (None, None)
        annotations: dict[int, list[Box]] = {}
        records: dict[int, AnnotationRecord] = {}
        looked = 0
        for annotation in sorted(task.get("annotations", []), key=lambda a: a.get("created_at") or ""):
            counts["annotations"] += 1
            looked += 1
            if annotation.get("was_cancelled"):
                counts["skipped or cancelled"] += 1
                continue
            boxes, size = _annotation_boxes(annotation.get("result") or [], config, size, counts, unknown)
            if not boxes:
                counts["annotations with no boxes (negatives)"] += 1
            counts["boxes"] += len(boxes)
            annotation_id = int(annotation["id"])
            annotations[annotation_id] = boxes
            records[annotation_id] = AnnotationRecord(
                annotation_id,
                annotation.get("completed_by"),
                ",".join(sorted(box.label for box in boxes)),
                annotation.get("created_at"),
            )
        parsed.append(
            DetectionTask(
                int(task["id"]),
                data.get("content_hash", ""),
                data.get("image", ""),
                *size,
                annotations,
                looked,
                records,
            )
        )
    return DetectionSummary(tuple(parsed), dict(counts), dict(unknown))


@dataclass(frozen=True)
class DetectionAgreement:
    """IoU-matched F1 averaged over every pair of annotations of the same image."""

    f1: float | None  # None: no image has two valid annotations
    per_label: dict[str, float]  # label → mean F1 over the pairs where either annotation has the label
    pairs: int
    images: int  # images with two or more valid annotations
    single: int  # images with exactly one valid annotation (labeled, not in the agreement)
    threshold: float

    def as_dict(self) -> dict[str, float]:
        result = {"f1": float("nan") if self.f1 is None else self.f1, "pairs": float(self.pairs)}
        result.update({f"f1[{k}]": v for k, v in sorted(self.per_label.items())})
        return result


def detection_agreement_report(summary: DetectionSummary, threshold: float = 0.5) -> DetectionAgreement:
    """Mean IoU-matched F1 (``box_agreement``) over every pair of annotations of the same image, overall
    and per label; two annotations that both hold no box agree (F1 = 1)."""
    overall: list[float] = []
    per_label: dict[str, list[float]] = {}
    for task in summary.tasks:
        for (_, a), (_, b) in combinations(task.annotations.items(), 2):
            overall.append(box_agreement(a, b, threshold).f1)
            for label in {box.label for box in a + b}:
                only = [box for box in a if box.label == label], [box for box in b if box.label == label]
                per_label.setdefault(label, []).append(box_agreement(*only, threshold).f1)
    return DetectionAgreement(
        sum(overall) / len(overall) if overall else None,
        {k: sum(v) / len(v) for k, v in sorted(per_label.items())},
        len(overall),
        sum(len(t.annotations) >= 2 for t in summary.tasks),
        sum(len(t.annotations) == 1 for t in summary.tasks),
        threshold,
    )


def detection_agreement(summary: DetectionSummary, threshold: float = 0.5) -> dict[str, float]:
    """``detection_agreement_report`` as a flat dict: ``f1`` (NaN without pairs), ``pairs``, ``f1[label]``."""
    return detection_agreement_report(summary, threshold).as_dict()


def to_coco(
    summary: DetectionSummary,
    labels: tuple[str, ...],
    sizes: Mapping[str, tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """COCO detection JSON from each image's reference annotation (boxes in pixels); an image whose
    reference annotation holds no box is in ``images`` with no annotation (a negative). ``sizes``
    (content hash → (width, height), e.g. from the collected manifest) sizes the images the export does
    not (Label Studio records the size only with a box); an image with no known size is left out."""
    categories = [{"id": i, "name": label} for i, label in enumerate(labels)]
    index = {label: i for i, label in enumerate(labels)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for task in summary.tasks:
        known = (sizes or {}).get(task.content_hash)
        width, height = known if known else (task.width, task.height)
        if not task.annotations or width is None or height is None:
            continue
        images.append(
            {
                "id": task.task_id,
                "file_name": task.image_uri,
                "width": width,
                "height": height,
                "content_hash": task.content_hash,
            }
        )
        for box in next(iter(task.annotations.values())):
            w, h = box.width * width / 100, box.height * height / 100
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": task.task_id,
                    "category_id": index[box.label],
                    "bbox": [box.x * width / 100, box.y * height / 100, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    return {"images": images, "annotations": annotations, "categories": categories}


def labeled_coco(rows: Sequence[LabeledRow], labels: Sequence[str]) -> dict[str, Any]:
    """COCO detection JSON of a labeled manifest's detection rows: the consensus boxes (pixels), image ids
    the Label Studio task ids, each image's split and content hash kept beside it; rows without boxes
    (classification) are left out, rows with an empty box tuple are negatives."""
    index = {label: i for i, label in enumerate(labels)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for row in sorted(rows, key=lambda r: r.task_id):
        if row.boxes is None or row.image_size is None:
            continue
        width, height = row.image_size
        images.append(
            {
                "id": row.task_id,
                "file_name": row.stored_uri,
                "width": width,
                "height": height,
                "content_hash": row.content_hash,
                "split": row.split,
            }
        )
        annotations += [
            {
                "id": len(annotations) + k + 1,
                "image_id": row.task_id,
                "category_id": index[box.label],
                "bbox": [box.x, box.y, box.width, box.height],
                "area": box.width * box.height,
                "iscrowd": 0,
            }
            for k, box in enumerate(row.boxes)
        ]
    categories = [{"id": i, "name": label} for label, i in index.items()]
    return {"images": images, "annotations": annotations, "categories": categories}
