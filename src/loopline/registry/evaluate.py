"""Evaluate a challenger and the champion on the challenger's frozen test split, image by image.

``evaluate_models`` takes the labeled rows, the two models' files and a way to open stored images
(``loopline.data.pixels.ImageReader(settings).open``: EXIF orientation applied, local or S3 with a local
cache), checks that the champion may be compared (same labels, never trained on these test images), runs
both ONNX models through ONNX Runtime and returns their evaluations, paired by content hash, plus small
thumbnails of the challenger's most confident mistakes for the report's gallery.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from loopline.errors import RegistryError
from loopline.registry.artifacts import ModelFiles
from loopline.registry.evaluation import Evaluation, evaluate_onnx
from loopline.registry.gate import IncomparableModels, check_no_leak
from loopline.registry.report import GALLERY

if TYPE_CHECKING:
    from PIL import Image

THUMBNAIL = 96  # pixels, the longer side of a gallery picture


class EvaluatedRow(Protocol):
    """What evaluation needs of a labeled-manifest row."""

    @property
    def content_hash(self) -> str: ...
    @property
    def stored_uri(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def split(self) -> str: ...


@dataclass(frozen=True)
class ModelEvaluations:
    challenger: Evaluation
    champion: Evaluation | None  # None: no champion yet (or the challenger is the champion)
    champion_version: str | None
    thumbnails: dict[str, bytes] = field(default_factory=dict)  # content hash → PNG, gallery mistakes


def fingerprint_test_set(content_hashes: Sequence[str]) -> str:
    """The test set's identity: a hash of its (sorted) content hashes, independent of order."""
    return hashlib.sha256("\n".join(sorted(content_hashes)).encode()).hexdigest()[:16]


def evaluate_models(
    rows: Sequence[EvaluatedRow],
    challenger: ModelFiles,
    champion: ModelFiles | None,
    champion_version: str | None,
    open_image: Callable[[str], Image.Image],
) -> ModelEvaluations:
    """Both models through ONNX Runtime on the ``test`` rows of ``rows`` (see the module docstring)."""
    test = [r for r in rows if r.split == "test"]
    if not test:
        raise RegistryError(
            "The labeled manifest has no test split, so no model can be judged. To fix this, label more "
            "images (raise the label budget) so that every class reaches the test split."
        )
    hashes = [r.content_hash for r in test]
    if len(set(hashes)) != len(hashes):
        raise RegistryError(
            f"The test split lists {len(hashes) - len(set(hashes))} images twice (same content hash). To "
            "fix this, rebuild the labeled manifest from a deduplicated dataset version."
        )
    if champion is not None:
        _check_comparable(champion, challenger, set(hashes), f"v{champion_version}")
    unknown = sorted({r.label for r in test} - set(challenger.labels))
    if unknown:
        raise RegistryError(
            f"The test split holds labels {unknown} the challenger does not predict "
            f"({list(challenger.labels)}). To fix this, train on the labeled version that is evaluated."
        )
    pictures = [open_image(r.stored_uri) for r in test]
    truth = np.array([challenger.labels.index(r.label) for r in test])
    fingerprint = fingerprint_test_set(hashes)
    arrays: dict[int, np.ndarray] = {}

    def evaluate(files: ModelFiles) -> Evaluation:
        if files.input_size not in arrays:
            arrays[files.input_size] = _model_inputs(pictures, files.input_size)
        return evaluate_onnx(files.onnx, arrays[files.input_size], truth, files.labels, hashes, fingerprint)

    challenger_eval = evaluate(challenger)
    by_hash = dict(zip(hashes, pictures, strict=True))
    return ModelEvaluations(
        challenger=challenger_eval,
        champion=evaluate(champion) if champion is not None else None,
        champion_version=champion_version if champion is not None else None,
        thumbnails={
            m.content_hash: thumbnail_png(by_hash[m.content_hash]) for m in challenger_eval.mistakes[:GALLERY]
        },
    )


def _check_comparable(champion: ModelFiles, challenger: ModelFiles, test: set[str], name: str) -> None:
    if champion.labels != challenger.labels:
        raise IncomparableModels(
            f"The champion {name} predicts {list(champion.labels)}, the challenger "
            f"{list(challenger.labels)}. To fix this, register a model with a new label set under a new name."
        )
    learned = set(champion.splits.get("train", ())) | set(champion.splits.get("val", ()))
    check_no_leak(learned, test, name)


def _model_inputs(pictures: Sequence[Image.Image], size: int) -> np.ndarray:
    """N x 3 x size x size float32, preprocessed exactly as for serving."""
    from loopline.serving.preprocess import preprocess_batch

    return preprocess_batch(pictures, size)


def thumbnail_png(picture: Image.Image, size: int = THUMBNAIL) -> bytes:
    """A PNG of ``picture`` fitted into size x size (small images scaled up without blurring)."""
    from PIL import Image, ImageOps

    method = Image.Resampling.NEAREST if max(picture.size) < size else Image.Resampling.LANCZOS
    out = io.BytesIO()
    ImageOps.contain(picture, (size, size), method=method).save(out, format="PNG")
    return out.getvalue()
