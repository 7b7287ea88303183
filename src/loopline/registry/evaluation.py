"""Evaluate the artifact that will be served (ONNX, through ONNX Runtime) on a frozen test set: accuracy,
per-class metrics, calibration (expected calibration error) and latency per image."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loopline.training.plots import confusion_matrix, per_class_metrics


@dataclass(frozen=True)
class Prediction:
    """One test image's outcome: its true label, the model's answer and how sure it was."""

    truth: str
    predicted: str
    confidence: float

    @property
    def correct(self) -> bool:
        return self.truth == self.predicted


@dataclass(frozen=True)
class Mistake:
    content_hash: str
    truth: str
    predicted: str
    confidence: float


@dataclass(frozen=True)
class Evaluation:
    """A model on a test set. ``predictions`` (content hash → outcome) pairs two models' evaluations image
    by image, whatever order the images were evaluated in."""

    labels: tuple[str, ...]
    images: int
    accuracy: float
    per_class: list[dict[str, Any]]  # label, precision, recall, f1, support
    ece: float
    latency_ms: float  # median, one image per call (what a request sees)
    test_set: str  # fingerprint of the images evaluated on
    predictions: Mapping[str, Prediction] = field(default_factory=dict)

    @classmethod
    def from_predictions(
        cls,
        labels: tuple[str, ...],
        predictions: Mapping[str, Prediction],
        test_set: str,
        ece: float = 0.0,
        latency_ms: float = 0.0,
    ) -> Evaluation:
        """Accuracy and per-class metrics counted from per-image outcomes."""
        index = {label: i for i, label in enumerate(labels)}
        truth = np.array([index[p.truth] for p in predictions.values()], dtype=np.int64)
        predicted = np.array([index[p.predicted] for p in predictions.values()], dtype=np.int64)
        return cls(
            labels=labels,
            images=len(predictions),
            accuracy=float((truth == predicted).mean()) if len(predictions) else 0.0,
            per_class=per_class_metrics(confusion_matrix(truth, predicted, len(labels)), labels),
            ece=ece,
            latency_ms=latency_ms,
            test_set=test_set,
            predictions=dict(sorted(predictions.items())),
        )

    def recall_of(self, label: str) -> float:
        return next(float(r["recall"]) for r in self.per_class if r["label"] == label)

    def correct(self, label: str | None = None) -> dict[str, bool]:
        """Content hash → right? for every test image (of class ``label`` only, when given)."""
        return {h: p.correct for h, p in self.predictions.items() if label is None or p.truth == label}

    @property
    def mistakes(self) -> list[Mistake]:
        """Wrong answers, the most confident first (the ones worth a look)."""
        wrong = [
            Mistake(h, p.truth, p.predicted, p.confidence)
            for h, p in self.predictions.items()
            if not p.correct
        ]
        return sorted(wrong, key=lambda m: (-m.confidence, m.content_hash))


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
    if len(content_hashes) != len(images) or len(set(content_hashes)) != len(content_hashes):
        raise ValueError(
            f"{len(images)} test images but {len(set(content_hashes))} distinct content hashes among "
            f"{len(content_hashes)}. To fix this, pass one content hash per image, each image once."
        )
    probabilities = softmax(logits)
    predicted = probabilities.argmax(axis=1)
    timings = []
    for i in range(min(latency_samples, len(images))):
        start = time.perf_counter()
        session.run(["logits"], {"image": images[i : i + 1]})
        timings.append(time.perf_counter() - start)
    outcomes = {
        content_hash: Prediction(labels[truth[i]], labels[predicted[i]], float(probabilities[i].max()))
        for i, content_hash in enumerate(content_hashes)
    }
    return Evaluation.from_predictions(
        labels,
        outcomes,
        test_set,
        ece=expected_calibration_error(probabilities, truth),
        latency_ms=1000 * float(np.median(timings)) if timings else 0.0,
    )
