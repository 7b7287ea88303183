"""A later round's batch: the champion scores the images it has not learned from, margin uncertainty x
k-center diversity (on 8x8 thumbnails) picks what people label next, and the champion's answers go along
as pre-annotations. A detector champion: least-confident-box uncertainty x k-center, and its boxes above
``min_score`` as pre-annotations.

``select_round`` takes references and a reader (the task resolves the champion's files and passes
``ImageReader(settings).open``, which works for local and ``s3://`` data roots); ``render_selection_report``
renders the ``label-selection`` artifact. Nothing here talks to Label Studio, MLflow or Prefect.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopline.data.labeled import LabeledRow
from loopline.data.manifest import ManifestRow
from loopline.errors import RegistryError
from loopline.labeling.active import detection_uncertainty, uncertainty_scores
from loopline.labeling.configs import LabelConfig
from loopline.labeling.preannotate import (
    ReadImage,
    box_preannotations,
    choose_for_labeling,
    choose_images_by_boxes,
    detect_stored_images,
    score_stored_images,
    stored_thumbnails,
)
from loopline.labeling.predictions import classification_prediction, validate_predictions

logger = logging.getLogger(__name__)

STRATEGY = "margin uncertainty x k-center diversity (8x8 thumbnails)"
BOX_STRATEGY = "least-confident box uncertainty x k-center diversity (8x8 thumbnails)"


@dataclass(frozen=True)
class ChampionModel:
    """The files of the model that scores the round: its ONNX graph and class mapping."""

    onnx_path: Path
    labels: tuple[str, ...]  # the model's output classes, in output order
    input_size: int  # 0 for a detector (it takes any size)
    version: str  # shown in Label Studio as the predictions' model version, e.g. "digits v3"
    detector: bool = False

    @classmethod
    def from_mapping(cls, onnx_path: Path, mapping: Mapping[str, Any], version: str) -> ChampionModel:
        """From ``class_mapping.json`` (``{"labels": [...], "input_size": N}``, or ``{"task_type":
        "detection", "labels": [...]}`` for a detector) stored with the model."""
        if mapping.get("task_type") == "detection":
            if "labels" not in mapping:
                raise RegistryError(
                    f"The class mapping of detector {version} lacks 'labels' (it has {sorted(mapping)}); "
                    "re-register the model with the class_mapping.json its training wrote."
                )
            return cls(onnx_path, tuple(str(label) for label in mapping["labels"]), 0, version, True)
        missing = [key for key in ("labels", "input_size") if key not in mapping]
        if missing:
            raise RegistryError(
                f"The class mapping of {version} lacks {missing} (it has {sorted(mapping)}); "
                "re-register the model with a class_mapping.json holding 'labels' and 'input_size'."
            )
        return cls(
            onnx_path, tuple(str(label) for label in mapping["labels"]), int(mapping["input_size"]), version
        )


@dataclass(frozen=True)
class RoundSelection:
    """What a later round sends to people, and the figures its report shows."""

    chosen: tuple[ManifestRow, ...]  # in content-hash order
    predictions: Mapping[str, dict[str, Any]] = field(repr=False)  # content hash -> Label Studio prediction
    model_version: str
    budget: int  # images still wanted this round
    pool: int  # candidates neither labeled before nor in the project
    prior: int  # images the champion learned from
    mean_uncertainty_chosen: float | None  # margin uncertainty (1 - (top1 - top2)); None when nothing scored
    mean_uncertainty_pool: float | None
    nothing_because: str | None = None  # why nothing was chosen (None when something was)
    strategy: str = STRATEGY


def unlabeled_pool(candidates: Sequence[ManifestRow], prior: Sequence[LabeledRow]) -> list[ManifestRow]:
    """The candidates the champion has not learned from, in content-hash order."""
    known = {r.content_hash for r in prior}
    return sorted((r for r in candidates if r.content_hash not in known), key=lambda r: r.content_hash)


def _nothing(reason: str, model: ChampionModel, budget: int, pool: int, prior: int) -> RoundSelection:
    logger.info("Round selection by %s: nothing to import, %s", model.version, reason)
    return RoundSelection((), {}, model.version, budget, pool, prior, None, None, reason)


def select_round(
    candidates: Sequence[ManifestRow],
    prior: Sequence[LabeledRow],
    read_image: ReadImage,
    model: ChampionModel,
    budget: int,
    seed: int,
    config: LabelConfig,
    min_score: float = 0.5,
) -> RoundSelection:
    """Choose up to ``budget`` of ``candidates`` (images not in the project yet) for people to label.

    Images in ``prior`` (the champion's training labels) are left out; the champion scores the rest and
    margin x k-center from the prior images' thumbnails picks ``min(budget, pool)`` distinct ones, each
    with the champion's top class as a pre-annotation (validated against ``config``). An empty pool or a
    budget already met chooses nothing and says why (``nothing_because``). A detector champion ranks
    images by their least confident box instead, and pre-annotates its boxes scored ``min_score`` or more.
    """
    pool = unlabeled_pool(candidates, prior)
    if budget <= 0:
        return _nothing("the round's budget is already met", model, max(budget, 0), len(pool), len(prior))
    if not pool:
        reason = (
            f"every image of the dataset version is labeled already ({len(prior)} labeled before) "
            "or already a task of the project"
        )
        return _nothing(reason, model, budget, 0, len(prior))
    if model.detector:
        return _select_by_boxes(pool, prior, read_image, model, budget, seed, config, min_score)
    scored = score_stored_images(model.onnx_path, model.input_size, [r.stored_uri for r in pool], read_image)
    if scored.probabilities.shape[1] != len(model.labels):
        raise RegistryError(
            f"{model.version} outputs {scored.probabilities.shape[1]} classes but its class mapping lists "
            f"{len(model.labels)} labels {list(model.labels)}; re-export the model with the mapping it was "
            "trained with."
        )
    labeled = stored_thumbnails([r.stored_uri for r in prior], read_image)
    picks = sorted(choose_for_labeling(scored, labeled, budget, seed))
    probabilities = scored.probabilities
    predictions = {
        pool[i].content_hash: classification_prediction(
            config,
            model.labels[int(probabilities[i].argmax())],
            float(probabilities[i].max()),
            model.version,
        ).as_dict()
        for i in picks
    }
    validate_predictions(config, list(predictions.items()))
    uncertainty = uncertainty_scores(probabilities, "margin")
    logger.info(
        "Round selection by %s: %d of %d unlabeled images (budget %d)",
        model.version,
        len(picks),
        len(pool),
        budget,
    )
    return RoundSelection(
        tuple(pool[i] for i in picks),
        predictions,
        model.version,
        budget,
        len(pool),
        len(prior),
        float(uncertainty[picks].mean()),
        float(uncertainty.mean()),
    )


def _select_by_boxes(
    pool: list[ManifestRow],
    prior: Sequence[LabeledRow],
    read_image: ReadImage,
    model: ChampionModel,
    budget: int,
    seed: int,
    config: LabelConfig,
    min_score: float,
) -> RoundSelection:
    """``select_round`` for a detector champion: every box it finds counts towards uncertainty; only boxes
    scored ``min_score`` or more become pre-annotations."""
    keys = [r.content_hash for r in pool]
    detected = detect_stored_images(model.onnx_path, model.labels, [r.stored_uri for r in pool], read_image)
    labeled = stored_thumbnails([r.stored_uri for r in prior], read_image)
    picks = sorted(choose_images_by_boxes(detected, labeled, budget, seed, keys=keys))
    predictions = box_preannotations(config, detected, picks, keys, model.version, min_score)
    uncertainty = detection_uncertainty(detected.detections)
    logger.info(
        "Round selection by %s: %d of %d unlabeled images (budget %d), %d with pre-annotated boxes",
        model.version,
        len(picks),
        len(pool),
        budget,
        len(predictions),
    )
    return RoundSelection(
        tuple(pool[i] for i in picks),
        predictions,
        model.version,
        budget,
        len(pool),
        len(prior),
        float(uncertainty[picks].mean()),
        float(uncertainty.mean()),
        strategy=BOX_STRATEGY,
    )


def render_selection_report(selection: RoundSelection) -> str:
    """The ``label-selection`` artifact: how this round's batch was chosen."""
    lines = [
        f"# Round selection by {selection.model_version}",
        "",
        f"- strategy: {selection.strategy}",
        f"- pool: {selection.pool} unlabeled images; {selection.prior} labeled before; "
        f"budget still open: {selection.budget}",
    ]
    if selection.nothing_because is not None:
        lines.append(f"- **nothing imported**: {selection.nothing_because}")
        return "\n".join(lines) + "\n"
    lines.append(
        f"- chosen: {len(selection.chosen)}"
        + (" (the whole pool: smaller than the budget)" if selection.pool < selection.budget else "")
    )
    if selection.mean_uncertainty_chosen is not None and selection.mean_uncertainty_pool is not None:
        kind = "least-confident box" if selection.strategy == BOX_STRATEGY else "margin"
        lines.append(
            f"- mean {kind} uncertainty {selection.mean_uncertainty_chosen:.3f} "
            f"(pool: {selection.mean_uncertainty_pool:.3f})"
        )
    if selection.strategy == BOX_STRATEGY:
        lines.append(
            f"- {len(selection.predictions)} of the chosen tasks carry the champion's boxes as a "
            "pre-annotation (the others: no box scored high enough)"
        )
    else:
        lines.append("- every chosen task carries the champion's answer as a pre-annotation")
    return "\n".join(lines) + "\n"
