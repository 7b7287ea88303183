"""The A/B statistics (pure): always-valid comparisons of challenger against champion, and the verdict.

Every comparison here may be checked after every request without inflating its error rate: each one is
a confidence sequence — an interval that covers the truth at all times at once with probability 1 - alpha.

- **Accuracy** (the primary metric, from feedback; a detector request's is the F1 of its boxes against
  the true ones, ``box_feedback.py``, in [0, 1]: the proportion bounds then over-cover, as the variance of
  a [0, 1] value of mean p is at most p(1 - p)) and the **error rate** (guardrail): the difference
  challenger - champion of two proportions; **p99 latency** (guardrail): each arm's quantile — all three
  with the confidence sequences of ``loopline.rollout.sequential`` (methods and references there).
- **Sample ratio mismatch**: chi-square goodness of fit of the per-arm counts against the expected share
  (``scipy.stats.chisquare``), at p < 0.001 as is standard (Fabijan et al., KDD 2019).

``rho`` (``tune_*`` in the config) only decides where the interval is narrowest; every value keeps the
guarantee. The guarantee is asymptotic (the CLT step), which is why each verdict waits for a minimum
sample per arm; ``benchmarks/ab_validity.py`` measures it under peeking.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator

from loopline.rollout.events import Feedback, RoutedRequest, Variant, Verdict
from loopline.rollout.sequential import Interval, difference_p_value, proportion_difference, quantile_interval

Comparison = Literal["worse", "non_inferior", "superior", "undecided", "waiting"]
GuardrailState = Literal["breached", "cleared", "undecided", "waiting"]

_EMPTY = np.zeros(0)


# -- inputs ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmSummary:
    """What one arm has seen so far (by assignment: a request the champion answered after the challenger
    failed counts in the challenger's arm, as an error, with the latency the user saw)."""

    requests: int = 0
    errors: int = 0  # status >= 500 or fallback
    latencies_ms: NDArray[np.float64] = field(default_factory=lambda: _EMPTY)  # all, or a uniform sample
    feedback: int = 0
    correct: float = 0  # a detector's requests add their box F1
    users: int | None = None  # distinct users assigned, for the sample-ratio check (requests when None)

    def __post_init__(self) -> None:
        problems = [
            f"{name} = {value} is negative"
            for name, value in vars(self).items()
            if name in ("requests", "errors", "feedback", "correct") and value < 0
        ]
        if self.errors > self.requests:
            problems.append(f"errors = {self.errors} exceeds requests = {self.requests}")
        if self.correct > self.feedback:
            problems.append(f"correct = {self.correct} exceeds feedback = {self.feedback}")
        if problems:
            raise ValueError("ArmSummary: " + "; ".join(problems))


class ArmCounts(Protocol):
    """What the statistics read of an arm: an ``ArmSummary``, or any row of the same shape (the event
    store's per-arm summary)."""

    @property
    def requests(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def latencies_ms(self) -> NDArray[np.float64]: ...
    @property
    def feedback(self) -> int: ...
    @property
    def correct(self) -> float: ...
    @property
    def users(self) -> int | None: ...


def _rate(hits: float, n: int) -> float:
    return hits / n if n else math.nan


def is_error(row: RoutedRequest) -> bool:
    """A request counts as an error of its arm when it failed (5xx) or the champion had to answer it."""
    return row.status >= 500 or row.fallback


def summarize(requests: Iterable[RoutedRequest], feedback: Iterable[Feedback]) -> dict[Variant, ArmSummary]:
    """Per-arm summaries from rows (feedback joins its request by id; a true label is compared with the
    predicted one, true boxes with the predicted ones (F1); feedback for unknown requests is ignored)."""
    from loopline.rollout.box_feedback import box_f1

    by_id = {row.request_id: row for row in requests}
    latencies: dict[Variant, list[float]] = {"champion": [], "challenger": []}
    errors = dict.fromkeys(latencies, 0)
    users: dict[Variant, set[str]] = {"champion": set(), "challenger": set()}
    for row in by_id.values():
        latencies[row.variant].append(row.latency_ms)
        errors[row.variant] += is_error(row)
        users[row.variant].add(row.user_hash)
    labelled, correct = dict.fromkeys(latencies, 0), dict.fromkeys(latencies, 0.0)
    for outcome in feedback:
        request = by_id.get(outcome.request_id)
        if request is None:
            continue
        if outcome.true_boxes is not None:
            if request.predicted_boxes is None:
                continue
            right = box_f1(request.predicted_boxes, outcome.true_boxes)
        elif outcome.correct is not None or outcome.true_label is not None:
            label_right = outcome.true_label == request.predicted_label
            right = float(outcome.correct if outcome.correct is not None else label_right)
        else:
            continue
        labelled[request.variant] += 1
        correct[request.variant] += right
    return {
        arm: ArmSummary(
            requests=len(latencies[arm]),
            errors=errors[arm],
            latencies_ms=np.asarray(latencies[arm], dtype=np.float64),
            feedback=labelled[arm],
            correct=correct[arm],
            users=len(users[arm]),
        )
        for arm in latencies
    }


class AbConfig(BaseModel):
    """How the challenger is judged (one per experiment; rendered as a form in the Prefect UI)."""

    model_config = ConfigDict(frozen=True)

    alpha: float = Field(default=0.05, description="Error probability of each always-valid interval.")
    margin: float = Field(
        default=0.02, description="Non-inferiority margin: how much less accurate (absolute) is acceptable."
    )
    error_tolerance: float = Field(
        default=0.01, description="How much higher (absolute) the challenger's error rate may be."
    )
    latency_quantile: float = Field(default=0.99, description="The latency quantile compared (p99).")
    latency_ratio: float = Field(
        default=1.5, description="The challenger's latency quantile may be this many times the champion's…"
    )
    latency_slack_ms: float = Field(default=5.0, ge=0, description="…or this many ms above it, if more.")
    min_feedback_per_arm: int = Field(
        default=200, ge=1, description="Feedback rows per arm before accuracy counts."
    )
    min_requests_per_arm: int = Field(
        default=200, ge=1, description="Requests per arm before guardrails count."
    )
    srm_p_value: float = Field(default=0.001, description="A split with a chi-square p below this is broken.")
    step_up_on: Literal["non_inferior", "no_harm"] = Field(
        default="non_inferior",
        description="Step up once accuracy is shown not worse than the margin, or while no harm is shown "
        "(faster ramps; promoting always needs non-inferiority).",
    )
    tune_feedback: int = Field(
        default=4000, ge=1, description="Feedback rows (both arms) where the accuracy interval is narrowest."
    )
    tune_requests: int = Field(
        default=10000, ge=1, description="Requests (both arms) where the guardrail intervals are narrowest."
    )

    @field_validator("alpha", "srm_p_value")
    @classmethod
    def _probability(cls, value: float) -> float:
        if not 0 < value < 0.5:
            raise ValueError(
                f"{value} is not a probability in (0, 0.5); typical: alpha 0.05, srm_p_value 0.001"
            )
        return value

    @field_validator("margin", "error_tolerance")
    @classmethod
    def _absolute_share(cls, value: float) -> float:
        if not 0 <= value < 1:
            raise ValueError(f"{value} must be an absolute share in [0, 1), e.g. 0.02 for 2 points, not 2")
        return value

    @field_validator("latency_quantile")
    @classmethod
    def _upper_quantile(cls, value: float) -> float:
        if not 0.5 <= value < 1:
            raise ValueError(f"latency_quantile {value} must be in [0.5, 1), e.g. 0.99 for p99, not 99")
        return value

    @field_validator("latency_ratio")
    @classmethod
    def _ratio(cls, value: float) -> float:
        if value < 1:
            raise ValueError(
                f"latency_ratio {value} must be >= 1 (1.5 allows a p99 50 % above the champion's)"
            )
        return value


# -- results --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccuracyResult:
    """Challenger - champion accuracy: the interval and what it says against the margin."""

    champion: float
    challenger: float
    difference: Interval
    p_value: float  # always-valid, of "no difference"
    comparison: Comparison


@dataclass(frozen=True)
class GuardrailResult:
    """A guardrail: the challenger's value, the limit the champion sets for it, and the state."""

    name: str
    champion: float
    challenger: float
    compared: Interval  # error rate: the difference challenger - champion; latency: the challenger's
    limit: Interval  # what ``compared`` must stay under: the tolerance; latency: allowed by the champion's
    state: GuardrailState


@dataclass(frozen=True)
class SrmResult:
    """The sample-ratio check of the split."""

    unit: Literal["users", "requests"]
    champion: int
    challenger: int
    expected_share: float
    p_value: float
    mismatch: bool


@dataclass(frozen=True)
class AbEvaluation:
    """One evaluation: the verdict, every reason for it (sentences with the numbers), the numbers."""

    verdict: Verdict
    reasons: tuple[str, ...]
    numbers: dict[str, float]
    accuracy: AccuracyResult
    error_rate: GuardrailResult
    latency: GuardrailResult
    srm: SrmResult
    halted: bool  # the split is broken: stop, and do not blame the challenger's model


# -- the parts ------------------------------------------------------------------------------------------


def compare_accuracy(champion: ArmCounts, challenger: ArmCounts, config: AbConfig) -> AccuracyResult:
    """Challenger - champion accuracy against the non-inferiority margin."""
    args = (champion.correct, champion.feedback, challenger.correct, challenger.feedback)
    difference = proportion_difference(*args, config.alpha, config.tune_feedback)
    comparison: Comparison
    if min(champion.feedback, challenger.feedback) < config.min_feedback_per_arm:
        comparison = "waiting"
    elif difference.upper < -config.margin:
        comparison = "worse"
    elif difference.lower > 0:
        comparison = "superior"
    elif difference.lower > -config.margin:
        comparison = "non_inferior"
    else:
        comparison = "undecided"
    p_value = difference_p_value(*args, config.alpha, config.tune_feedback)
    return AccuracyResult(
        _rate(champion.correct, champion.feedback),
        _rate(challenger.correct, challenger.feedback),
        difference,
        p_value,
        comparison,
    )


def _state(enough: bool, breached: bool, cleared: bool) -> GuardrailState:
    if not enough:
        return "waiting"
    return "breached" if breached else "cleared" if cleared else "undecided"


def check_error_rate(champion: ArmCounts, challenger: ArmCounts, config: AbConfig) -> GuardrailResult:
    """Breached when the challenger's error rate is, with confidence, above the champion's + tolerance."""
    difference = proportion_difference(
        champion.errors,
        champion.requests,
        challenger.errors,
        challenger.requests,
        config.alpha,
        config.tune_requests,
    )
    enough = min(champion.requests, challenger.requests) >= config.min_requests_per_arm
    tolerance = config.error_tolerance
    state = _state(enough, difference.lower > tolerance, difference.upper <= tolerance)
    limit = Interval(tolerance, tolerance, tolerance)
    return GuardrailResult(
        "error rate",
        _rate(champion.errors, champion.requests),
        _rate(challenger.errors, challenger.requests),
        difference,
        limit,
        state,
    )


def check_latency(champion: ArmCounts, challenger: ArmCounts, config: AbConfig) -> GuardrailResult:
    """Breached when the challenger's latency quantile is, with confidence, above what the champion's
    allows (``max(ratio * q, q + slack)``); each arm's interval at alpha/2, so both hold together."""
    q, alpha, tune = config.latency_quantile, config.alpha / 2, config.tune_requests / 2

    def allowed(value: float) -> float:
        return max(config.latency_ratio * value, value + config.latency_slack_ms)

    ours = quantile_interval(challenger.latencies_ms, q, alpha, tune)
    theirs = quantile_interval(champion.latencies_ms, q, alpha, tune)
    limit = Interval(allowed(theirs.estimate), allowed(theirs.lower), allowed(theirs.upper))
    enough = min(len(champion.latencies_ms), len(challenger.latencies_ms)) >= config.min_requests_per_arm
    state = _state(enough, ours.lower > limit.upper, ours.upper <= limit.lower)
    return GuardrailResult(f"p{q * 100:g} latency", theirs.estimate, ours.estimate, ours, limit, state)


def check_split(
    champion: ArmCounts, challenger: ArmCounts, expected_share: float, config: AbConfig
) -> SrmResult:
    """Chi-square goodness of fit of the per-arm counts (users when both arms know them, else requests)
    against ``expected_share`` for the challenger."""
    use_users = champion.users is not None and challenger.users is not None
    a = champion.users if champion.users is not None and use_users else champion.requests
    b = challenger.users if challenger.users is not None and use_users else challenger.requests
    total = a + b
    p_value = 1.0
    if 0 < expected_share < 1 and total * min(expected_share, 1 - expected_share) >= 5:  # chi-square's rule
        expected = [total * (1 - expected_share), total * expected_share]
        from scipy import stats as sps  # here: scipy.stats costs a flow-run process about 1 s to import

        p_value = float(sps.chisquare([a, b], f_exp=expected).pvalue)
    elif expected_share in (0.0, 1.0) and (b if expected_share == 0 else a) > 0:
        p_value = 0.0  # traffic on an arm that should have none
    unit: Literal["users", "requests"] = "users" if use_users else "requests"
    return SrmResult(unit, a, b, expected_share, p_value, p_value < config.srm_p_value)


# -- the verdict ----------------------------------------------------------------------------------------


def _accuracy_sentence(
    acc: AccuracyResult, champion: ArmCounts, challenger: ArmCounts, config: AbConfig
) -> str:
    said = {
        "worse": f"worse by more than the {config.margin:.1%} margin",
        "superior": "better",
        "non_inferior": f"not worse than the {config.margin:.1%} margin",
        "undecided": f"undecided against the {config.margin:.1%} margin",
        "waiting": f"waiting for {config.min_feedback_per_arm} feedback rows per arm",
    }[acc.comparison]
    return (
        f"accuracy: challenger {acc.challenger:.1%} ({challenger.correct:g}/{challenger.feedback}) "
        f"vs champion {acc.champion:.1%} ({champion.correct:g}/{champion.feedback}); "
        f"difference {acc.difference.lower:+.1%} to {acc.difference.upper:+.1%} "
        f"(always valid at {1 - config.alpha:.0%}): {said}"
    )


_SAID: dict[GuardrailState, str] = {
    "breached": "above the limit",
    "cleared": "within the limit",
    "undecided": "not yet shown within the limit",
    "waiting": "waiting for more requests",
}


def _error_sentence(result: GuardrailResult, config: AbConfig) -> str:
    return (
        f"error rate: challenger {result.challenger:.2%} vs champion {result.champion:.2%}; difference "
        f"{result.compared.lower * 100:+.2f} to {result.compared.upper * 100:+.2f} points, tolerance "
        f"{config.error_tolerance * 100:+.2f}: {_SAID[result.state]}"
    )


def _latency_sentence(result: GuardrailResult) -> str:
    return (
        f"{result.name}: challenger {result.challenger:.1f} ms (between {result.compared.lower:.1f} and "
        f"{result.compared.upper:.1f}) vs champion {result.champion:.1f} ms (allowing "
        f"{result.limit.lower:.1f} to {result.limit.upper:.1f}): {_SAID[result.state]}"
    )


def _numbers(
    acc: AccuracyResult,
    err: GuardrailResult,
    lat: GuardrailResult,
    srm: SrmResult,
    champion: ArmCounts,
    challenger: ArmCounts,
) -> dict[str, float]:
    return {
        "champion_requests": champion.requests,
        "challenger_requests": challenger.requests,
        "champion_feedback": champion.feedback,
        "challenger_feedback": challenger.feedback,
        "champion_accuracy": acc.champion,
        "challenger_accuracy": acc.challenger,
        "accuracy_difference": acc.difference.estimate,
        "accuracy_difference_lower": acc.difference.lower,
        "accuracy_difference_upper": acc.difference.upper,
        "accuracy_p_value": acc.p_value,
        "champion_error_rate": err.champion,
        "challenger_error_rate": err.challenger,
        "error_rate_difference_lower": err.compared.lower,
        "error_rate_difference_upper": err.compared.upper,
        "champion_latency_ms": lat.champion,
        "challenger_latency_ms": lat.challenger,
        "challenger_latency_lower_ms": lat.compared.lower,
        "challenger_latency_upper_ms": lat.compared.upper,
        "latency_limit_lower_ms": lat.limit.lower,
        "latency_limit_upper_ms": lat.limit.upper,
        "srm_p_value": srm.p_value,
        "expected_share": srm.expected_share,
        "observed_share": srm.challenger / (srm.champion + srm.challenger)
        if srm.champion + srm.challenger
        else math.nan,
    }


def evaluate(
    champion: ArmCounts,
    challenger: ArmCounts,
    config: AbConfig,
    *,
    expected_share: float,
    final_step: bool = False,
    split: tuple[ArmCounts, ArmCounts] | None = None,
) -> AbEvaluation:
    """The verdict on the challenger, with every reason and the numbers behind it.

    Args:
        champion: what the champion's arm has seen.
        challenger: what the challenger's arm has seen.
        config: the experiment's thresholds.
        expected_share: the challenger's expected share of the counted units of the split check (users,
            else requests): the weight they were assigned under.
        split: (champion, challenger) counts for the sample-ratio check, default the arms themselves.
            Users are assigned under one weight only within a step: across steps of a ramp a user is
            counted in both arms, so pass the current step's counts (once the router routes by its
            weight) with that weight as ``expected_share``.
        final_step: the next step would give the challenger all traffic: ``promote`` instead of
            ``step_up``, and only once both guardrails are shown within their limits.

    ``roll_back`` when the error rate or latency is above its limit, accuracy is worse beyond the margin
    (each once its minimum sample is there) or the split is broken (``halted``); else ``inconclusive``
    until every minimum sample is there; ``hold`` while accuracy is undecided; then ``step_up`` or
    ``promote``. Never ``promote`` or ``step_up`` on no data.
    """
    if not 0 <= expected_share <= 1:
        raise ValueError(
            f"expected_share {expected_share} must be the challenger's share in [0, 1], e.g. 0.1"
        )
    acc = compare_accuracy(champion, challenger, config)
    err, lat = check_error_rate(champion, challenger, config), check_latency(champion, challenger, config)
    srm = check_split(*(split or (champion, challenger)), expected_share, config)
    numbers = _numbers(acc, err, lat, srm, champion, challenger)
    described = (
        _accuracy_sentence(acc, champion, challenger, config),
        _error_sentence(err, config),
        _latency_sentence(lat),
    )
    failures = [
        text
        for text, bad in zip(
            described,
            (acc.comparison == "worse", err.state == "breached", lat.state == "breached"),
            strict=True,
        )
        if bad
    ]
    if srm.mismatch:
        total = srm.champion + srm.challenger
        failures.append(
            f"sample ratio mismatch: {srm.challenger} of {total} {srm.unit} on the challenger "
            f"({srm.challenger / total:.1%}) where {expected_share:.1%} was expected (chi-square p = "
            f"{srm.p_value:.2g} < {config.srm_p_value:g}): the split is broken, its numbers cannot be trusted"
        )
    verdict: Verdict
    reasons: tuple[str, ...]
    if failures:
        return AbEvaluation("roll_back", tuple(failures), numbers, acc, err, lat, srm, srm.mismatch)
    if champion.requests + challenger.requests == 0:
        verdict, reasons = "inconclusive", ("no traffic yet on either arm: nothing to judge, waiting",)
    elif "waiting" in (acc.comparison, err.state, lat.state):
        verdict, reasons = "inconclusive", ("not enough data for a verdict yet", *described)
    elif acc.comparison == "undecided" and (final_step or config.step_up_on == "non_inferior"):
        verdict, reasons = "hold", described
    elif not final_step:
        verdict, reasons = "step_up", described
    elif err.state == lat.state == "cleared":
        verdict, reasons = "promote", described
    else:
        verdict, reasons = "hold", ("promoting needs both guardrails shown within their limits", *described)
    return AbEvaluation(verdict, reasons, numbers, acc, err, lat, srm, False)
