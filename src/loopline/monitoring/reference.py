"""The champion's reference data: what its served traffic is compared with.

The champion is the version behind the ``champion`` alias; its lineage tags (``labeled_version``,
``data_root``, written by the register stage) name the labeled manifest it learned from. The reference
is that manifest's class mix (the labels) and, on its held-out ``test`` split (the register stage's
evaluation set, never trained on, so its logits and confidences are not over-confident), the champion's
ONNX model run with the serving preprocessing: its confidences, predictions and logits, and the images'
statistics. Nothing of it is stored by the register stage, so it is computed here (one inference per test
image).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from loopline.errors import LooplineError
from loopline.monitoring.features import model_logits, statistics_of
from loopline.registry.artifacts import ModelFiles
from loopline.registry.evaluation import softmax

if TYPE_CHECKING:
    from PIL import Image

    from loopline.data.labeled import LabeledRow


class ReferenceUnavailable(LooplineError):
    """The champion's reference data cannot be read: drift is not judged, health still is."""


@dataclass(frozen=True)
class Champion:
    name: str
    version: str
    run_id: str
    tags: dict[str, str]


@dataclass(frozen=True)
class Reference:
    """The champion on its evaluation set, and the labels it learned from."""

    version: str
    labels: tuple[str, ...]  # the model's output order
    label_counts: dict[str, int]  # every labeled image's label (all splits)
    predicted_counts: dict[str, int]  # the champion's answers on the test split
    confidences: NDArray[np.float64]  # top softmax probability per test image
    statistics: NDArray[np.float64]  # test images x IMAGE_STATISTICS
    logits: NDArray[np.float64]  # test images x classes
    accuracy: float  # on the test split
    onnx: Path
    input_size: int
    source: str  # the labeled manifest


def find_champion(client: Any, name: str) -> Champion | None:
    """The version behind ``name``'s champion alias, or None when there is none (or no such model)."""
    from loopline.registry.registry import CHAMPION, resolve_alias

    found = resolve_alias(client, name, CHAMPION)
    if found is None:
        return None
    return Champion(name, str(found.version), str(found.run_id or ""), dict(found.tags or {}))


def labeled_source(champion: Champion) -> tuple[str, str]:
    """(data root, labeled version) from the champion's lineage tags."""
    root, version = champion.tags.get("data_root", ""), champion.tags.get("labeled_version", "")
    if not root or not version:
        raise ReferenceUnavailable(
            f"{champion.name} v{champion.version} has no lineage tags naming its labeled data (data_root, "
            "labeled_version), so its traffic has nothing to be compared with. To fix this, register the "
            "champion through loopline's register stage, which tags every version with its labels."
        )
    return root, version


def build_reference(
    champion: Champion,
    rows: Sequence[LabeledRow],
    files: ModelFiles,
    open_image: Callable[[str], Image.Image],
    source: str,
) -> Reference:
    """The reference of ``champion`` from its labeled rows and model files (see the module docstring)."""
    test = [r for r in rows if r.split == "test"]
    if not test:
        raise ReferenceUnavailable(
            f"The labeled manifest {source} of {champion.name} v{champion.version} has no test split: "
            "there is no evaluation set to compare served traffic with. To fix this, label more images "
            "so that every class reaches the test split, and retrain."
        )
    try:
        pictures = [open_image(r.stored_uri) for r in test]
    except LooplineError as exc:
        raise ReferenceUnavailable(f"The champion's test images cannot be read: {exc}") from exc
    logits = model_logits(files.onnx, pictures, files.input_size)
    if logits.shape[1] != len(files.labels):
        raise ReferenceUnavailable(
            f"The champion's model has {logits.shape[1]} outputs for {len(files.labels)} labels "
            f"{list(files.labels)}: its class mapping does not fit its model. To fix this, retrain."
        )
    probabilities = softmax(logits)
    predicted = [files.labels[i] for i in probabilities.argmax(axis=1)]
    truth = [r.label for r in test]
    return Reference(
        version=champion.version,
        labels=files.labels,
        label_counts=dict(Counter(r.label for r in rows)),
        predicted_counts=dict(Counter(predicted)),
        confidences=probabilities.max(axis=1),
        statistics=statistics_of(pictures),
        logits=logits,
        accuracy=float(np.mean([p == t for p, t in zip(predicted, truth, strict=True)])),
        onnx=files.onnx,
        input_size=files.input_size,
        source=source,
    )
