"""Detector outputs and their scores: one place for what a detector says about an image, and for COCO mAP.

The ONNX contract every loopline detector follows (``loopline.training.detection`` exports it; the model
server, the register gate and pre-annotation read it):

- input ``images``: float32 ``[1, 3, H, W]``, RGB in [0, 1], any ``H`` and ``W`` (the detector resizes and
  normalises inside);
- outputs ``boxes`` float32 ``[N, 4]`` (x1, y1, x2, y2 in the input's pixels), ``labels`` int64 ``[N]``
  (class index + 1: 0 is the background and never returned) and ``scores`` float32 ``[N]``;
- ``class_mapping.json`` beside it: ``{"task_type": "detection", "labels": [...], ...}``.

mAP is pycocotools' (the COCO reference implementation), not a re-implementation.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from loopline.data.labeled import PixelBox

if TYPE_CHECKING:
    from PIL import Image

DETECTOR_INPUT = "images"
DETECTOR_OUTPUTS = ("boxes", "labels", "scores")


def detector_input(image: Image.Image) -> np.ndarray:
    """The contract's input, ``[1, 3, H, W]`` float32: the decoded (upright) image as RGB in [0, 1], not
    resized (the detector resizes inside). The model server, the register gate and pre-annotation feed it."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    pixels = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    return np.ascontiguousarray(pixels[None], dtype=np.float32)


@dataclass(frozen=True)
class Detection:
    """One detected object: label, score, and its box in pixels of the original image (left, top, width,
    height)."""

    label: str
    score: float
    x: float
    y: float
    width: float
    height: float

    def box(self) -> PixelBox:
        return PixelBox(self.label, self.x, self.y, self.width, self.height)


def detections_from_outputs(
    boxes: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    class_labels: Sequence[str],
    scale: tuple[float, float] = (1.0, 1.0),
    min_score: float = 0.0,
) -> list[Detection]:
    """The detector's tensors as ``Detection``s, highest score first. ``scale`` maps the input's pixels to
    the original image's (``(original width / input width, original height / input height)``); boxes are
    clipped to nothing smaller than zero. A label outside ``class_labels`` is an error, not a guess."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not len(boxes) == len(labels) == len(scores):
        raise ValueError(
            f"The detector returned {len(boxes)} boxes, {len(labels)} labels and {len(scores)} scores; "
            "they must be as many. Re-export the model with loopline's detector export."
        )
    bad = sorted({int(v) for v in labels if not 1 <= int(v) <= len(class_labels)})
    if bad:
        raise ValueError(
            f"The detector returned class ids {bad}, outside 1..{len(class_labels)} for the labels "
            f"{list(class_labels)}; the model and its class_mapping.json do not belong together."
        )
    sx, sy = scale
    found = []
    for (x1, y1, x2, y2), label, score in zip(boxes, labels, scores, strict=True):
        if score < min_score:
            continue
        x1, y1 = max(0.0, x1), max(0.0, y1)
        found.append(
            Detection(
                class_labels[int(label) - 1],
                float(score),
                float(x1 * sx),
                float(y1 * sy),
                float(max(0.0, x2 - x1) * sx),
                float(max(0.0, y2 - y1) * sy),
            )
        )
    return sorted(found, key=lambda d: -d.score)


@dataclass(frozen=True)
class CocoScores:
    """COCO box mAP over a set of images: mAP@[.5:.95], mAP@.5, and both per class (NaN for a class with
    no true box in these images)."""

    map: float
    map50: float
    per_class: dict[str, tuple[float, float]]  # label -> (AP@[.5:.95], AP@.5)
    images: int


def coco_map(
    truth: Sequence[Sequence[PixelBox]],
    predicted: Sequence[Sequence[Detection]],
    labels: Sequence[str],
    sizes: Sequence[tuple[int, int]] | None = None,
) -> CocoScores:
    """pycocotools' box mAP of ``predicted`` against ``truth``, image by image (the i-th entries belong to
    the same image; an image with no true boxes is a valid negative). ``sizes`` are (width, height)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} images of true boxes but {len(predicted)} of predictions")
    index = {label: i + 1 for i, label in enumerate(labels)}
    images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    results: list[dict[str, object]] = []
    for i, (true_boxes, found) in enumerate(zip(truth, predicted, strict=True)):
        width, height = sizes[i] if sizes else (0, 0)
        images.append({"id": i + 1, "width": width, "height": height})
        for box in true_boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": index[box.label],
                    "bbox": [box.x, box.y, box.width, box.height],
                    "area": box.width * box.height,
                    "iscrowd": 0,
                }
            )
        results += [
            {
                "image_id": i + 1,
                "category_id": index[d.label],
                "bbox": [d.x, d.y, d.width, d.height],
                "score": d.score,
            }
            for d in found
        ]
    if not images:
        raise ValueError("mAP over no images: give at least one image")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        ground = COCO()
        ground.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i, "name": label} for label, i in index.items()],
        }
        ground.createIndex()
        found_coco = ground.loadRes(results) if results else None
        if found_coco is None:  # nothing detected: every AP is 0 where there was something to find
            return _no_detections(annotations, labels, index, len(images))
        evaluator = COCOeval(ground, found_coco, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"]  # [iou thresholds, recall points, classes, areas, max dets]
    per_class = {}
    for label, category in index.items():
        k = evaluator.params.catIds.index(category)
        per_class[label] = (_mean_ap(precision[:, :, k, 0, -1]), _mean_ap(precision[0, :, k, 0, -1]))
    return CocoScores(float(evaluator.stats[0]), float(evaluator.stats[1]), per_class, len(images))


def _mean_ap(precision: np.ndarray) -> float:
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else float("nan")


def _no_detections(
    annotations: list[dict[str, object]], labels: Sequence[str], index: dict[str, int], images: int
) -> CocoScores:
    present = {a["category_id"] for a in annotations}
    per_class = {label: (0.0, 0.0) if index[label] in present else (np.nan, np.nan) for label in labels}
    score = 0.0 if present else -1.0  # pycocotools reports -1 where nothing could be found
    return CocoScores(score, score, per_class, images)
