"""The evaluation gate: a challenger against the rules and against the champion (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, Field

from loopline.errors import RegistryError
from loopline.registry.evaluation import Evaluation


class GateRules(BaseModel):
    """When a challenger may go to a person for approval (a flow parameter)."""

    min_accuracy: float = Field(default=0.0, ge=0, le=1, description="Test accuracy at least this.")
    min_gain: float = Field(
        default=0.0, ge=-1, le=1, description="Accuracy gain over the champion at least this (points / 100)."
    )
    max_class_regression: float = Field(
        default=0.05, ge=0, le=1, description="No class's recall may drop by more than this vs the champion."
    )
    min_class_support: int = Field(
        default=20,
        ge=1,
        description="The per-class rule judges only classes with at least this many test images (on fewer, "
        "one image moves recall by more than the rule allows; their deltas are still reported).",
    )


@dataclass(frozen=True)
class Comparison:
    accuracy_delta: float | None  # challenger minus champion; None without a champion
    recall_deltas: dict[str, float]
    ece_delta: float | None
    latency_delta_ms: float | None


class IncomparableModels(RegistryError):
    """The champion and the challenger were not evaluated on the same test set."""


def compare(challenger: Evaluation, champion: Evaluation | None) -> Comparison:
    if champion is None:
        return Comparison(None, {}, None, None)
    if champion.test_set != challenger.test_set or champion.labels != challenger.labels:
        raise IncomparableModels(
            f"The champion was evaluated on test set {champion.test_set} with labels "
            f"{list(champion.labels)}, the challenger on {challenger.test_set} with "
            f"{list(challenger.labels)}: their metrics cannot be compared. To fix this, evaluate both on "
            "the challenger's frozen test split (the gate does)."
        )
    return Comparison(
        accuracy_delta=challenger.accuracy - champion.accuracy,
        recall_deltas={
            label: challenger.recall_of(label) - champion.recall_of(label) for label in challenger.labels
        },
        ece_delta=challenger.ece - champion.ece,
        latency_delta_ms=challenger.latency_ms - champion.latency_ms,
    )


def check_no_leak(champion_training: set[str], test_set: set[str], champion: str) -> None:
    """Refuse a comparison on test images the champion learned from: its score there means nothing."""
    leaked = champion_training & test_set
    if leaked:
        raise IncomparableModels(
            f"The champion ({champion}) was trained or validated on {len(leaked)} of the "
            f"{len(test_set)} test images, so it cannot be compared on them. To fix this, keep the test "
            "split frozen across dataset versions (images once in test stay in test) and retrain the "
            "champion, or compare on a test set the champion never saw."
        )


def gate_violations(challenger: Evaluation, comparison: Comparison, rules: GateRules) -> list[str]:
    """Every rule the challenger breaks, each naming the numbers (empty: the gate passes)."""
    violations = []
    if challenger.accuracy < rules.min_accuracy:
        violations.append(f"test accuracy {challenger.accuracy:.3f} < min_accuracy {rules.min_accuracy:.3f}")
    if comparison.accuracy_delta is not None and comparison.accuracy_delta < rules.min_gain:
        violations.append(
            f"gain over the champion {comparison.accuracy_delta:+.3f} < min_gain {rules.min_gain:+.3f}"
        )
    support = {str(r["label"]): int(r["support"]) for r in challenger.per_class}
    for label, delta in sorted(comparison.recall_deltas.items()):
        if support.get(label, 0) >= rules.min_class_support and delta < -rules.max_class_regression:
            violations.append(
                f"class {label!r}: recall {delta:+.3f} vs the champion, beyond max_class_regression "
                f"{rules.max_class_regression:.3f}"
            )
    return violations
