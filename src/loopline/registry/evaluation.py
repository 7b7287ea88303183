"""Evaluate the artifact that will be served (ONNX, through ONNX Runtime) on a frozen test set: accuracy,
per-class metrics, calibration (expected calibration error) and latency per image."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loopline.training.plots import confusion_matrix, per_class_metrics


@dataclass(frozen=True)
class Mistake:
    content_hash: str
    truth: str
    predicted: str
    confidence: float


@dataclass(frozen=True)
class Evaluation:
    labels: tuple[str, ...]
    images: int
    accuracy: float
    per_class: list[dict[str, Any]]  # label, precision, recall, f1, support
    ece: float
    latency_ms: float  # median, one image per call (what a request sees)
    test_set: str  # fingerprint of the images evaluated on
    mistakes: list[Mistake] = field(default_factory=list)

    def recall_of(self, label: str) -> float:
        return next(float(r["recall"]) for r in self.per_class if r["label"] == label)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def expected_calibration_error(probabilities: np.ndarray, truth: np.ndarray, bins: int = 15) -> float:
    """ECE: the support-weighted mean |accuracy - confidence| over equal-width confidence bins."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == truth
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for low, high in itertools.pairwise(edges):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)


def onnx_logits(session: Any, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of an ONNX Runtime session (input ``image``, output ``logits``) over ``images`` in batches."""
    batches = [
        session.run(["logits"], {"image": images[i : i + batch_size]})[0]
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(batches) if batches else np.zeros((0, 0), dtype=np.float32)


def evaluate_onnx(
    model_path: Path,
    images: np.ndarray,
    truth: np.ndarray,
    labels: tuple[str, ...],
    content_hashes: list[str],
    test_set: str,
    latency_samples: int = 50,
    batch_size: int = 256,
) -> Evaluation:
    """``images``: N x 3 x S x S float32, already transformed as for serving; ``truth``: label indices."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    logits = onnx_logits(session, images, batch_size)
    if logits.shape[1] != len(labels):
        raise ValueError(
            f"The model at {model_path} has {logits.shape[1]} outputs but the test set has {len(labels)} "
            f"labels {list(labels)}. To fix this, evaluate models trained on the same label set."
        )
    probabilities = softmax(logits)
    predicted = probabilities.argmax(axis=1)
    timings = []
    for i in range(min(latency_samples, len(images))):
        start = time.perf_counter()
        session.run(["logits"], {"image": images[i : i + 1]})
        timings.append(time.perf_counter() - start)
    matrix = confusion_matrix(truth, predicted, len(labels))
    mistakes = [
        Mistake(content_hashes[i], labels[truth[i]], labels[predicted[i]], float(probabilities[i].max()))
        for i in np.flatnonzero(predicted != truth)
    ]
    mistakes.sort(key=lambda m: -m.confidence)  # confident mistakes first: the ones worth a look
    return Evaluation(
        labels=labels,
        images=len(images),
        accuracy=float((predicted == truth).mean()) if len(images) else 0.0,
        per_class=per_class_metrics(matrix, labels),
        ece=expected_calibration_error(probabilities, truth),
        latency_ms=1000 * float(np.median(timings)) if timings else 0.0,
        test_set=test_set,
        mistakes=mistakes,
    )
