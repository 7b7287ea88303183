"""Statistics for comparing two models on the same test images (pure functions).

- ``paired_test``: McNemar's test on per-image correctness, paired by content hash. Only the discordant
  images (right for one model, wrong for the other) carry evidence; with few of them (< ``EXACT_BELOW``)
  the exact binomial form is used, else the chi-square form with continuity correction.
- ``smallest_p`` / ``discordant_needed``: with n discordant images the smallest two-sided exact p-value
  is 2 * 0.5**n, so below ``discordant_needed(alpha)`` of them no result can be significant: the test
  set is too small to tell.
- ``holm``: Holm's step-down adjustment, for the per-class tests (one look per class).
- ``wilson``: the Wilson score interval of a proportion (accuracy, a class's recall).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

EXACT_BELOW = 25  # discordant images below which McNemar's exact (binomial) form is used


@dataclass(frozen=True)
class PairedTest:
    """McNemar's test of a challenger against a champion on the same images."""

    images: int
    champion_only: int  # right for the champion, wrong for the challenger (the challenger's losses)
    challenger_only: int  # right for the challenger, wrong for the champion (its gains)
    p_value: float  # two-sided, as tested
    exact: bool
    adjusted_p: float | None = None  # after Holm's correction over a family of tests (per class)

    @property
    def discordant(self) -> int:
        return self.champion_only + self.challenger_only

    @property
    def delta(self) -> float:
        """Challenger accuracy minus champion accuracy on these images (exact fraction, then rounded)."""
        return (self.challenger_only - self.champion_only) / self.images if self.images else 0.0

    @property
    def judged_p(self) -> float:
        """The p-value a rule compares with alpha: the adjusted one when there is one."""
        return self.p_value if self.adjusted_p is None else self.adjusted_p


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def __str__(self) -> str:
        return f"[{self.low:.3f}, {self.high:.3f}]"


def paired_test(champion_correct: Mapping[str, bool], challenger_correct: Mapping[str, bool]) -> PairedTest:
    """McNemar's test on the images both mappings (content hash → correct?) hold; they must hold the same."""
    if set(champion_correct) != set(challenger_correct):
        raise ValueError(
            f"Paired test on different images: {len(set(champion_correct) ^ set(challenger_correct))} "
            "content hashes are in one evaluation only. To fix this, evaluate both models on the same images."
        )
    champion_only = sum(1 for h, ok in champion_correct.items() if ok and not challenger_correct[h])
    challenger_only = sum(1 for h, ok in champion_correct.items() if not ok and challenger_correct[h])
    discordant = champion_only + challenger_only
    if discordant == 0:
        return PairedTest(len(champion_correct), 0, 0, 1.0, exact=True)
    from statsmodels.stats.contingency_tables import mcnemar

    exact = discordant < EXACT_BELOW
    both = sum(1 for h, ok in champion_correct.items() if ok and challenger_correct[h])
    table = [[both, champion_only], [challenger_only, len(champion_correct) - both - discordant]]
    result = mcnemar(table, exact=exact, correction=True)
    return PairedTest(
        len(champion_correct), champion_only, challenger_only, min(1.0, float(result.pvalue)), exact
    )


def smallest_p(discordant: int) -> float:
    """The smallest two-sided exact McNemar p-value ``discordant`` images can give (all one way)."""
    return min(1.0, 2 * 0.5**discordant)


def discordant_needed(alpha: float) -> int:
    """How many discordant images an exact McNemar test needs before p < ``alpha`` is possible at all."""
    needed = 1
    while smallest_p(needed) >= alpha:
        needed += 1
    return needed


def holm(tests: Mapping[str, PairedTest]) -> dict[str, PairedTest]:
    """The same tests with Holm-adjusted p-values (family-wise error over all of them)."""
    if not tests:
        return {}
    from statsmodels.stats.multitest import multipletests

    keys = sorted(tests)
    adjusted = multipletests([tests[k].p_value for k in keys], method="holm")[1]
    return {
        key: replace(tests[key], adjusted_p=min(1.0, float(p))) for key, p in zip(keys, adjusted, strict=True)
    }


def wilson(successes: int, trials: int, confidence: float = 0.95) -> Interval:
    """The Wilson score interval of ``successes / trials``; [0, 1] when there are no trials."""
    if trials == 0:
        return Interval(0.0, 1.0)
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(successes, trials, alpha=1 - confidence, method="wilson")
    return Interval(max(0.0, float(low)), min(1.0, float(high)))
