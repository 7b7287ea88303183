"""Confidence sequences (pure): intervals that cover the truth at all times at once with probability
1 - alpha, so they may be checked after every request. The building blocks of ``loopline.rollout.stats``.

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

``rho`` only decides where an interval is narrowest; every value keeps the guarantee.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


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
    hits_a: float, n_a: int, hits_b: float, n_b: int, alpha: float, t_opt: float
) -> Interval:
    """The always-valid interval for the difference of two proportions, b - a."""
    if n_a == 0 or n_b == 0:
        return Interval(math.nan, -math.inf, math.inf)
    estimate = hits_b / n_b - hits_a / n_a
    radius = float(difference_radius(hits_a, n_a, hits_b, n_b, alpha, t_opt))
    return Interval(estimate, estimate - radius, estimate + radius)


def difference_p_value(hits_a: float, n_a: int, hits_b: float, n_b: int, alpha: float, t_opt: float) -> float:
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
