"""Detector models in the model server (``class_mapping.json`` with ``"task_type": "detection"``).

The ONNX contract is ``loopline.detections``': one image ``images`` float32 ``[1, 3, H, W]`` RGB in [0, 1]
of any size (the detector resizes and normalises inside) → ``boxes`` ``[N, 4]`` (x1, y1, x2, y2 in the
input's pixels), ``labels`` ``[N]`` (class index + 1) and ``scores`` ``[N]``. The server feeds the decoded
image unresized, so the boxes are already in the original image's pixels. A detector runs one image per
session call: ``detect_batch`` runs each image of a batch alone, so the micro-batcher may group images of
one size without ever stacking them into one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loopline.detections import (
    DETECTOR_INPUT,
    DETECTOR_OUTPUTS,
    Detection,
    detections_from_outputs,
)
from loopline.errors import ModelLoadError

SMOKE_SIZE = (48, 64)  # height, width of the zero image the smoke check runs


@dataclass(frozen=True)
class DetectorOutput:
    """One image's detector tensors, as the model returned them."""

    boxes: np.ndarray  # [N, 4] float32, x1 y1 x2 y2 in input pixels
    labels: np.ndarray  # [N] int64, class index + 1
    scores: np.ndarray  # [N] float32

    def detections(self, class_labels: Sequence[str], min_score: float) -> list[Detection]:
        """The boxes scoring at least ``min_score``, highest first (left, top, width, height)."""
        return detections_from_outputs(
            self.boxes, self.labels, self.scores, class_labels, min_score=min_score
        )


@dataclass(frozen=True)
class LoadedDetector:
    """A detector version ready to answer: its warm session and its labels (``labels[i]`` is class id i+1)."""

    name: str
    version: str
    labels: tuple[str, ...]
    session: Any  # onnxruntime.InferenceSession

    def detect(self, image: np.ndarray) -> DetectorOutput:
        """The tensors for one preprocessed image (``[1, 3, H, W]`` or ``[3, H, W]`` float32 in [0, 1])."""
        inputs = np.ascontiguousarray(image.reshape(1, *image.shape[-3:]), dtype=np.float32)
        boxes, labels, scores = self.session.run(list(DETECTOR_OUTPUTS), {DETECTOR_INPUT: inputs})
        return DetectorOutput(
            np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            np.asarray(labels, dtype=np.int64).reshape(-1),
            np.asarray(scores, dtype=np.float32).reshape(-1),
        )

    def detect_batch(self, batch: np.ndarray) -> list[DetectorOutput]:
        """``detect`` of each image of ``batch`` (``[N, 3, H, W]``), one session call each."""
        return [self.detect(image) for image in batch]


def load_detector(
    onnx: Path, session: Any, name: str, version: str, labels: tuple[str, ...]
) -> LoadedDetector:
    """The detector in ``session`` (opened on ``onnx``), its inputs and outputs checked against the
    contract and smoke-checked on a zero image.

    Raises:
        ModelLoadError: the model does not follow the detector contract or fails on a zero image.
    """
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    missing = [n for n in DETECTOR_OUTPUTS if n not in outputs]
    if inputs != [DETECTOR_INPUT] or missing:
        raise ModelLoadError(
            f"{onnx} has inputs {inputs} and outputs {outputs}, but class_mapping.json says it is a "
            f"detector, which takes one input {DETECTOR_INPUT!r} and returns {list(DETECTOR_OUTPUTS)}. "
            "To fix this, re-export it with loopline's detector export, or register a classifier's "
            'mapping without "task_type": "detection".'
        )
    model = LoadedDetector(name, version, labels, session)
    _smoke_check(model, onnx)
    return model


def _smoke_check(model: LoadedDetector, onnx: Path) -> None:
    """Warm-up on a zero image: tensors of matching lengths, finite, class ids within the labels."""
    height, width = SMOKE_SIZE
    try:
        found = model.detect(np.zeros((1, 3, height, width), dtype=np.float32))
        found.detections(model.labels, min_score=0.0)  # class ids outside the labels raise ValueError
    except Exception as exc:  # onnxruntime errors, or outputs that do not fit the labels
        raise ModelLoadError(
            f"{onnx} fails as a detector on a 1 x 3 x {height} x {width} zero image ({type(exc).__name__}: "
            f"{exc}). To fix this, re-export the detector with dynamic image size (loopline's detector "
            "export) and register it with the class mapping it was trained with."
        ) from exc
    if not (np.isfinite(found.boxes).all() and np.isfinite(found.scores).all()):
        raise ModelLoadError(
            f"{onnx} gives non-finite boxes or scores on a zero image. To fix this, retrain or re-export it."
        )
