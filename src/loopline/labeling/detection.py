"""Detection labels: boxes from a Label Studio export, box agreement between annotators, and COCO.

Images are mapped by task id (Label Studio's own COCO ``file_name`` values are unreliable relative paths):
the COCO ``image.id`` is the task id and ``file_name`` the stored image URI from the task data.
Each image's boxes come from its reference annotation: the earliest one that was not cancelled.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from loopline.labeling.agreement import Box, box_agreement
from loopline.labeling.configs import LabelConfig


@dataclass(frozen=True)
class DetectionTask:
    task_id: int
    content_hash: str
    image_uri: str
    width: int | None
    height: int | None
    annotations: dict[int, list[Box]]  # annotation id → boxes, earliest first


@dataclass(frozen=True)
class DetectionSummary:
    tasks: tuple[DetectionTask, ...]
    counts: dict[str, int]
    unknown_labels: dict[str, int]


def parse_detection_export(tasks: list[dict[str, Any]], config: LabelConfig) -> DetectionSummary:
    counts: Counter[str] = Counter()
    unknown: Counter[str] = Counter()
    parsed = []
    for task in tasks:
        counts["tasks"] += 1
        data = task.get("data") or {}
        width = height = None
        annotations: dict[int, list[Box]] = {}
        for annotation in sorted(task.get("annotations", []), key=lambda a: a.get("created_at") or ""):
            counts["annotations"] += 1
            if annotation.get("was_cancelled"):
                counts["skipped or cancelled"] += 1
                continue
            boxes = []
            for region in annotation.get("result") or []:
                if region.get("from_name") != config.control_name or region.get("type") != config.result_type:
                    continue
                width, height = region.get("original_width", width), region.get("original_height", height)
                value = region.get("value", {})
                for label in value.get(config.result_type, []):
                    if label not in config.labels:
                        counts["unknown labels"] += 1
                        unknown[label] += 1
                        continue
                    boxes.append(Box(label, value["x"], value["y"], value["width"], value["height"]))
            if not boxes:
                counts["empty results"] += 1
            counts["boxes"] += len(boxes)
            annotations[int(annotation["id"])] = boxes
        parsed.append(
            DetectionTask(
                int(task["id"]),
                data.get("content_hash", ""),
                data.get("image", ""),
                width,
                height,
                annotations,
            )
        )
    return DetectionSummary(tuple(parsed), dict(counts), dict(unknown))


def detection_agreement(summary: DetectionSummary, threshold: float = 0.5) -> dict[str, float]:
    """Mean IoU-matched F1 over every pair of annotations of the same image, overall and per label."""
    overall: list[float] = []
    per_label: dict[str, list[float]] = {}
    for task in summary.tasks:
        for (_, a), (_, b) in combinations(task.annotations.items(), 2):
            overall.append(box_agreement(a, b, threshold).f1)
            for label in {box.label for box in a + b}:
                only = [box for box in a if box.label == label], [box for box in b if box.label == label]
                per_label.setdefault(label, []).append(box_agreement(*only, threshold).f1)
    result = {"f1": sum(overall) / len(overall) if overall else float("nan"), "pairs": float(len(overall))}
    result.update({f"f1[{k}]": sum(v) / len(v) for k, v in sorted(per_label.items())})
    return result


def to_coco(summary: DetectionSummary, labels: tuple[str, ...]) -> dict[str, Any]:
    """COCO detection JSON from each image's reference annotation (boxes in pixels)."""
    categories = [{"id": i, "name": label} for i, label in enumerate(labels)]
    index = {label: i for i, label in enumerate(labels)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for task in summary.tasks:
        if not task.annotations or task.width is None or task.height is None:
            continue
        images.append(
            {
                "id": task.task_id,
                "file_name": task.image_uri,
                "width": task.width,
                "height": task.height,
                "content_hash": task.content_hash,
            }
        )
        for box in next(iter(task.annotations.values())):
            w, h = box.width * task.width / 100, box.height * task.height / 100
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": task.task_id,
                    "category_id": index[box.label],
                    "bbox": [box.x * task.width / 100, box.y * task.height / 100, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    return {"images": images, "annotations": annotations, "categories": categories}
