"""The A/B statistics (pure): always-valid comparisons of challenger against champion, and the verdict.

Every comparison here may be checked after every request without inflating its error rate: each one is
a confidence sequence — an interval that covers the truth at all times at once with probability 1 - alpha.

- **Accuracy** (the primary metric, from feedback) and the **error rate** (guardrail): the difference
  challenger - champion of two proportions, with the two-sided normal-mixture boundary. That boundary is
  at once Robbins' normal mixture (Howard, Ramdas, McAuliffe, Sekhon 2021, eq. 14; ``confseq``'s
  ``TwoSidedNormalMixture``), the mixture SPRT of Johari, Pekelis, Walsh ("Always valid inference", 2022)
  with mixing variance 1/rho, and the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha,
  Kennedy, Ramdas ("Time-uniform central limit theory and asymptotic confidence sequences", 2024,
  Thm 2.2) — here on the difference-in-means estimator, whose per-unit variance is
  ``t * (var_a / n_a + var_b / n_b)`` with ``t = n_a + n_b`` (the efficient, Hajek form of their
  randomised-experiment CS). Variances are plug-in with one pseudo-success and one pseudo-failure per arm
  (Agresti-Caffo), so an arm with 0 % or 100 % so far never gets a zero-width interval.
- **p99 latency** (guardrail): a confidence sequence for each arm's quantile, from order statistics
  (Howard & Ramdas, "Sequential estimation of quantiles", 2022, sec. 3): at the true quantile the indicator
  ``latency <= q`` is Bernoulli(0.99) with known variance, so the same boundary bounds the empirical CDF
  there and the interval is ``[x_(ceil n(p - r)), x_(floor n(p + r) + 1)]``. No distribution assumed (the
  tail of a latency distribution is what a mean-based or bootstrap test gets wrong); each arm at alpha/2,
  so the comparison holds jointly. Both a breach (the challenger's lower bound above what the champion's
  upper bound allows) and a clearance need ~1,500 requests per arm, because an upper bound on a p99
  exists only once ``r < 0.01``; a challenger that times out shows sooner as errors (fallbacks).
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
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy import stats as sps

from loopline.rollout.events import Feedback, RoutedRequest, Variant, Verdict

Comparison = Literal["worse", "non_inferior", "superior", "undecided", "waiting"]
GuardrailState = Literal["breached", "cleared", "undecided", "waiting"]

_EMPTY = np.zeros(0)


# -- the boundary ---------------------------------------------------------------------------------------


def mixture_rho(t_opt: float, alpha: float) -> float:
    """The mixture precision that makes the two-sided normal-mixture boundary narrowest at intrinsic time
    ``t_opt`` (Howard et al. 2021, eq. 15; ``confseq`` ``TwoSidedNormalMixture::best_rho``)."""
    log_inv = math.log(1 / alpha)
    return t_opt / (2 * log_inv + math.log1p(2 * log_inv))


def mixture_boundary(v: ArrayLike, alpha: float, rho: float) -> NDArray[np.float64]:
    """The two-sided normal-mixture uniform boundary ``sqrt((v + rho)(log(1 + v/rho) + 2 log(1/alpha)))``:
    a sum with unit-variance increments crosses ``±boundary(t)`` at any time with probability <= alpha."""
    v = np.asarray(v, dtype=np.float64)
    return np.asarray(np.sqrt((v + rho) * (np.log1p(v / rho) + 2 * math.log(1 / alpha))))


def mixture_log_martingale(s: ArrayLike, v: ArrayLike, rho: float) -> NDArray[np.float64]:
    """Log of the two-sided normal-mixture martingale (the mSPRT likelihood ratio) at sum s, time v."""
    s, v = np.asarray(s, dtype=np.float64), np.asarray(v, dtype=np.float64)
    return np.asarray(0.5 * np.log(rho / (v + rho)) + s**2 / (2 * (v + rho)))


def _proportion_variance(hits: ArrayLike, n: ArrayLike) -> NDArray[np.float64]:
    """Plug-in Bernoulli variance with one pseudo-success and one pseudo-failure (never 0)."""
    smoothed = (np.asarray(hits, dtype=np.float64) + 1) / (np.asarray(n, dtype=np.float64) + 2)
    return np.asarray(smoothed * (1 - smoothed))


def difference_radius(
    hits_a: ArrayLike, n_a: ArrayLike, hits_b: ArrayLike, n_b: ArrayLike, alpha: float, t_opt: float
) -> NDArray[np.float64]:
    """Half-width of the always-valid interval for ``hits_b/n_b - hits_a/n_a`` (vectorised; inf where an
    arm has no rows). ``t_opt`` is the total of both arms' rows where the interval is narrowest."""
    ha, na = np.asarray(hits_a, dtype=np.float64), np.asarray(n_a, dtype=np.float64)
    hb, nb = np.asarray(hits_b, dtype=np.float64), np.asarray(n_b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        var_estimate = _proportion_variance(ha, na) / na + _proportion_variance(hb, nb) / nb
        t = na + nb
        radius = np.sqrt(var_estimate * t) * mixture_boundary(t, alpha, mixture_rho(t_opt, alpha)) / t
    return np.asarray(np.where((na > 0) & (nb > 0), radius, np.inf))


@dataclass(frozen=True)
class Interval:
    """An always-valid interval around an estimate."""

    estimate: float
    lower: float
    upper: float


def proportion_difference(
    hits_a: int, n_a: int, hits_b: int, n_b: int, alpha: float, t_opt: float
) -> Interval:
    """The always-valid interval for the difference of two proportions, b - a."""
    if n_a == 0 or n_b == 0:
        return Interval(math.nan, -math.inf, math.inf)
    estimate = hits_b / n_b - hits_a / n_a
    radius = float(difference_radius(hits_a, n_a, hits_b, n_b, alpha, t_opt))
    return Interval(estimate, estimate - radius, estimate + radius)


def difference_p_value(hits_a: int, n_a: int, hits_b: int, n_b: int, alpha: float, t_opt: float) -> float:
    """Always-valid p-value of "no difference" (1 / the mixture martingale; Johari et al. 2022): below
    alpha exactly when the interval of ``proportion_difference`` excludes 0. Callers that keep state
    may take its running minimum."""
    if n_a == 0 or n_b == 0:
        return 1.0
    t = n_a + n_b
    variance = float(_proportion_variance(hits_a, n_a)) / n_a + float(_proportion_variance(hits_b, n_b)) / n_b
    standardized_sum = t * (hits_b / n_b - hits_a / n_a) / math.sqrt(variance * t)
    log_m = float(mixture_log_martingale(standardized_sum, t, mixture_rho(t_opt, alpha)))
    return min(1.0, math.exp(-log_m))


def quantile_interval(latencies: ArrayLike, quantile: float, alpha: float, t_opt: float) -> Interval:
    """The always-valid interval for a quantile of the distribution ``latencies`` are drawn from (0 and
    inf where the data cannot bound it yet)."""
    ordered = np.sort(np.asarray(latencies, dtype=np.float64))
    n = len(ordered)
    if n == 0:
        return Interval(math.nan, 0.0, math.inf)
    radius = (
        math.sqrt(quantile * (1 - quantile))
        * float(mixture_boundary(n, alpha, mixture_rho(t_opt, alpha)))
        / n
    )
    low_rank = math.ceil(n * (quantile - radius))  # 1-based order statistics
    high_rank = math.floor(n * (quantile + radius)) + 1
    lower = float(ordered[low_rank - 1]) if low_rank >= 1 else 0.0
    upper = float(ordered[high_rank - 1]) if high_rank <= n else math.inf
    return Interval(float(np.quantile(ordered, quantile)), lower, upper)


# -- inputs ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmSummary:
    """What one arm has seen so far (by assignment: a request the champion answered after the challenger
    failed counts in the challenger's arm, as an error, with the latency the user saw)."""

    requests: int = 0
    errors: int = 0  # status >= 500 or fallback
    latencies_ms: NDArray[np.float64] = field(default_factory=lambda: _EMPTY)  # all, or a uniform sample
    feedback: int = 0
    correct: int = 0
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
    def correct(self) -> int: ...
    @property
    def users(self) -> int | None: ...


def _rate(hits: int, n: int) -> float:
    return hits / n if n else math.nan


def is_error(row: RoutedRequest) -> bool:
    """A request counts as an error of its arm when it failed (5xx) or the champion had to answer it."""
    return row.status >= 500 or row.fallback


def summarize(requests: Iterable[RoutedRequest], feedback: Iterable[Feedback]) -> dict[Variant, ArmSummary]:
    """Per-arm summaries from rows (feedback joins its request by id; a true label is compared with the
    predicted one; feedback for unknown requests is ignored)."""
    by_id = {row.request_id: row for row in requests}
    latencies: dict[Variant, list[float]] = {"champion": [], "challenger": []}
    errors = dict.fromkeys(latencies, 0)
    users: dict[Variant, set[str]] = {"champion": set(), "challenger": set()}
    for row in by_id.values():
        latencies[row.variant].append(row.latency_ms)
        errors[row.variant] += is_error(row)
        users[row.variant].add(row.user_hash)
    labelled, correct = dict.fromkeys(latencies, 0), dict.fromkeys(latencies, 0)
    for outcome in feedback:
        request = by_id.get(outcome.request_id)
        if request is None or (outcome.correct is None and outcome.true_label is None):
            continue
        right = (
            outcome.correct if outcome.correct is not None else outcome.true_label == request.predicted_label
        )
        labelled[request.variant] += 1
        correct[request.variant] += bool(right)
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
        f"accuracy: challenger {acc.challenger:.1%} ({challenger.correct}/{challenger.feedback}) "
        f"vs champion {acc.champion:.1%} ({champion.correct}/{champion.feedback}); "
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
) -> AbEvaluation:
    """The verdict on the challenger, with every reason and the numbers behind it.

    Args:
        champion: what the champion's arm has seen.
        challenger: what the challenger's arm has seen.
        config: the experiment's thresholds.
        expected_share: the challenger's expected share of the counted units (users, else requests) — the
            current weight when the summaries cover the current step, their time-weighted mean otherwise.
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
    srm = check_split(champion, challenger, expected_share, config)
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
