"""Evaluate a challenger detector and the champion on the challenger's frozen test split, image by image.

Like ``loopline.registry.evaluate`` for classifiers: the labeled rows (detection rows carry ``boxes``), the
two models' files and a way to open stored images (``ImageReader(settings).open``: EXIF applied). The
champion must be comparable (same labels, never trained on these test images: the same checks as for
classifiers). Both ONNX detectors (the contract in ``loopline.detections``) run through ONNX Runtime on the
decoded images at their own size; COCO mAP comes from pycocotools. The challenger's worst images (lowest
IoU-matched F1 against the truth) come back drawn, with predicted and true boxes, for the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from loopline.data.labeled import PixelBox
from loopline.detections import (
    DETECTOR_INPUT,
    DETECTOR_OUTPUTS,
    CocoScores,
    Detection,
    coco_map,
    detections_from_outputs,
    detector_input,
)
from loopline.errors import RegistryError
from loopline.labeling.agreement import Box, box_agreement
from loopline.registry.artifacts import ModelFiles
from loopline.registry.detection_pictures import draw_detections
from loopline.registry.evaluate import _check_comparable, fingerprint_test_set
from loopline.registry.gate import IncomparableModels
from loopline.registry.report import GALLERY

if TYPE_CHECKING:
    from PIL import Image

MATCH_IOU = 0.5  # a predicted box finds a true one at this IoU (same label)
SHOWN_SCORE = 0.5  # detections at least this sure count in the per-image F1 and are drawn


class DetectionRow(Protocol):
    """What detector evaluation needs of a labeled-manifest row."""

    @property
    def content_hash(self) -> str: ...
    @property
    def stored_uri(self) -> str: ...
    @property
    def split(self) -> str: ...
    @property
    def boxes(self) -> tuple[PixelBox, ...] | None: ...


@dataclass(frozen=True)
class DetectionEvaluation:
    """A detector on a test set; per-image mappings are keyed by content hash (sorted)."""

    labels: tuple[str, ...]
    images: int
    scores: CocoScores
    latency_ms: float  # median per image
    test_set: str  # fingerprint of the images evaluated on
    truth: Mapping[str, tuple[PixelBox, ...]] = field(default_factory=dict)
    predictions: Mapping[str, tuple[Detection, ...]] = field(default_factory=dict)
    sizes: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # (width, height)

    def image_f1(self, min_score: float = SHOWN_SCORE, threshold: float = MATCH_IOU) -> dict[str, float]:
        """Content hash → F1 of the detections at least ``min_score`` sure against the true boxes."""
        return {
            key: box_agreement(
                [_box(b) for b in self.truth[key]],
                [_box(d.box()) for d in found if d.score >= min_score],
                threshold,
            ).f1
            for key, found in self.predictions.items()
        }

    def worst(self, count: int = GALLERY, min_score: float = SHOWN_SCORE) -> list[tuple[str, float]]:
        """The ``count`` images with the lowest per-image F1 below 1 (ties by content hash), with their F1:
        the images where the detector misses, invents or misplaces a box."""
        imperfect = [(key, f1) for key, f1 in self.image_f1(min_score).items() if f1 < 1]
        return sorted(imperfect, key=lambda kv: (kv[1], kv[0]))[:count]


def _box(box: PixelBox) -> Box:
    return Box(box.label, box.x, box.y, box.width, box.height)


@dataclass(frozen=True)
class DetectionEvaluations:
    challenger: DetectionEvaluation
    champion: DetectionEvaluation | None  # None: no champion yet
    champion_version: str | None
    pictures: dict[str, bytes] = field(default_factory=dict)  # content hash → PNG of the worst images


def evaluate_detectors(
    rows: Sequence[DetectionRow],
    challenger: ModelFiles,
    champion: ModelFiles | None,
    champion_version: str | None,
    open_image: Callable[[str], Image.Image],
) -> DetectionEvaluations:
    """Both detectors through ONNX Runtime on the ``test`` rows of ``rows`` (see the module docstring)."""
    test = _test_rows(rows, challenger.labels)
    hashes = [r.content_hash for r in test]
    if champion is not None:
        if not champion.detector:
            raise IncomparableModels(
                f"The champion v{champion_version} is a classifier and the challenger a detector: they "
                "cannot be compared. To fix this, register the detector under a new model name."
            )
        _check_comparable(champion, challenger, set(hashes), f"v{champion_version}")
    pictures = {r.content_hash: open_image(r.stored_uri) for r in test}
    truth = {r.content_hash: tuple(r.boxes or ()) for r in test}
    fingerprint = fingerprint_test_set(hashes)
    evaluation = evaluate_detector_onnx(challenger.onnx, pictures, truth, challenger.labels, fingerprint)
    return DetectionEvaluations(
        challenger=evaluation,
        champion=(
            evaluate_detector_onnx(champion.onnx, pictures, truth, champion.labels, fingerprint)
            if champion is not None
            else None
        ),
        champion_version=champion_version if champion is not None else None,
        pictures={
            key: draw_detections(pictures[key], truth[key], evaluation.predictions[key], SHOWN_SCORE)
            for key, _ in evaluation.worst()
        },
    )


def _test_rows(rows: Sequence[DetectionRow], labels: tuple[str, ...]) -> list[DetectionRow]:
    test = [r for r in rows if r.split == "test"]
    if not test:
        raise RegistryError(
            "The labeled manifest has no test split, so no detector can be judged. To fix this, label more "
            "images (raise the label budget) so that the test split gets images."
        )
    if any(r.boxes is None for r in test):
        raise RegistryError(
            "The labeled manifest's test rows carry no boxes: it was labeled for classification. To fix "
            "this, evaluate a detector on a labeled version made with task_type='detection'."
        )
    hashes = [r.content_hash for r in test]
    if len(set(hashes)) != len(hashes):
        raise RegistryError(
            f"The test split lists {len(hashes) - len(set(hashes))} images twice (same content hash). To "
            "fix this, rebuild the labeled manifest from a deduplicated dataset version."
        )
    unknown = sorted({b.label for r in test for b in r.boxes or ()} - set(labels))
    if unknown:
        raise RegistryError(
            f"The test split holds boxes labeled {unknown} the detector does not predict ({list(labels)}). "
            "To fix this, train on the labeled version that is evaluated."
        )
    return test


def evaluate_detector_onnx(
    model_path: Path,
    pictures: Mapping[str, Image.Image],
    truth: Mapping[str, tuple[PixelBox, ...]],
    labels: tuple[str, ...],
    test_set: str,
) -> DetectionEvaluation:
    """Run the ONNX detector at ``model_path`` on each picture (one image per call, at its own size, as
    served) and score its detections against ``truth`` (both keyed by content hash) with COCO mAP."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    keys = sorted(pictures)
    predictions: dict[str, tuple[Detection, ...]] = {}
    timings = []
    for key in keys:
        start = time.perf_counter()
        boxes, classes, scores = session.run(
            list(DETECTOR_OUTPUTS), {DETECTOR_INPUT: detector_input(pictures[key])}
        )
        timings.append(time.perf_counter() - start)
        try:
            predictions[key] = tuple(detections_from_outputs(boxes, classes, scores, labels))
        except ValueError as exc:
            raise RegistryError(f"The detector at {model_path}: {exc}") from exc
    sizes = {key: pictures[key].size for key in keys}
    return DetectionEvaluation(
        labels=labels,
        images=len(keys),
        scores=coco_map(
            [truth[k] for k in keys], [predictions[k] for k in keys], labels, [sizes[k] for k in keys]
        ),
        latency_ms=1000 * float(np.median(timings)) if timings else 0.0,
        test_set=test_set,
        truth={k: truth[k] for k in keys},
        predictions=predictions,
        sizes=sizes,
    )
