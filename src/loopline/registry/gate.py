"""The model gate: a challenger against the rules and, image by image, against the champion (pure
functions). It returns a ``GateVerdict``: every violated rule, plus notes on what the test set cannot tell."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from loopline.errors import RegistryError
from loopline.registry.evaluation import Evaluation
from loopline.registry.stats import PairedTest, discordant_needed, holm, paired_test, wilson
from loopline.verdict import GateVerdict


class GateRules(BaseModel):
    """When a challenger may go to a person for approval (a flow parameter).

    The champion and the challenger are judged on the same test images, so their difference is tested
    pairwise (McNemar's test, per image). A drop counts against the challenger only when it is beyond
    the rule's tolerance AND statistically significant (p < ``alpha``): on a small test set one image
    more or less is noise, not a regression, and the verdict says the set is too small to tell.
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt rule must not be silently ignored

    min_accuracy: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Test accuracy at least this, judged on the estimate (the report shows its Wilson "
        "interval; a note says when the interval reaches below the bar).",
    )
    min_gain: float = Field(
        default=0.0,
        ge=-1,
        le=1,
        description="Accuracy gain over the champion at least this (points / 100). At or below 0 it is a "
        "tolerance: a drop beyond it fails only when significant. Above 0 it is a required improvement: "
        "the gain must reach it and be significant.",
    )
    max_class_regression: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="No class's recall may drop by more than this vs the champion, on that class's test "
        "images, where the drop is significant (McNemar, Holm-corrected over the classes).",
    )
    alpha: float = Field(
        default=0.05, gt=0, lt=1, description="Significance level of the paired tests (McNemar)."
    )


@dataclass(frozen=True)
class Comparison:
    """A challenger against the champion on the same images; deltas are challenger minus champion."""

    accuracy_delta: float | None  # None without a champion
    recall_deltas: dict[str, float]
    ece_delta: float | None
    latency_delta_ms: float | None
    accuracy_test: PairedTest | None = None  # McNemar over every test image
    class_tests: dict[str, PairedTest] = field(default_factory=dict)  # over each class's images, Holm


class IncomparableModels(RegistryError):
    """The champion and the challenger were not evaluated on the same test set."""


