"""Round 2 and later: the champion scores the unlabeled images; active learning picks what people label
next, and the champion's answers go along as pre-annotations (pure functions over arrays).

Diversity is measured on 8x8 grey thumbnails of the images (what benchmarks/active_learning.py measured:
margin x k-center with pixel embeddings needed 0.43x the labels of random selection on the digits).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from loopline.labeling.active import select_batch
from loopline.registry.evaluation import onnx_logits, softmax


@dataclass(frozen=True)
class Scored:
    probabilities: np.ndarray  # (n, classes)
    embeddings: np.ndarray  # (n, 64)


def thumbnail_embeddings(images: list[Image.Image]) -> np.ndarray:
    return (
        np.stack(
            [
                np.asarray(i.convert("L").resize((8, 8), Image.Resampling.BILINEAR), dtype=np.float32).ravel()
                / 255
                for i in images
            ]
        )
        if images
        else np.zeros((0, 64), dtype=np.float32)
    )


def score_images(onnx_path: Path, model_inputs: np.ndarray, images: list[Image.Image]) -> Scored:
    """Class probabilities from the model (``model_inputs``: N x 3 x S x S, transformed for serving)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return Scored(softmax(onnx_logits(session, model_inputs)), thumbnail_embeddings(images))


def choose_for_labeling(
    candidates: Scored, labeled_embeddings: np.ndarray, budget: int, seed: int
) -> list[int]:
    """Indices of the candidates to label: margin uncertainty x k-center diversity from the labeled set."""
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
