"""The model gate for detectors (pure functions): mAP against a floor and, on the same test images,
against the champion with a paired bootstrap interval. Returns the ``GateVerdict`` classifiers get."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from loopline.registry.detection_eval import DetectionEvaluation
from loopline.registry.detection_stats import RESAMPLES, MapBootstrap, paired_bootstrap_map
from loopline.registry.gate import IncomparableModels
from loopline.verdict import GateVerdict

_EPS = 1e-9


class DetectionGateRules(BaseModel):
    """When a challenger detector may go to a person for approval (a flow parameter).

    mAP is COCO's mAP@[.5:.95]. The difference against the champion is judged with a paired bootstrap
    over the test images: a drop beyond the tolerance fails only when its whole interval is below zero
    (the drop is real, not the luck of a small test set); otherwise a note says the set cannot tell.
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt rule must not be silently ignored

    min_map: float = Field(default=0.0, ge=0, le=1, description="Test mAP@[.5:.95] at least this.")
    min_gain: float = Field(
        default=0.0,
        ge=-1,
        le=1,
        description="mAP gain over the champion at least this. At or below 0 it is a tolerance: a drop "
        "beyond it fails only when the bootstrap interval lies below zero. Above 0 it is a required "
        "improvement: the gain must reach it and its interval must lie above zero.",
    )
    alpha: float = Field(default=0.05, gt=0, lt=1, description="1 - the bootstrap interval's confidence.")
    resamples: int = Field(default=RESAMPLES, ge=50, le=5000, description="Bootstrap resamples.")
    seed: int = Field(default=0, description="Seed of the bootstrap's resampling.")


@dataclass(frozen=True)
class DetectionComparison:
    """A challenger detector against the champion on the same images; deltas are challenger minus champion."""

    map_delta: float | None  # None without a champion
    map50_delta: float | None
    class_deltas: dict[str, float] = field(default_factory=dict)  # AP@[.5:.95] per class, where both have one
    latency_delta_ms: float | None = None
    bootstrap: MapBootstrap | None = None


def compare_detectors(
    challenger: DetectionEvaluation, champion: DetectionEvaluation | None, rules: DetectionGateRules
) -> DetectionComparison:
    """Pair the two evaluations image by image (by content hash) and bootstrap their mAP difference."""
    if champion is None:
        return DetectionComparison(None, None)
    if (
        champion.test_set != challenger.test_set
        or champion.labels != challenger.labels
        or set(champion.predictions) != set(challenger.predictions)
    ):
        raise IncomparableModels(
            f"The champion detector was evaluated on test set {champion.test_set} ({champion.images} images) "
            f"with labels {list(champion.labels)}, the challenger on {challenger.test_set} "
            f"({challenger.images} images) with {list(challenger.labels)}: their mAP cannot be compared. To "
            "fix this, evaluate both on the challenger's frozen test split (the register stage does)."
        )
    ours, theirs = challenger.scores.per_class, champion.scores.per_class
    return DetectionComparison(
        map_delta=challenger.scores.map - champion.scores.map,
        map50_delta=challenger.scores.map50 - champion.scores.map50,
        class_deltas={
            label: ours[label][0] - theirs[label][0]
            for label in challenger.labels
            if ours[label][0] == ours[label][0] and theirs[label][0] == theirs[label][0]  # not NaN
        },
        latency_delta_ms=challenger.latency_ms - champion.latency_ms,
        bootstrap=paired_bootstrap_map(
            challenger.truth,
            challenger.predictions,
            champion.predictions,
            challenger.labels,
            challenger.sizes,
            resamples=rules.resamples,
            confidence=1 - rules.alpha,
            seed=rules.seed,
        ),
    )


def detection_gate(
    challenger: DetectionEvaluation, comparison: DetectionComparison, rules: DetectionGateRules
) -> GateVerdict:
    """Every rule the challenger detector breaks, each naming its numbers, and notes on what the test
    set cannot tell."""
    violations: list[str] = []
    notes: list[str] = []
    if challenger.scores.map < rules.min_map - _EPS:
        violations.append(
            f"test mAP@[.5:.95] {challenger.scores.map:.3f} on {challenger.images} images < min_map "
            f"{rules.min_map:.3f}"
        )
    test = comparison.bootstrap
    if test is None:
        return GateVerdict("model", tuple(violations), tuple(notes))
    what = (
        f"mAP {test.delta:+.3f} vs the champion ({test.confidence:.0%} paired bootstrap interval "
        f"{test.interval} over {test.resamples} resamples of {test.images} images; better in "
        f"{test.better_share:.0%} of them)"
    )
    if rules.min_gain > 0:  # a required improvement: there, and beyond doubt
        if test.delta < rules.min_gain - _EPS:
            violations.append(f"{what} < min_gain {rules.min_gain:+.3f}")
        elif test.interval.low <= 0:
            violations.append(f"{what}: the gain min_gain {rules.min_gain:+.3f} asks for is not beyond doubt")
    elif test.delta < rules.min_gain - _EPS:  # a drop beyond the tolerance
        if test.interval.high < 0:
            violations.append(f"{what}, below min_gain {rules.min_gain:+.3f}")
        else:
            notes.append(
                f"{what}: a drop beyond min_gain {rules.min_gain:+.3f}, but its interval reaches zero, so "
                "the test set cannot tell it from chance. Not counted as a regression; to judge it, grow "
                "the test split."
            )
    return GateVerdict("model", tuple(violations), tuple(notes))