def compare(challenger: Evaluation, champion: Evaluation | None) -> Comparison:
    """Pair the two evaluations image by image (by content hash) and test their differences."""
    if champion is None:
        return Comparison(None, {}, None, None)
    if (
        champion.test_set != challenger.test_set
        or champion.labels != challenger.labels
        or set(champion.predictions) != set(challenger.predictions)
    ):
        raise IncomparableModels(
            f"The champion was evaluated on test set {champion.test_set} ({champion.images} images) with "
            f"labels {list(champion.labels)}, the challenger on {challenger.test_set} "
            f"({challenger.images} images) with {list(challenger.labels)}: their metrics cannot be "
            "compared. To fix this, evaluate both on the challenger's frozen test split (the gate does)."
        )
    overall = paired_test(champion.correct(), challenger.correct())
    class_tests = holm(
        {label: paired_test(champion.correct(label), challenger.correct(label)) for label in champion.labels}
    )
    return Comparison(
        accuracy_delta=overall.delta,  # counted per image: no float noise at the tolerance
        recall_deltas={label: test.delta for label, test in class_tests.items()},
        ece_delta=challenger.ece - champion.ece,
        latency_delta_ms=challenger.latency_ms - champion.latency_ms,
        accuracy_test=overall,
        class_tests=class_tests,
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


def model_gate(challenger: Evaluation, comparison: Comparison, rules: GateRules) -> GateVerdict:
    """Every rule the challenger breaks, each naming its numbers, and notes on what the test set cannot
    tell (a drop beyond a tolerance that is not significant passes, with a note)."""
    violations: list[str] = []
    notes: list[str] = []
    _accuracy_floor(challenger, rules, violations, notes)
    if comparison.accuracy_test is not None:
        _gain(comparison.accuracy_test, rules, violations, notes)
    _per_class(challenger.labels, comparison.class_tests, rules, violations, notes)
    return GateVerdict("model", tuple(violations), tuple(notes))


_EPS = 1e-9  # deltas are fractions of image counts; compare them with the rules without float noise


def _images(count: int) -> str:
    return f"{count} image" if count == 1 else f"{count} images"


def _counts(test: PairedTest) -> str:
    return f"loses {_images(test.champion_only)} the champion gets right, gains {test.challenger_only}"


def _undecided(what: str, test: PairedTest, alpha: float) -> str:
    needed = discordant_needed(alpha)
    if test.discordant < needed:
        return (
            f"{what}: the test set is too small to tell; the models disagree on {_images(test.discordant)} "
            f"and an exact McNemar test needs at least {needed} for p < {alpha:g}. Not counted as "
            "a regression; to judge it, grow the test split."
        )
    return f"{what}: not significant at alpha {alpha:g}, so not counted as a regression."


def _per_class(
    labels: tuple[str, ...],
    tests: dict[str, PairedTest],
    rules: GateRules,
    violations: list[str],
    notes: list[str],
) -> None:
    """A class's recall drop beyond the tolerance fails the gate when significant after Holm's correction;
    the undecided ones are listed in (at most) two notes."""
    needed, too_small, unproven = discordant_needed(rules.alpha), [], []
    for label in labels:
        test = tests.get(label)
        if test is None or test.delta >= -rules.max_class_regression - _EPS:
            continue
        shown = f"{label!r} {test.delta:+.3f} ({_counts(test)}, of {_images(test.images)})"
        if test.judged_p < rules.alpha:
            violations.append(
                f"class {label!r}: recall {test.delta:+.3f} vs the champion on its {_images(test.images)} "
                f"({_counts(test)}; McNemar p={test.p_value:.3g}, Holm-adjusted over {len(tests)} classes "
                f"{test.judged_p:.3g}), beyond max_class_regression {rules.max_class_regression:.3f}"
            )
        elif test.discordant < needed:
            too_small.append(shown)
        else:
            unproven.append(f"{shown}; p={test.p_value:.3g}, Holm-adjusted {test.judged_p:.3g}")
    beyond = f"recall drops beyond max_class_regression {rules.max_class_regression:.3f}"
    if too_small:
        notes.append(
            f"{beyond} in class {'; '.join(too_small)}: the test set is too small to tell; the models "
            f"disagree on fewer than {needed} of each class's images and an exact McNemar test needs "
            f"{needed} for p < {rules.alpha:g}. Not counted as regressions; to judge them, grow the test "
            "split."
        )
    if unproven:
        notes.append(
            f"{beyond} in class {'; '.join(unproven)}: not significant at alpha {rules.alpha:g} after Holm's "
            f"correction over {len(tests)} classes, so not counted as regressions."
        )


def _accuracy_floor(
    challenger: Evaluation, rules: GateRules, violations: list[str], notes: list[str]
) -> None:
    if rules.min_accuracy <= 0:
        return
    right = sum(challenger.correct().values())
    interval = wilson(right, challenger.images, 1 - rules.alpha)
    shown = f"test accuracy {challenger.accuracy:.3f} ({right}/{challenger.images}, {1 - rules.alpha:.0%} "
    shown += f"Wilson interval {interval})"
    if challenger.accuracy < rules.min_accuracy - _EPS:
        violations.append(f"{shown} < min_accuracy {rules.min_accuracy:.3f}")
    elif interval.low < rules.min_accuracy:
        notes.append(
            f"{shown} clears min_accuracy {rules.min_accuracy:.3f} on the estimate, but its interval reaches "
            "below it: the test set is too small to tell whether the model truly clears the bar."
        )


def _gain(test: PairedTest, rules: GateRules, violations: list[str], notes: list[str]) -> None:
    what = f"accuracy {test.delta:+.3f} vs the champion ({_counts(test)}; McNemar p={test.p_value:.3g})"
    if rules.min_gain > 0:  # a required improvement: it must be there and be significant
        if test.delta < rules.min_gain - _EPS:
            violations.append(f"{what} < min_gain {rules.min_gain:+.3f}")
        elif test.p_value >= rules.alpha:
            violations.append(f"{what}: the gain min_gain {rules.min_gain:+.3f} asks for is not significant")
            if test.discordant < discordant_needed(rules.alpha):
                notes.append(_undecided("the required gain", test, rules.alpha))
        return
    if test.delta >= rules.min_gain - _EPS:  # within the tolerance
        return
    if test.p_value < rules.alpha:
        violations.append(f"{what}, below min_gain {rules.min_gain:+.3f}")
    else:
        notes.append(_undecided(what, test, rules.alpha))
