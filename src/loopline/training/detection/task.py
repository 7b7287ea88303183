"""The detection task for ``loopline.training.engine.fit``: the detection reference's step (targets as
dicts, ``loss_dict = model(images, targets)``, the sum of the model's own losses) and its evaluation by
COCO mAP@[.5:.95] (pycocotools, through ``loopline.detections.coco_map``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loopline.data.labeled import PixelBox
from loopline.detections import CocoScores, Detection, coco_map, detections_from_outputs
from loopline.training.detection.data import pixel_boxes
from loopline.training.engine import Evaluation, TrainConfig


@dataclass(frozen=True)
class DetectionResults:
    """A detector on a loader: its detections, the true boxes and the image sizes (width, height), image
    by image, and their COCO scores."""

    predicted: list[list[Detection]]
    truth: list[list[PixelBox]]
    sizes: list[tuple[int, int]]
    scores: CocoScores


class DetectionTask:
    """Trains on ``(images, targets)`` list batches; scored by COCO mAP@[.5:.95]. Detectors return losses
    only in training mode, so the validation loss is NaN."""

    score_name = "map"

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = tuple(labels)

    def loss(self, net: Any, batch: Any, config: TrainConfig) -> tuple[Any, int]:
        images, targets = batch
        device = config.device
        images = [image.to(device, non_blocking=True) for image in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        losses = net(images, targets)
        return sum(losses.values()), len(images)

    def evaluate(self, model: Any, loader: Any, device: str) -> Evaluation:
        results = detect(model, loader, device, self.labels)
        return Evaluation(float("nan"), results.scores.map, results)


def detect(model: Any, loader: Any, device: str, labels: Sequence[str]) -> DetectionResults:
    """Run ``model`` over ``loader`` with no gradients and score it with COCO mAP (every detection the
    model returns counts; mAP ranks them by score)."""
    import torch

    model.eval()
    predicted: list[list[Detection]] = []
    truth: list[list[PixelBox]] = []
    sizes: list[tuple[int, int]] = []
    with torch.inference_mode():
        for images, targets in loader:
            outputs = model([image.to(device) for image in images])
            for image, target, out in zip(images, targets, outputs, strict=True):
                predicted.append(
                    detections_from_outputs(
                        out["boxes"].float().cpu().numpy(),
                        out["labels"].cpu().numpy(),
                        out["scores"].float().cpu().numpy(),
                        labels,
                    )
                )
                truth.append(pixel_boxes(target, labels))
                sizes.append((int(image.shape[-1]), int(image.shape[-2])))
    return DetectionResults(predicted, truth, sizes, coco_map(truth, predicted, labels, sizes))
