"""Round 2 and later: the champion scores the unlabeled images; active learning picks what people label
next, and the champion's answers go along as pre-annotations (functions over arrays, and the batched
scoring of stored images through a caller's image reader).

Diversity is measured on 8x8 grey thumbnails of the images (what benchmarks/active_learning.py measured:
margin x k-center with pixel embeddings needed 0.43x the labels of random selection on the digits).

A detector (the ONNX contract of ``loopline.detections``) scores each image at its own decoded size, one
image at a time; its boxes are in that image's pixels, ready for ``detection_prediction``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from loopline.detections import Detection
from loopline.labeling.active import DetectionUncertainty, select_batch, select_detection_batch
from loopline.labeling.configs import LabelConfig
from loopline.labeling.predictions import detection_prediction, validate_predictions
from loopline.registry.evaluation import onnx_logits, softmax

ReadImage = Callable[[str], Image.Image]  # stored URI -> upright RGB image (``ImageReader.open``)
READ_THREADS = 8  # concurrent S3 reads: round trips, not decoding, dominate the time


@dataclass(frozen=True)
class Scored:
    probabilities: np.ndarray  # (n, classes)
    embeddings: np.ndarray  # (n, 64)


def thumbnail(image: Image.Image) -> np.ndarray:
    """64 values in [0, 1]: the image as an 8x8 grey thumbnail (the diversity embedding)."""
    grey = image.convert("L").resize((8, 8), Image.Resampling.BILINEAR)
    return np.asarray(grey, dtype=np.float32).ravel() / 255


def thumbnail_embeddings(images: Iterable[Image.Image]) -> np.ndarray:
    rows = [thumbnail(i) for i in images]
    return np.stack(rows) if rows else np.zeros((0, 64), dtype=np.float32)


def read_images(uris: Sequence[str], read_image: ReadImage) -> list[Image.Image]:
    """``read_image`` over ``uris`` in order; S3 reads in parallel threads."""
    if not any(uri.startswith("s3://") for uri in uris):
        return [read_image(uri) for uri in uris]
    with ThreadPoolExecutor(READ_THREADS) as pool:
        return list(pool.map(read_image, uris))


def stored_thumbnails(uris: Sequence[str], read_image: ReadImage, batch_size: int = 256) -> np.ndarray:
    """Thumbnail embeddings of stored images, read ``batch_size`` at a time (never all in memory)."""
    parts = [
        thumbnail_embeddings(read_images(uris[start : start + batch_size], read_image))
        for start in range(0, len(uris), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 64), dtype=np.float32)


def score_stored_images(
    onnx_path: Path, input_size: int, uris: Sequence[str], read_image: ReadImage, batch_size: int = 256
) -> Scored:
    """Class probabilities of the ONNX model (serving preprocessing at ``input_size``) and thumbnail
    embeddings of the stored images, ``batch_size`` images in memory at a time."""
    import onnxruntime as ort

    from loopline.serving.preprocess import preprocess_batch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    probabilities, embeddings = [], []
    for start in range(0, len(uris), batch_size):
        images = read_images(uris[start : start + batch_size], read_image)
        probabilities.append(softmax(onnx_logits(session, preprocess_batch(images, input_size))))
        embeddings.append(thumbnail_embeddings(images))
    if not probabilities:
        return Scored(np.zeros((0, 0)), np.zeros((0, 64), dtype=np.float32))
    return Scored(np.concatenate(probabilities), np.concatenate(embeddings))


def choose_for_labeling(
    candidates: Scored, labeled_embeddings: np.ndarray, budget: int, seed: int
) -> list[int]:
    """Indices of ``min(budget, candidates)`` distinct candidates to label: margin uncertainty x k-center
    diversity from the labeled set."""
    selection = select_batch(
        candidates.probabilities,
        candidates.embeddings,
        budget,
        uncertainty="margin",
        diversity="kcenter",
        labeled_embeddings=labeled_embeddings if len(labeled_embeddings) else None,
        seed=seed,
    )
    return list(selection.indices)


@dataclass(frozen=True)
class Detected:
    """A detector's boxes on stored images, with what pre-annotation and selection need alongside."""

    detections: tuple[tuple[Detection, ...], ...]  # per image, highest score first, in image pixels
    sizes: tuple[tuple[int, int], ...]  # per image (width, height) of the decoded image
    embeddings: np.ndarray  # (n, 64) thumbnails, the diversity embedding


def detect_stored_images(
    onnx_path: Path,
    class_labels: Sequence[str],
    uris: Sequence[str],
    read_image: ReadImage,
    batch_size: int = 256,
    min_score: float = 0.0,
) -> Detected:
    """The detector's boxes (scoring at least ``min_score``) on each stored image, its decoded size and
    its thumbnail embedding; ``batch_size`` images read (and in memory) at a time, run one by one at
    their own size. ``class_labels`` are the detector's classes in output order (class_mapping.json).

    Raises:
        ModelLoadError: the model does not follow the detector contract (``loopline.detections``).
    """
    import onnxruntime as ort

    from loopline.detections import detector_input
    from loopline.serving.detector import load_detector

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    labels = tuple(class_labels)
    detector = load_detector(onnx_path, session, onnx_path.stem, "pre-annotation", labels)
    detections: list[tuple[Detection, ...]] = []
    sizes: list[tuple[int, int]] = []
    embeddings = []
    for start in range(0, len(uris), batch_size):
        images = read_images(uris[start : start + batch_size], read_image)
        for image in images:
            found = detector.detect(detector_input(image)).detections(labels, min_score)
            detections.append(tuple(found))
            sizes.append(image.size)
        embeddings.append(thumbnail_embeddings(images))
    return Detected(
        tuple(detections),
        tuple(sizes),
        np.concatenate(embeddings) if embeddings else np.zeros((0, 64), dtype=np.float32),
    )


def choose_images_by_boxes(
    candidates: Detected,
    labeled_embeddings: np.ndarray,
    budget: int,
    seed: int,
    keys: Sequence[str] | None = None,
    uncertainty: DetectionUncertainty = "least_confident",
) -> list[int]:
    """Indices of ``min(budget, candidates)`` distinct candidates to label: box uncertainty x k-center
    diversity from the labeled set; the same picks whatever the candidates' order (``keys``, e.g.
    content hashes, break ties)."""
    selection = select_detection_batch(
        candidates.detections,
        candidates.embeddings,
        budget,
        uncertainty,
        "kcenter",
        labeled_embeddings if len(labeled_embeddings) else None,
        keys,
        seed,
    )
    return list(selection.indices)


def box_preannotations(
    config: LabelConfig,
    candidates: Detected,
    picks: Sequence[int],
    keys: Sequence[str],
    model_version: str,
    min_score: float,
) -> dict[str, dict[str, Any]]:
    """Label Studio predictions of the picked candidates (task key -> prediction), validated against
    ``config`` and each image's size; a picked image with no box at or above ``min_score`` gets none."""
    predictions = {}
    for i in picks:
        prediction = detection_prediction(
            config, candidates.detections[i], candidates.sizes[i], model_version, min_score
        )
        if prediction is not None:
            predictions[keys[i]] = prediction.as_dict()
    validate_predictions(config, list(predictions.items()), {keys[i]: candidates.sizes[i] for i in picks})
    return predictions
